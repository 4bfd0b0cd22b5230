"""`opclaim serve` end to end: the real server (uvicorn in a subprocess) from a signed bundle of the
tiny Phi-3, a real SQLite file, real HTTP."""

import json
import re
import sqlite3

import httpx
import pytest

from opclaim import bundle
from tests.serve_helpers import CANARY, Server, add_user, free_port, run_serve, seed_case

pytestmark = pytest.mark.slow  # a real server in a subprocess per module: outside the make test-fast tier

CLAIM = {"icd10": ["K80.20", "K81.0"], "providers": [
    {"name": "Dr. A. Surgeon", "lines": [{"cpt": "47562", "modifiers": ["80"]}]}]}
EVIL = f"<script>document.title='PWNED'</script><img src=x onerror=alert(1)> {CANARY}"


@pytest.fixture(scope="module")
def signed(tiny_phi3_dir, keys, tmp_path_factory):
    return bundle.create(tiny_phi3_dir, keys[0], tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture(scope="module")
def srv(signed, keys, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    db = d / "serve.db"
    tokens = {"admin": add_user(db, "ada", "admin"), "coder": add_user(db, "carl", "coder"),
              "coder2": add_user(db, "cora", "coder")}
    s = Server(["--bundle", signed, "--key", keys[1], "--db", db, "--store-notes", "--max-new-tokens", "12",
                "--threads", "1", "--login-failures", "5", "--login-window-s", "3"], d / "server.log").start()
    s.db, s.tokens, s.dir = db, tokens, d
    yield s
    s.stop()


def H(srv, who="coder"):
    return {"Authorization": f"Bearer {srv.tokens[who]}"}


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_db_file_is_owner_only_and_versioned(srv):
    assert srv.db.stat().st_mode & 0o777 == 0o600
    con = sqlite3.connect(srv.db)
    from opclaim.serve.db import SCHEMA_VERSION

    assert con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA foreign_keys").fetchone()[0] in (0, 1)  # per connection; the server sets it
    # tokens are stored hashed only
    hashes = [r[0] for r in con.execute("SELECT token_sha256 FROM users")]
    assert len(hashes) == 3 and all(len(h) == 64 for h in hashes)
    assert not any(t in h for t in srv.tokens.values() for h in hashes)
    con.close()


def test_401_without_token_everywhere_but_healthz(srv):
    h = httpx.get(srv.url + "/healthz")
    assert h.status_code == 200 and h.json()["bundle_digest"] and len(h.json()["bundle_digest"]) == 64
    for method, path in [("GET", "/openapi.json"), ("GET", "/metrics"), ("POST", "/v1/suggest"),
                         ("POST", "/v1/cases"), ("GET", "/v1/cases"), ("POST", "/v1/cases/next"),
                         ("GET", "/v1/cases/1"), ("POST", "/v1/cases/1/decision"), ("GET", "/v1/export")]:
        r = httpx.request(method, srv.url + path, json={"note": CANARY})
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["error"] == "authentication required" and CANARY not in r.text


def test_out_of_range_case_id_is_a_422_not_an_internal_error(srv):
    r = httpx.get(srv.url + "/v1/cases/99999999999999999999", headers=H(srv))
    assert r.status_code == 422 and r.json()["field"] == "path.case_id"
    assert httpx.get(srv.url + "/v1/cases/424242", headers=H(srv)).status_code == 404


def test_403_for_a_coder_on_admin_endpoints(srv):
    assert httpx.get(srv.url + "/v1/export", headers=H(srv)).status_code == 403
    assert httpx.post(srv.url + "/v1/cases", headers=H(srv), content=b"{}").status_code == 403
    assert httpx.get(srv.url + "/v1/export", headers=H(srv, "admin")).status_code == 200


def test_openapi_lists_the_versioned_api(srv):
    spec = httpx.get(srv.url + "/openapi.json", headers=H(srv)).json()
    assert {"/v1/suggest", "/v1/cases", "/v1/cases/next", "/v1/cases/{case_id}/decision", "/healthz",
            "/metrics"} <= set(spec["paths"])


def test_suggest_returns_claim_codes_model_and_digest(srv):
    r = httpx.post(srv.url + "/v1/suggest", headers=H(srv), timeout=120,
                   json={"note": f"Laparoscopic cholecystectomy. {CANARY}", "service": "general",
                         "patient": {"age": 54, "sex": "F"}})
    assert r.status_code == 200, r.text
    j = r.json()
    assert set(j["claim"]) == {"icd10", "providers"}
    assert j["model"].startswith("model:") and j["bundle_digest"] == httpx.get(srv.url + "/healthz").json()["bundle_digest"]
    assert j["latency_s"] > 0 and j["batch_size"] >= 1
    for row in j["codes"]:  # the random model may write none; the fields are there when it does
        assert {"confidence", "route", "evidence"} <= set(row)
    bad = httpx.post(srv.url + "/v1/suggest", headers=H(srv), json={"note": 5, "x": CANARY})
    assert bad.status_code == 422 and bad.json()["field"] == "note" and CANARY not in bad.text


def test_concurrent_suggestions_share_a_batch(srv):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return httpx.post(srv.url + "/v1/suggest", headers=H(srv), timeout=180,
                          json={"note": f"Note {i}: hernia repair. {CANARY}"}).json()

    with ThreadPoolExecutor(4) as ex:
        out = list(ex.map(one, range(4)))
    assert max(o["batch_size"] for o in out) > 1, [o["batch_size"] for o in out]


def test_disabled_user_is_refused(srv):
    tok = add_user(srv.db, "temp", "coder")
    assert httpx.get(srv.url + "/v1/cases", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    r = run_serve("user", "disable", "temp", "--db", srv.db)
    assert r.returncode == 0, r.stderr
    assert httpx.get(srv.url + "/v1/cases", headers={"Authorization": f"Bearer {tok}"}).status_code == 401
    assert run_serve("user", "add", "temp", "--role", "coder", "--db", srv.db).returncode == 2  # name taken


def test_a_newer_schema_is_refused(tmp_path):
    from opclaim.errors import InputError
    from opclaim.serve.db import SCHEMA_VERSION, Store

    Store(tmp_path / "s.db").close()
    con = sqlite3.connect(tmp_path / "s.db")
    con.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(InputError, match="newer than this opclaim"):
        Store(tmp_path / "s.db")
    with pytest.raises(InputError, match="database URL"):  # postgresql://: tests/test_serve_postgres.py
        Store("mysql://db.internal/opclaim")


def test_enqueue_validates_like_data_validate(srv):
    lines = [json.dumps({"id": "q-1", "note": f"Queued note {CANARY}", "service": "general"}),
             json.dumps({"id": "q-2", "note": "Second", "claim": CLAIM}),
             json.dumps({"id": "q-3", "note": "Bad code", "claim": {"icd10": ["NOTACODE"]}}),
             json.dumps({"id": "", "note": "no id"}),
             "{not json " + CANARY,
             json.dumps({"id": "q-1", "note": "duplicate"})]
    r = httpx.post(srv.url + "/v1/cases", headers=H(srv, "admin"), content="\n".join(lines).encode(), timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    assert [a["external_id"] for a in j["accepted"]] == ["q-1", "q-2"]
    where = {(x["line"], x["field"]) for x in j["rejected"]}
    assert {(3, "claim.icd10[0]"), (4, "id"), (5, None), (6, "id")} <= where
    assert CANARY not in r.text
    again = httpx.post(srv.url + "/v1/cases", headers=H(srv, "admin"), content=lines[1].encode()).json()
    assert again["duplicates"] == [{"external_id": "q-2"}] and not again["accepted"]


def test_next_case_leases_and_suggests(srv):
    # a POST now: GET reads "next" as a case id (422), leasing nothing
    assert httpx.get(srv.url + "/v1/cases/next", headers=H(srv, "coder2")).status_code == 422
    r = httpx.post(srv.url + "/v1/cases/next", headers=H(srv, "coder2"), timeout=180)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["suggestion"] is not None and j["suggestion"]["model"].startswith("model:")
    assert j["note"] is not None and j["decisions"] == []


def test_decision_round_trip_and_amendment_chain(srv):
    cid = seed_case(srv.db, "rt-1", f"Gallbladder removed. {CANARY}", CLAIM)
    url = f"{srv.url}/v1/cases/{cid}/decision"
    case = httpx.get(f"{srv.url}/v1/cases/{cid}", headers=H(srv)).json()
    assert {(c["system"], c["code"]) for c in case["suggestion"]["codes"]} == {
        ("icd10", "K80.20"), ("icd10", "K81.0"), ("cpt", "47562")}
    assert next(c for c in case["suggestion"]["codes"] if c["code"] == "K80.20")["description"]
    items = [{"system": "icd10", "code": "K80.20", "action": "accept"},
             {"system": "icd10", "code": "K81.0", "action": "reject"},
             {"system": "cpt", "code": "47562", "action": "edit", "to": "47563", "modifiers": []},
             {"system": "icd10", "code": "E66.9", "action": "add"}]
    # invalid codes are refused with the field named
    bad = httpx.post(url, headers=H(srv), json={"items": items[:3] + [{"system": "icd10", "code": "K80.2",
                                                                        "action": "add"}]})
    assert bad.status_code == 422 and bad.json()["field"] == "items[3].code" and "billable" in bad.json()["error"]
    missing = httpx.post(url, headers=H(srv), json={"items": items[:1]})
    assert missing.status_code == 422 and missing.json()["field"] == "items"
    first = httpx.post(url, headers={**H(srv), "Idempotency-Key": "k-rt-1"}, json={"items": items})
    assert first.status_code == 201, first.text
    d1 = first.json()
    assert d1["final_claim"]["icd10"] == ["K80.20", "E66.9"]
    assert d1["final_claim"]["providers"] == [{"name": "Dr. A. Surgeon", "role": "surgeon",
                                               "lines": [{"cpt": "47563", "modifiers": [], "description": ""}]}]
    assert d1["user"] == "carl" and d1["amends_id"] is None and d1["model"] == "seeded"
    # a retried POST with the same key is the same decision, not a second one
    retry = httpx.post(url, headers={**H(srv), "Idempotency-Key": "k-rt-1"}, json={"items": items})
    assert retry.status_code == 200 and retry.json()["id"] == d1["id"]
    # deciding again without naming what is amended is a conflict
    assert httpx.post(url, headers=H(srv), json={"items": items}).status_code == 409
    amend = [dict(i) for i in items]
    amend[1]["action"] = "accept"
    d2 = httpx.post(url, headers=H(srv, "coder2"), json={"items": amend, "amends": d1["id"]})
    assert d2.status_code == 201, d2.text
    d2 = d2.json()
    assert d2["amends_id"] == d1["id"] and d2["user"] == "cora" and "K81.0" in d2["final_claim"]["icd10"]
    stale = httpx.post(url, headers=H(srv), json={"items": items, "amends": d1["id"]})
    assert stale.status_code == 409
    chain = httpx.get(f"{srv.url}/v1/cases/{cid}/decisions", headers=H(srv)).json()
    assert [d["id"] for d in chain] == [d1["id"], d2["id"]] and chain[1]["amends_id"] == chain[0]["id"]
    # the audit trail is append-only in the database itself
    con = sqlite3.connect(srv.db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE decisions SET final_claim = '{}' WHERE id = ?", (d1["id"],))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM decisions")
    con.rollback()
    assert con.execute("SELECT COUNT(*) FROM decisions WHERE client_key = 'k-rt-1'").fetchone()[0] == 1
    con.close()


def test_export_passes_data_validate(srv, tmp_path, capsys):
    from opclaim.cli import main

    seed_case(srv.db, "ex-1", f"Appendix out. {CANARY}", {"icd10": ["K35.80"], "providers": [
        {"name": "Dr. B", "lines": [{"cpt": "44970", "modifiers": []}]}]})
    cid = seed_case(srv.db, "ex-2", "Second export note.", CLAIM)
    r = httpx.post(f"{srv.url}/v1/cases/{cid}/decision", headers=H(srv), json={"items": [
        {"system": "icd10", "code": "K80.20", "action": "accept"}, {"system": "icd10", "code": "K81.0", "action": "accept"},
        {"system": "cpt", "code": "47562", "action": "accept"}]})
    assert r.status_code == 201
    out = tmp_path / "cases.jsonl"
    res = run_serve("export", "--db", srv.db, "--out", out)
    assert res.returncode == 0, res.stderr
    assert "icd10: accepted" in res.stdout and CANARY not in res.stdout + res.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {"rt-1", "ex-2"} <= {r["id"] for r in rows} and "ex-1" not in {r["id"] for r in rows}  # undecided
    ex2 = next(r for r in rows if r["id"] == "ex-2")
    assert ex2["provenance"]["user"] == "carl" and ex2["provenance"]["decision_id"] == r.json()["id"]
    rt1 = next(r for r in rows if r["id"] == "rt-1")
    assert len(rt1["provenance"]["decisions"]) == 2  # the amended claim is the one exported
    report = json.loads((tmp_path / "cases.jsonl.agreement.json").read_text())
    assert report["agreement"]["icd10"]["accepted"] >= 3 and report["agreement"]["cpt"]["added"] >= 1
    assert main(["data", "validate", str(out), "--rejects", str(tmp_path / "rej.jsonl")]) == 0
    assert "rejected: 0" in capsys.readouterr().out
    api = httpx.get(srv.url + "/v1/export", headers=H(srv, "admin")).json()
    assert {c["id"] for c in api["cases"]} == {r["id"] for r in rows}


def _login(srv, who="coder"):
    c = httpx.Client(base_url=srv.url)
    r = c.post("/login", data={"token": srv.tokens[who]}, headers={"Origin": srv.url})
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    return c


def test_script_note_renders_inert_under_a_strict_csp(srv):
    cid = seed_case(srv.db, "xss-1", f"Pre-op {EVIL} end.", CLAIM, service="<b>svc</b>")
    c = _login(srv)
    r = c.get(f"/cases/{cid}")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "http" not in csp
    html = r.text
    assert "&lt;script&gt;document.title=&#x27;PWNED&#x27;&lt;/script&gt;" in html
    assert "&lt;b&gt;svc&lt;/b&gt;" in html and "<b>svc</b>" not in html
    # every script/style carries this response's nonce; nothing loads from elsewhere
    tags = re.findall(r"<(script|style)\b([^>]*)>", html)
    assert tags and all(f'nonce="{nonce}"' in attrs for _, attrs in tags)
    assert not re.search(r"\b(src|href)=\"(https?:)?//", html)


def test_csrf_needed_for_cookie_authenticated_changes(srv):
    cid = seed_case(srv.db, "csrf-1", "CSRF note.", CLAIM)
    c = _login(srv)
    page = c.get(f"/cases/{cid}").text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    body = {"items": [{"system": "icd10", "code": "K80.20", "action": "accept"},
                      {"system": "icd10", "code": "K81.0", "action": "accept"},
                      {"system": "cpt", "code": "47562", "action": "reject"}]}
    assert c.post(f"/v1/cases/{cid}/decision", json=body).status_code == 403
    assert c.post(f"/v1/cases/{cid}/decision", json=body, headers={"X-CSRF-Token": "x" + csrf}).status_code == 403
    ok = c.post(f"/v1/cases/{cid}/decision", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201 and ok.json()["user"] == "carl"
    # a cross-site sign-in is refused
    assert httpx.post(srv.url + "/login", data={"token": srv.tokens["coder"]},
                      headers={"Origin": "http://evil.example"}).status_code == 403
    assert httpx.post(srv.url + "/login", data={"token": srv.tokens["coder"]},
                      headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_metrics_count_without_note_text(srv):
    m = httpx.get(srv.url + "/metrics", headers=H(srv)).text
    assert 'opclaim_requests_total{method="POST",route="/v1/suggest",status="200"}' in m
    assert "opclaim_request_seconds_bucket" in m and "opclaim_queue_depth" in m
    assert re.search(r'opclaim_acceptance_ratio\{system="icd10"\} [0-9.]+', m)
    assert "opclaim_decode_batch_size_count" in m
    assert CANARY not in m and "PWNED" not in m


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_failed_logins_are_rate_limited(srv):
    import time

    time.sleep(3.2)  # earlier tests' failures age out of the 3-second window
    codes = [httpx.get(srv.url + "/v1/cases", headers={"Authorization": "Bearer ocl_wrong"}).status_code
             for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    # a valid token from the same address is never refused for someone else's failures (issue 28)
    assert httpx.get(srv.url + "/v1/cases", headers=H(srv)).status_code == 200
    assert httpx.get(srv.url + "/v1/cases", headers={"Authorization": "Bearer ocl_other"}).status_code == 429
    time.sleep(3.2)
    assert httpx.get(srv.url + "/v1/cases", headers={"Authorization": "Bearer ocl_other"}).status_code == 401


def test_zz_no_note_text_in_the_server_log(srv):
    log = srv.log.read_text()
    assert " POST /v1/suggest 200 " in log and "request" not in log.split("serving")[0]
    assert CANARY not in log and "PWNED" not in log and "Laparoscopic" not in log
    for t in srv.tokens.values():
        assert t not in log


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_tampered_bundle_is_refused_at_start_up(signed, keys, tmp_path):
    import shutil

    bad = tmp_path / "bundle"
    shutil.copytree(signed, bad)
    w = bad / "model" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    r = run_serve("--bundle", bad, "--key", keys[1], "--db", tmp_path / "t.db", "--port", free_port())
    assert r.returncode == 2, r.stderr
    assert "refused: changed file model/model.safetensors" in r.stderr
    assert "serving" not in r.stderr
    r = run_serve("--bundle", signed, "--db", tmp_path / "t.db")
    assert r.returncode == 2 and "--key" in r.stderr


def test_non_loopback_host_warns(tmp_path):
    from opclaim.commands.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
