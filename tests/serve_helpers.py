"""Helpers for the serve tests and bench: a real `opclaim serve` in a subprocess, a seeded case,
and a minimal Chrome DevTools Protocol client over --remote-debugging-pipe (stdlib only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CANARY = "CANARYxPHIx7Q3Z"  # in every note the tests send; must never reach the server log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_serve(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opclaim.serve", *map(str, args)], capture_output=True, text=True,
                          env=serve_env(), timeout=timeout, cwd=ROOT)


def add_user(db, name, role) -> str:
    r = run_serve("user", "add", name, "--role", role, "--db", db)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("ocl_") and "\n" not in token
    return token


class Server:
    def __init__(self, args, log: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        self.args = [*map(str, args), "--port", str(self.port)]

    def start(self, wait_s: float = 180) -> Server:
        self.fh = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "opclaim.serve", *self.args], stdout=self.fh,
                                     stderr=subprocess.STDOUT, env=serve_env(), cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not come up:\n" + self.log.read_text()[-3000:])

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.fh.close()


def seed_case(db, external_id: str, note: str, claim: dict, service="general") -> int:
    """A case with a suggestion made by the real extraction path from a claim's target text
    (the random tiny model writes no codes, so the tests seed what it would suggest)."""
    import prompts
    from opclaim.claim import Case, Claim
    from opclaim.serve.db import Store
    from opclaim.serve.engine import claim_from_output

    store = Store(db, store_notes=True)
    (added,), _ = store.add_cases([Case(external_id, note, None, "2026-11-30", service)], None)
    c, rows = claim_from_output(prompts.target(Claim.from_dict(claim), "phi3"))
    sug = type("S", (), {"claim": c, "codes": rows, "flags": [], "latency_s": 0.1})()
    store.add_suggestion(added["id"], sug, "seeded", None)
    store.close()
    return added["id"]


# ---------------------------------------------------------------- Chromium over a pipe
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe"]


class Browser:
    """Chrome DevTools Protocol on fds 3 (to Chromium) and 4 (from it), NUL-delimited JSON."""

    def __init__(self, profile: Path):
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()

        def fds():
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=fds, pass_fds=(3, 4, to_r, from_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        self.buf, self.n, self.events = b"", 0, []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def _read(self, timeout):
        import select

        while b"\0" not in self.buf:
            r, _, _ = select.select([self.from_r], [], [], timeout)
            if not r:
                raise TimeoutError("no message from Chromium")
            chunk = os.read(self.from_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, session=False, timeout=60, **params):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read(timeout)
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def eval(self, expr: str):
        r = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(str(r["exceptionDetails"])[:500])
        return r["result"].get("value")

    def goto(self, url: str, expect: str | None = None) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_for(f"document.readyState === 'complete' && location.href === {json.dumps(expect or url)}")

    def wait_for(self, expr: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(expr):
                    return
            except RuntimeError:
                pass
            time.sleep(0.2)
        raise TimeoutError(expr)

    def key(self, ch: str) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", session=True, type=kind, key=ch, text=ch if kind == "keyDown" else "",
                      code=f"Key{ch.upper()}" if ch.isalpha() else "")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        os.close(self.to_w)
        os.close(self.from_r)
