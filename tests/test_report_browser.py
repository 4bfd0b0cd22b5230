"""report.html rendered by headless Chromium: tables and images render, note markup stays text."""

import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from opclaim.cli import main as cli_main
from opclaim.io import write_cases, write_jsonl
from opclaim.synth import generate_cases

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
EVIL = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]


def chromium(args, tmp_path, timeout=120):
    """Run Chromium in its own process group and end that whole group (it forks helpers)."""
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    cases = generate_cases(12, seed=4, style="terse")
    cases[0].note = f"Pre-op note {EVIL} end.\n" + cases[0].note
    cases[0].service = "<b>Injected</b> service"
    write_cases(d / "gold.jsonl", cases)
    rows = [{"id": c.id, "config": "finetuned", "output": f"ICD-10-CM Diagnoses:\nK80.2\n{EVIL}\n"
             "CPT Codes with Modifiers:\nCPT 1: 47562 | Modifiers: 80 | Description: x", "latency_s": 0.5}
            for c in cases[:8]]
    write_jsonl(d / "p.jsonl", rows)
    assert cli_main(["eval", "--predictions", str(d / "p.jsonl"), "--gold", str(d / "gold.jsonl"),
                     "--out", str(d / "out"), "--bootstrap", "100", "--title", EVIL]) == 0
    return d / "out" / "report.html"


def test_report_is_self_contained(report):
    p = Tags()
    p.feed(report.read_text())
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    for tag, attrs in p.attrs:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:image/png;base64,", "#")), (tag, attrs[key][:40])
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)


def test_dom_renders_tables_images_and_inert_note(report, tmp_path):
    rc, dom, err = chromium(["--dump-dom", report.as_uri()], tmp_path)
    assert rc == 0, err[-2000:]
    p = Tags()
    p.feed(dom)
    assert "script" not in p.tags
    ids = {a.get("id") for _, a in p.attrs}
    assert {"table2-table", "service-table", "latency-table", "boxplot"} <= ids
    assert p.tags.count("table") >= 5 and p.tags.count("tr") > 30
    imgs = [a for t, a in p.attrs if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,")
    # the hostile note, service and title are text: escaped in the DOM, nothing executed
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom
    assert "&lt;b&gt;Injected&lt;/b&gt; service" in dom
    assert "<title>PWNED</title>" not in dom
    assert "not a billable ICD-10-CM code" in dom and "K80.20" in dom  # nearest billable suggestion


def test_screenshot_shows_content(report, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    rc, _, err = chromium([f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()], tmp_path)
    assert rc == 0 and shot.is_file(), err[-2000:]
    img = mpimg.imread(str(shot))
    assert img.shape[0] == 1600 and img.shape[1] == 1200
    gray = img[..., :3].mean(axis=2)
    assert (gray < 0.5).mean() > 0.01       # text and table borders drawn
    assert np.unique((gray * 255).astype(int)).size > 20  # anti-aliased text and the plot
