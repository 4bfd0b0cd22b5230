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


def _conf_rows(cases, config, seed):
    """Outputs that drop or add a code now and then, each code with a decoding-like confidence."""
    import json
    import random

    from opclaim.claim import PHI3_MARKERS, Claim, render_target

    rng = random.Random(seed)
    lines = []
    for c in cases:
        d = c.claim.to_dict()
        if rng.random() < 0.3:
            d["icd10"] = [*d["icd10"], "I10"]
        pred = Claim.from_dict(d)
        truth = c.claim.icd10_set() | c.claim.cpt_set() | c.claim.modifier_set()
        codes = [{"system": s, "code": x, "line": None, "p": (0.85 + 0.15 * rng.random()) if x in truth
                  else 0.2 + 0.6 * rng.random()}
                 for s, xs in (("icd10", pred.icd10_set()), ("cpt", pred.cpt_set()), ("modifiers", pred.modifier_set()))
                 for x in sorted(xs)]
        lines.append(json.dumps({"id": c.id, "config": config, "output": render_target(pred, PHI3_MARKERS),
                                 "latency_s": 0.3, "confidence": {"method": "token_prob", "masked": True,
                                                                  "codes": codes}}))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory):
    """Eleven set/configuration pairs (the layout that used to scroll sideways), routed."""
    d = tmp_path_factory.mktemp("wide")
    sets = {"val": generate_cases(120, seed=7, id_prefix="v"), "same": generate_cases(16, seed=8, id_prefix="s"),
            "cross": generate_cases(12, seed=9, style="terse", id_prefix="x"),
            "golden": generate_cases(8, seed=10, id_prefix="g")}
    for name, cases in sets.items():
        write_cases(d / f"{name}.jsonl", cases)
    (d / "val_p.jsonl").write_text(_conf_rows(sets["val"], "m", 0))
    assert cli_main(["calibrate", "--predictions", str(d / "val_p.jsonl"), "--gold", str(d / "val.jsonl"),
                     "--out", str(d / "cal.json")]) == 0
    argv = ["eval", "--out", str(d / "out"), "--bootstrap", "100", "--calibration", str(d / "cal.json"),
            "--train", str(d / "val.jsonl")]
    configs = ["base-zero-shot", "retrieval-prompted-k8", "finetuned-qlora-r16", "knn-baseline"]
    pairs = [(g, c) for g in ("same", "cross", "golden") for c in configs][:11]
    for g in ("same", "cross", "golden"):
        argv += ["--gold", f"{g}={d / f'{g}.jsonl'}"]
    for i, (g, c) in enumerate(pairs):
        f = d / f"{g}_{c}.jsonl"
        f.write_text(_conf_rows(sets[g], c, i))
        argv += ["--predictions", f"{g}/{c}={f}"]
    assert cli_main(argv) == 0
    return d / "out" / "report.html"


def test_report_fits_1280_px_without_horizontal_scroll(wide_report, tmp_path):
    import base64

    from tests.serve_helpers import Browser

    b = Browser(tmp_path / "profile")
    try:
        b.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=1000, deviceScaleFactor=1,
               mobile=False)
        b.goto(wide_report.as_uri())
        width = b.eval("[window.innerWidth, document.documentElement.scrollWidth, "
                       "document.documentElement.clientWidth]")
        assert width[0] == 1280 and width[1] <= width[2], width  # clientWidth excludes the scroll bar
        # the coder section highlights evidence, the note's own markup stays text
        assert b.eval("document.querySelectorAll('.note mark').length") > 10
        assert b.eval("document.querySelectorAll('.note mark *, .note script').length") == 0
        assert b.eval("document.querySelectorAll('.routing-table').length") == 3
        assert b.eval("document.querySelectorAll('img.curve').length") == 3
        assert b.eval("document.querySelectorAll('.case .review').length") > 0  # some codes go to a coder
        shot = b.call("Page.captureScreenshot", session=True, format="png")
        png = tmp_path / "wide.png"
        png.write_bytes(base64.b64decode(shot["data"]))
        import matplotlib.image as mpimg

        assert mpimg.imread(str(png)).shape[1] == 1280
    finally:
        b.close()
