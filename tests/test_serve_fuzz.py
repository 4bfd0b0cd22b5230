"""A seeded fuzz of `opclaim serve` over methods, paths, headers and bodies against the real server
on loopback (tiny Phi-3, SQLite): no 5xx, /metrics bounded, memory bounded under oversized bodies,
the canary never in the log or the metrics."""

import random
import socket

import httpx
import pytest

from tests.serve_helpers import CANARY, Server, add_user

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", CANARY, "G\x00T", "X" * 300]
PATHS = ["/v1/suggest", "/v1/cases", "/v1/cases/next", "/v1/cases/1", "/v1/cases/1/decision", "/v1/export",
         "/metrics", "/login", "/logout", "/next", "/cases/1", f"/{CANARY}", "/v1/cases/-1", "/v1/cases/9" * 50]
BODIES = [b"", b"{}", b"null", b"[" * 5000, f'{{"note": "{CANARY}\\udc00"}}'.encode(), b"\xff\xfe" + CANARY.encode(),
          f'{{"items": [{{"system": "icd10", "code": "{CANARY}", "action": "add"}}]}}'.encode(),
          f'{{"id": "f", "note": "{CANARY}"}}\n{{"id": "f"}}'.encode(), b'{"note": 5}']


@pytest.fixture(scope="module")
def srv(tiny_phi3_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    db = d / "serve.db"
    tokens = [add_user(db, "ada", "admin"), add_user(db, "carl", "coder")]
    s = Server(["--model", tiny_phi3_dir, "--db", db, "--max-new-tokens", "2", "--threads", "1"],
               d / "server.log").start()
    s.tokens = tokens
    yield s
    s.stop()


def _send(srv, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


def _rss_kb(pid) -> int:
    return next(int(x.split()[1]) for x in open(f"/proc/{pid}/status") if x.startswith("VmRSS:"))


def test_fuzzed_requests_never_5xx_and_never_leak(srv):
    rng = random.Random(28)
    h = {"Authorization": f"Bearer {srv.tokens[0]}"}
    size0 = len(httpx.get(srv.url + "/metrics", headers=h).content)
    statuses = []
    for _ in range(150):
        method, path, body = rng.choice(METHODS), rng.choice(PATHS), rng.choice(BODIES)
        heads = [f"Host: 127.0.0.1:{srv.port}", f"Content-Length: {len(body)}"]
        if rng.random() < 0.5:
            heads.append(f"Authorization: Bearer {rng.choice(srv.tokens + ['ocl_' + CANARY])}")
        if rng.random() < 0.3:
            heads.append(rng.choice(["Content-Type: application/json", f"Idempotency-Key: {CANARY * 10}",
                                     "Origin: null", f"Cookie: opclaim_session={CANARY}", "X-CSRF-Token: x",
                                     "Content-Length: 99999999999", "Transfer-Encoding: chunked"]))
        req = f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(heads) + "\r\nConnection: close\r\n\r\n"
        out = _send(srv, req.encode("latin-1", "replace") + body)
        line = out.split(b"\r\n", 1)[0]
        if line.startswith(b"HTTP/1.1 "):
            statuses.append(int(line.split()[1]))
            assert not line.split()[1].startswith(b"5"), (method[:20], path[:40], body[:40], out[:300])
    assert len(statuses) > 100, len(statuses)
    m = httpx.get(srv.url + "/metrics", headers=h)
    assert m.status_code == 200 and len(m.content) < size0 + 150_000, len(m.content)  # closed label sets: bounded whatever is sent
    assert CANARY not in m.text
    # a stream of oversized bodies, without and with a valid token: memory stays bounded
    start = _rss_kb(srv.proc.pid)
    for i in range(6):
        auth = h if i % 2 else {}
        r = httpx.post(srv.url + "/v1/suggest", content=b"x" * 8_000_000,
                       headers={**auth, "Content-Type": "application/json"}, timeout=60)
        assert r.status_code in (401, 413)
    assert _rss_kb(srv.proc.pid) - start < 60_000
    assert httpx.get(srv.url + "/healthz").status_code == 200
    assert CANARY not in srv.log.read_text()
