"""The coder page in headless Chromium (driven over the DevTools pipe): sign in, open a case whose
note carries markup, accept every code with the keyboard, submit; the decision is in SQLite."""

import os
import sqlite3

import pytest

from tests.serve_helpers import CANARY, CHROMIUM, Browser, Server, add_user, seed_case

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]

CLAIM = {"icd10": ["K80.20", "K81.0"], "providers": [
    {"name": "Dr. A. Surgeon", "lines": [{"cpt": "47562", "modifiers": ["80"]}]}]}
EVIL = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"


@pytest.fixture(scope="module")
def srv(tiny_phi3_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-browser")
    db = d / "serve.db"
    token = add_user(db, "carl", "coder")
    s = Server(["--model", tiny_phi3_dir, "--db", db, "--store-notes", "--max-new-tokens", "8", "--threads", "1"],
               d / "server.log").start()
    s.db, s.token = db, token
    yield s
    s.stop()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def test_sign_in_accept_with_keyboard_and_submit(srv, browser):
    cid = seed_case(srv.db, "br-1", f"Pre-op note {EVIL} {CANARY}\nLaparoscopic cholecystectomy.", CLAIM)
    b = browser
    b.goto(srv.url + "/login")
    b.eval(f"document.getElementById('token').value = {srv.token!r}; document.getElementById('login').click(); 1")
    b.wait_for("location.pathname === '/' && !!document.getElementById('queue')")
    assert b.eval("document.cookie") == ""  # the session cookie is HttpOnly
    assert "br-1" in b.eval("document.getElementById('queue').textContent")

    b.goto(f"{srv.url}/cases/{cid}")
    b.wait_for("document.querySelectorAll('#codes tr').length === 3")
    # the hostile note is text: nothing ran, no element came from it
    assert b.eval("document.title") != "PWNED"
    assert "<script>document.title='PWNED'</script>" in b.eval("document.getElementById('note').textContent")
    assert b.eval("document.querySelectorAll('#note *').length") == 0
    assert b.eval("document.scripts.length") == 2  # the page's own: its data block and its script
    assert "Calculus of gallbladder" in b.eval("document.getElementById('codes').textContent")

    for _ in range(3):
        b.key("a")  # accept, move to the next row
    assert b.eval("Array.from(document.querySelectorAll('#codes tr')).map(r => r.dataset.action).join()") == \
        "accept,accept,accept"
    b.key("s")
    b.wait_for("!!document.body.dataset.saved")
    assert b.eval("document.getElementById('msg').textContent").startswith("saved decision")

    con = sqlite3.connect(srv.db)
    rows = con.execute("SELECT d.final_claim, u.name, d.amends_id FROM decisions d JOIN users u ON u.id = d.user_id "
                       "WHERE d.case_id = ?", (cid,)).fetchall()
    con.close()
    assert len(rows) == 1
    import json

    final, user, amends = json.loads(rows[0][0]), rows[0][1], rows[0][2]
    assert user == "carl" and amends is None
    assert final["icd10"] == ["K80.20", "K81.0"]
    assert final["providers"][0]["lines"][0]["cpt"] == "47562" and final["providers"][0]["lines"][0]["modifiers"] == ["80"]
    assert CANARY not in srv.log.read_text()
