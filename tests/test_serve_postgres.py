"""`opclaim serve` on PostgreSQL: a real server (initdb + pg_ctl in a folder of the test's own, a
free port, a Unix socket), the Store's contract on it, and the real HTTP server with a
`postgresql://` --db: a decision round trip, an amendment, export -> data validate clean."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.serve_helpers import CANARY, Server, add_user, free_port, run_serve, seed_case

CLAIM = {"icd10": ["K80.20", "K81.0"], "providers": [
    {"name": "Dr. A. Surgeon", "lines": [{"cpt": "47562", "modifiers": ["80"]}]}]}


def _pg_bin(name: str) -> str | None:
    if shutil.which(name):
        return shutil.which(name)
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))  # Debian keeps them off PATH
    return str(found[-1]) if found else None


@pytest.fixture(scope="module")
def pg_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries missing (Debian package postgresql; `make setup` installs it)")
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    base = Path(tempfile.mkdtemp(prefix="opclaim-pg-", dir="/tmp"))  # short: socket paths are limited
    run_as = []
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        os.chown(base, pwd.getpwnam("postgres").pw_uid, -1)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = str(base / "data")
    subprocess.run([*run_as, initdb, "-D", data, "-A", "trust", "-U", "opclaim", "--no-sync"], check=True,
                   capture_output=True)
    subprocess.run([*run_as, pg_ctl, "-D", data, "-l", str(base / "log"), "-w", "-o",
                    f"-k {base} -p {port} -c listen_addresses='' -c fsync=off", "start"], check=True,
                   capture_output=True)
    import psycopg

    with psycopg.connect(f"postgresql://opclaim@/postgres?host={base}&port={port}", autocommit=True) as c:
        c.execute("CREATE DATABASE serve_store")
        c.execute("CREATE DATABASE serve_http")
    try:
        yield lambda db: f"postgresql://opclaim@/{db}?host={base}&port={port}"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _case(cid, note="Gallbladder out.", claim=None):
    from opclaim.claim import Case, Claim

    return Case(cid, note, Claim.from_dict(claim) if claim else None, "2026-11-30", "general")


def test_store_contract_on_postgresql(pg_url):
    import psycopg

    from opclaim.errors import InputError
    from opclaim.serve.db import SCHEMA_VERSION, DecisionConflict, Store

    url = pg_url("serve_store")
    s = Store(url, store_notes=True)
    assert s.dialect == "postgresql" and s.version() == SCHEMA_VERSION
    s.close()
    s = Store(url, store_notes=True)  # reopening applies nothing twice
    assert s.query("SELECT COUNT(*) FROM schema_version")[0][0] == SCHEMA_VERSION

    tok = s.add_user("ada", "coder")
    me = s.user_for_token(tok)
    assert me["name"] == "ada" and me["role"] == "coder" and s.user_for_token(tok + "x") is None
    with pytest.raises(InputError, match="exists"):
        s.add_user("ada", "admin")
    assert s.query("SELECT COUNT(*) FROM users")[0][0] == 1  # the failed insert was rolled back

    added, dups = s.add_cases([_case("a-1", f"Note one {CANARY}", CLAIM), _case("a-2"), _case("a-1")], me["id"])
    assert [a["external_id"] for a in added] == ["a-1", "a-2"] and dups == [{"external_id": "a-1"}]
    assert added[1]["id"] == added[0]["id"] + 1 and s.queue_depth() == 2
    one = s.case(added[0]["id"])
    assert one["note"] == f"Note one {CANARY}" and one["reference_claim"]["icd10"] == ["K80.20", "K81.0"]
    assert s.lease_next(me["id"])["external_id"] == "a-1"

    sug = SimpleNamespace(claim=CLAIM, codes=[{"system": "icd10", "code": "K80.20"}], flags=[], latency_s=0.123456789)
    sid = s.add_suggestion(added[0]["id"], sug, "m", "d" * 64)
    got = s.latest_suggestion(added[0]["id"])
    assert got["id"] == sid and got["latency_s"] == 0.123456789 and got["codes"] == sug.codes  # double, not float4
    assert s.case(added[0]["id"])["status"] == "suggested"

    d1 = s.add_decision(added[0]["id"], me["id"], [{"action": "accept"}], CLAIM, suggestion_id=sid, model="m",
                        client_key="k-1")
    assert d1["user"] == "ada" and d1["amends_id"] is None and s.decision_by_key("k-1")["id"] == d1["id"]
    with pytest.raises(DecisionConflict):
        s.add_decision(added[0]["id"], me["id"], [], CLAIM)
    d2 = s.add_decision(added[0]["id"], me["id"], [{"action": "edit"}], {"icd10": ["K80.20"], "providers": []},
                        amends_id=d1["id"])
    assert [d["id"] for d in s.decisions(added[0]["id"])] == [d1["id"], d2["id"]]
    assert [d["id"] for d in s.final_decisions()] == [d2["id"]] and s.queue_depth() == 1
    s.close()

    # the audit trail cannot be rewritten, even through a connection of its own
    with psycopg.connect(url, autocommit=True) as c:
        before = c.execute("SELECT * FROM decisions ORDER BY id").fetchall()
        for sql in ("UPDATE decisions SET items = '[]'", "DELETE FROM decisions", "TRUNCATE decisions CASCADE",
                    "INSERT INTO decisions (id, case_id, user_id, items, final_claim, created_at) OVERRIDING SYSTEM "
                    "VALUE VALUES (1, 1, 1, '[]', '{}', 'x') ON CONFLICT (id) DO UPDATE SET final_claim = '{}'",
                    "INSERT INTO decisions (case_id, user_id, items, final_claim, client_key, created_at) "
                    "VALUES (1, 1, '[]', '{}', 'k-1', 'x') ON CONFLICT (client_key) DO UPDATE SET items = '[]'",
                    "MERGE INTO decisions d USING (SELECT 1 AS id) s ON d.id = s.id WHEN MATCHED THEN UPDATE "
                    "SET items = '[]'",
                    "MERGE INTO decisions d USING (SELECT 1 AS id) s ON d.id = s.id WHEN MATCHED THEN DELETE",
                    "WITH x AS (UPDATE decisions SET items = '[]' RETURNING id) SELECT * FROM x",
                    "WITH x AS (DELETE FROM decisions RETURNING id) SELECT * FROM x",
                    "DELETE FROM users"):
            with pytest.raises(psycopg.Error):  # append-only trigger, or a foreign key the rows hold
                c.execute(sql)
        for sql in ("UPDATE decisions SET items = '[]'", "MERGE INTO decisions d USING (SELECT 1 AS id) s "
                    "ON d.id = s.id WHEN MATCHED THEN DELETE"):
            with pytest.raises(psycopg.Error, match="append-only"):
                c.execute(sql)
        with pytest.raises(psycopg.Error):  # an explicit id is refused (GENERATED ALWAYS)
            c.execute("INSERT INTO decisions (id, case_id, user_id, items, final_claim, created_at) "
                      "VALUES (1, 1, 1, '[]', '{}', 'x')")
        assert c.execute("SELECT * FROM decisions ORDER BY id").fetchall() == before
        assert c.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 2
        c.execute("INSERT INTO schema_version VALUES (%s, 'later')", (SCHEMA_VERSION + 1,))
    with pytest.raises(InputError, match="newer than this opclaim"):
        Store(url)


def test_postgresql_url_errors_name_the_field_and_hide_the_password():
    from opclaim.errors import InputError
    from opclaim.serve.db import Store

    port = free_port()  # nobody listens there
    with pytest.raises(InputError) as e:
        Store(f"postgresql://opclaim:s3cretpw@127.0.0.1:{port}/x?connect_timeout=2")
    assert e.value.field == "--db" and "s3cretpw" not in str(e.value) and "***" in str(e.value)
    with pytest.raises(InputError, match="postgresql://"):
        Store("mysql://db.internal/opclaim")


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_server_round_trip_and_export_on_postgresql(pg_url, tiny_phi3_dir, tmp_path, capsys):
    from opclaim.cli import main

    url = pg_url("serve_http")
    coder = add_user(url, "carl", "coder")
    srv = Server(["--model", tiny_phi3_dir, "--db", url, "--store-notes", "--max-new-tokens", "8", "--threads", "1"],
                 tmp_path / "server.log").start()
    try:
        h = {"Authorization": f"Bearer {coder}"}
        cid = seed_case(url, "pg-1", f"Gallbladder removed. {CANARY}", CLAIM)
        assert httpx.post(f"{srv.url}/v1/cases/next", headers=h).json()["id"] == cid
        items = [{"system": "icd10", "code": "K80.20", "action": "accept"},
                 {"system": "icd10", "code": "K81.0", "action": "reject"},
                 {"system": "cpt", "code": "47562", "action": "accept"}]
        url_d = f"{srv.url}/v1/cases/{cid}/decision"
        first = httpx.post(url_d, headers={**h, "Idempotency-Key": "pg-k1"}, json={"items": items})
        assert first.status_code == 201, first.text
        retry = httpx.post(url_d, headers={**h, "Idempotency-Key": "pg-k1"}, json={"items": items})
        assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
        assert httpx.post(url_d, headers=h, json={"items": items}).status_code == 409  # must amend
        items[1]["action"] = "accept"
        amend = httpx.post(url_d, headers=h, json={"items": items, "amends": first.json()["id"]})
        assert amend.status_code == 201, amend.text
        assert amend.json()["amends_id"] == first.json()["id"]
        assert amend.json()["final_claim"]["icd10"] == ["K80.20", "K81.0"]
    finally:
        srv.stop()
    assert CANARY not in (tmp_path / "server.log").read_text()
    out = tmp_path / "cases.jsonl"
    res = run_serve("export", "--db", url, "--out", out)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["pg-1"] and len(rows[0]["provenance"]["decisions"]) == 2
    assert main(["data", "validate", str(out), "--rejects", str(tmp_path / "rej.jsonl")]) == 0
    assert "rejected: 0" in capsys.readouterr().out
