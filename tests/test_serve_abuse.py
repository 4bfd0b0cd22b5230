"""`opclaim serve` under abuse (issue 28, problems 1-9): the real server on loopback with the tiny
Phi-3 and a real SQLite file; raw sockets where a client library would tidy the request up."""

import json
import random
import socket
import sqlite3
import time

import httpx
import pytest

from tests.serve_helpers import CANARY, Server, add_user, seed_case

CLAIM = {"icd10": ["K80.20", "K81.0"], "providers": [
    {"name": "Dr. A. Surgeon", "lines": [{"cpt": "47562", "modifiers": ["80"]}]}]}
ITEMS = [{"system": "icd10", "code": "K80.20", "action": "accept"},
         {"system": "icd10", "code": "K81.0", "action": "accept"},
         {"system": "cpt", "code": "47562", "action": "accept"}]


@pytest.fixture(scope="module")
def srv(tiny_phi3_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("abuse")
    db = d / "serve.db"
    tokens = {"admin": add_user(db, "ada", "admin"), "coder": add_user(db, "carl", "coder"),
              "coder2": add_user(db, "cora", "coder")}
    s = Server(["--model", tiny_phi3_dir, "--db", db, "--store-notes", "--max-new-tokens", "4", "--threads", "1",
                "--login-failures", "3", "--login-window-s", "60", "--trusted-proxy-header", "X-Forwarded-For"],
               d / "server.log").start()
    s.db, s.tokens = db, tokens
    yield s
    s.stop()


def H(srv, who="coder"):
    return {"Authorization": f"Bearer {srv.tokens[who]}"}


def raw(srv, data: bytes, read_timeout=10) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=read_timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return out


def rss_kb(srv) -> int:
    for line in open(f"/proc/{srv.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# 1 ---------------------------------------------------------------- per-line rejects
def test_1_bad_lines_are_rejects_and_the_good_records_are_stored(srv):
    lines = [json.dumps({"id": "b1-good", "note": "Good note.", "claim": CLAIM}).encode(),
             b'{"id": "b1-sur", "note": "x\\udc00 ' + CANARY.encode() + b'"}',
             b"[" * 10000 + b"]" * 10000,
             json.dumps({"id": "b1-good2", "note": "Second good note."}).encode()]
    r = httpx.post(srv.url + "/v1/cases", headers=H(srv, "admin"), content=b"\n".join(lines), timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    assert [a["external_id"] for a in j["accepted"]] == ["b1-good", "b1-good2"]
    assert sorted(x["line"] for x in j["rejected"]) == [2, 3] and CANARY not in r.text


# 2 ---------------------------------------------------------------- closed label sets
def test_2_methods_never_become_labels_or_log_fields(srv):
    before = len(httpx.get(srv.url + "/metrics", headers=H(srv)).content)
    rng = random.Random(2)
    for i in range(40):
        m = (CANARY + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 400))))
        raw(srv, f"{m} /v1/x{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), read_timeout=3)
    m = httpx.get(srv.url + "/metrics", headers=H(srv)).text
    assert CANARY not in m and CANARY not in srv.log.read_text()
    assert len(m.encode()) < before + 3000  # one new `other`/unmatched series at most, not 40 methods


# 3 ---------------------------------------------------------------- body limits before reading
def test_3_oversized_bodies_are_refused_unread(srv):
    # by Content-Length, before a byte of the body is sent
    head = (b"POST /v1/suggest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n")
    assert b" 413 " in raw(srv, head).split(b"\r\n")[0]
    # unauthenticated: 401 without reading the body (memory stays flat under 30 MB sent)
    start = rss_kb(srv)
    for _ in range(3):
        r = httpx.post(srv.url + "/v1/suggest", content=b'{"note": "' + b"a" * 10_000_000 + b'"}',
                       headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code in (401, 413)
    # authenticated, streamed without a length: cut at the limit with 413
    def chunks():
        for _ in range(40):
            yield b"a" * 100_000
    r = httpx.post(srv.url + "/v1/suggest", content=chunks(), headers={**H(srv), "Content-Type": "application/json"},
                   timeout=60)
    assert r.status_code == 413 and r.json()["error"] == "request body too large"
    assert rss_kb(srv) - start < 60_000, (start, rss_kb(srv))


# 4 ---------------------------------------------------------------- a rejected duplicate changes nothing
def test_4_duplicate_id_keeps_the_first_reference_claim(srv):
    body = "\n".join([json.dumps({"id": "p1", "note": "First.", "claim": CLAIM}), json.dumps({"id": "p1", "note": "dup"})])
    j = httpx.post(srv.url + "/v1/cases", headers=H(srv, "admin"), content=body.encode(), timeout=60).json()
    assert [a["external_id"] for a in j["accepted"]] == ["p1"] and [(x["line"], x["field"]) for x in j["rejected"]] == [(2, "id")]
    con = sqlite3.connect(srv.db)
    ref = con.execute("SELECT reference_claim FROM cases WHERE external_id = 'p1'").fetchone()[0]
    con.close()
    assert json.loads(ref)["icd10"] == ["K80.20", "K81.0"]


# 5 ---------------------------------------------------------------- append-only, every statement form
FORMS = [
    "INSERT OR REPLACE INTO decisions (id, case_id, user_id, items, final_claim, created_at) "
    "VALUES ({id}, {case}, 1, '[]', '{{}}', 'x')",
    "REPLACE INTO decisions (id, case_id, user_id, items, final_claim, created_at) VALUES ({id}, {case}, 1, '[]', '{{}}', 'x')",
    "INSERT OR REPLACE INTO decisions (case_id, user_id, items, final_claim, client_key, created_at) "
    "VALUES ({case}, 1, '[]', '{{}}', 'k5', 'x')",
    "INSERT OR REPLACE INTO decisions (case_id, user_id, items, final_claim, amends_id, created_at) "
    "VALUES ({case}, 1, '[]', '{{}}', NULL, 'x')",  # no conflict: an append, allowed
    "INSERT INTO decisions (id, case_id, user_id, items, final_claim, created_at) VALUES ({id}, {case}, 1, '[]', '{{}}', 'x') "
    "ON CONFLICT(id) DO UPDATE SET final_claim = '{{}}'",
    "INSERT INTO decisions (id, case_id, user_id, items, final_claim, created_at) VALUES ({id}, {case}, 1, '[]', '{{}}', 'x') "
    "ON CONFLICT DO NOTHING",
    "UPDATE decisions SET final_claim = '{{}}' WHERE id = {id}",
    "UPDATE OR REPLACE decisions SET id = {id} + 1000 WHERE id = {id}",
    "DELETE FROM decisions WHERE id = {id}",
    "DELETE FROM decisions",
]


@pytest.mark.parametrize("form", FORMS)
def test_5_no_statement_form_rewrites_a_decision(srv, form):
    cid = seed_case(srv.db, f"ao-{FORMS.index(form)}", "Append-only note.", CLAIM)
    d = httpx.post(f"{srv.url}/v1/cases/{cid}/decision", headers={**H(srv), "Idempotency-Key": f"k5-{cid}"},
                   json={"items": ITEMS}).json()
    con = sqlite3.connect(srv.db)
    before = con.execute("SELECT * FROM decisions ORDER BY id").fetchall()
    sql = form.format(id=d["id"], case=cid).replace("'k5'", f"'k5-{cid}'")
    try:
        con.execute(sql)
        con.commit()
    except sqlite3.DatabaseError as e:
        assert "append-only" in str(e)
        con.rollback()
    after = con.execute("SELECT * FROM decisions ORDER BY id").fetchall()
    assert after[:len(before)] == before  # a new row may be appended; no stored row changed or went
    con.close()


# 6 ---------------------------------------------------------------- idempotency
def test_6_replay_with_another_body_is_refused_and_replays_name_the_user(srv):
    cid = seed_case(srv.db, "idem-1", "Idempotent note.", CLAIM)
    url = f"{srv.url}/v1/cases/{cid}/decision"
    h = {**H(srv), "Idempotency-Key": "idem-k1"}
    first = httpx.post(url, headers=h, json={"items": ITEMS})
    assert first.status_code == 201
    again = httpx.post(url, headers=h, json={"items": ITEMS})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"] and again.json()["user"] == "carl"
    other = [dict(i) for i in ITEMS]
    other[1]["action"] = "reject"
    diff = httpx.post(url, headers=h, json={"items": other})
    assert diff.status_code == 422 and diff.json()["field"] == "Idempotency-Key"
    junk = httpx.post(url, headers=h, json={"items": [{"system": "icd10", "code": "ZZZ", "action": "accept"}]})
    assert junk.status_code == 422
    long = httpx.post(url, headers={**H(srv), "Idempotency-Key": "k" * 60000}, json={"items": ITEMS})
    assert long.status_code == 422 and long.json()["field"] == "Idempotency-Key"
    con = sqlite3.connect(srv.db)
    assert con.execute("SELECT MAX(LENGTH(client_key)) FROM decisions").fetchone()[0] <= 100
    con.close()


# 7 ---------------------------------------------------------------- lock-out
def test_7_failures_never_lock_out_a_valid_token(srv):
    proxy = {"X-Forwarded-For": "203.0.113.7"}
    codes = [httpx.get(srv.url + "/v1/cases", headers={**proxy, "Authorization": f"Bearer ocl_bad{i}"}).status_code
             for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]  # the address (from the trusted proxy's header) is limited
    assert httpx.get(srv.url + "/v1/cases", headers={**proxy, **H(srv)}).status_code == 200
    # another client behind the same proxy is its own address; the same bad token is limited on its own
    assert httpx.get(srv.url + "/v1/cases", headers={"X-Forwarded-For": "203.0.113.8",
                                                     "Authorization": "Bearer ocl_bad9"}).status_code == 401
    same = [httpx.get(srv.url + "/v1/cases", headers={"X-Forwarded-For": f"198.51.100.{i}",
                                                      "Authorization": "Bearer ocl_revoked"}).status_code
            for i in range(5)]
    assert same == [401, 401, 401, 429, 429]


# 8 ---------------------------------------------------------------- sign-in origin
@pytest.mark.parametrize("origin", ["null", "https://127.0.0.1:{port}", "http://127.0.0.1:1", "http://127.0.0.1",
                                    "http://evil.example:{port}", "http://127.0.0.1:{port}.evil.example"])
def test_8_sign_in_origin_must_match_exactly(srv, origin):
    r = httpx.post(srv.url + "/login", data={"token": srv.tokens["coder2"]},
                   headers={"Origin": origin.format(port=srv.port), "X-Forwarded-For": "192.0.2.80"})
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_8_same_origin_sign_in_works(srv):
    r = httpx.post(srv.url + "/login", data={"token": srv.tokens["coder2"]}, headers={"Origin": srv.url})
    assert r.status_code == 303 and "set-cookie" in r.headers


# 9 ---------------------------------------------------------------- leases, POST next, final_claim
def test_9_lease_is_enforced_and_next_is_a_post_with_csrf(srv):
    con = sqlite3.connect(srv.db)
    con.execute("UPDATE cases SET status = 'decided' WHERE status <> 'decided'")  # an empty queue but ours
    con.commit()
    con.close()
    cid = seed_case(srv.db, "lease-1", "Leased note.", CLAIM)
    got = httpx.post(srv.url + "/v1/cases/next", headers=H(srv, "coder2"), timeout=120)
    assert got.status_code == 200 and got.json()["id"] == cid
    r = httpx.post(f"{srv.url}/v1/cases/{cid}/decision", headers=H(srv), json={"items": ITEMS})
    assert r.status_code == 409 and r.json()["field"] == "case"
    assert httpx.post(f"{srv.url}/v1/cases/{cid}/decision", headers=H(srv, "coder2"),
                      json={"items": ITEMS}).status_code == 201
    # the page: POST /next needs the session's CSRF token
    c = httpx.Client(base_url=srv.url)
    assert c.post("/login", data={"token": srv.tokens["coder"]}, headers={"Origin": srv.url}).status_code == 303
    import re

    csrf = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/").text).group(1)
    assert 'action="/next"' in c.get("/").text
    assert c.post("/next", data={"csrf": "wrong"}).status_code == 403
    assert c.post("/v1/cases/next").status_code == 403
    assert c.post("/next", data={"csrf": csrf}).status_code == 303
    assert c.post("/v1/cases/next", headers={"X-CSRF-Token": csrf}).status_code in (200, 204)


def test_9_final_claim_must_match_the_items_and_the_schema(srv):
    cid = seed_case(srv.db, "fc-1", "Final claim note.", CLAIM)
    url = f"{srv.url}/v1/cases/{cid}/decision"
    good = {"icd10": ["K81.0", "K80.20"], "providers": [
        {"name": "Dr. Renamed", "role": "surgeon", "lines": [{"cpt": "47562", "modifiers": ["80"], "description": "lap"}]}]}
    bad_role = json.loads(json.dumps(good))
    bad_role["providers"][0]["role"] = "janitor"
    other_code = json.loads(json.dumps(good))
    other_code["providers"][0]["lines"][0]["cpt"] = "44970"
    extra_icd = {**good, "icd10": ["K80.20", "K81.0", "E66.9"]}
    unknown_key = {**good, "note": CANARY}
    for fc, fld in [(bad_role, "final_claim.providers[0].role"), (other_code, "final_claim.providers"),
                    (extra_icd, "final_claim.icd10"), (unknown_key, "final_claim")]:
        r = httpx.post(url, headers=H(srv), json={"items": ITEMS, "final_claim": fc})
        assert r.status_code == 422 and r.json()["field"] == fld, (fld, r.text)
        assert CANARY not in r.text
    ok = httpx.post(url, headers=H(srv), json={"items": ITEMS, "final_claim": good})
    assert ok.status_code == 201 and ok.json()["final_claim"]["providers"][0]["name"] == "Dr. Renamed"
