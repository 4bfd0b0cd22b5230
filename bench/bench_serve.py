"""`opclaim serve` under load: the real server (uvicorn subprocess) against `opclaim infer`.

    python -m bench.bench_serve                                   # SmolLM2 if present, 10-minute soak
    python -m bench.bench_serve --model tiny --soak 60 --n 16     # the tiny random Phi-3, short proof run

Rows: throughput with 8 concurrent clients against 1 client (the batcher gathers concurrent
requests into one decode), by wall time and by server CPU time; the share of suggestions identical to `opclaim infer`'s outputs for the
same notes (1 client, and 8 clients); p95 latency at 1 client against its p50; a soak at 8
clients (request errors; server RSS at the end against after warm-up, max in the note); and kill -9
of the server during a stream of decisions, then a restart: every decision that got a 2xx answer
must be in the database exactly once (clients retry with the same Idempotency-Key)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import opclaim  # noqa: F401  (offline environment first)

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def _opclaim(args, threads: int, module: str = "opclaim") -> str:
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                       env=_env(threads), cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"{module} {args[0]} failed: {r.stderr[-800:]}")
    return r.stdout


class Server:
    def __init__(self, args, log: Path, threads: int):
        self.args, self.log, self.threads = [*map(str, args)], log, threads
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        import httpx

        self.fh = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "opclaim.serve", *self.args, "--port", str(self.port),
                                      "--threads", str(self.threads)], stdout=self.fh, stderr=subprocess.STDOUT,
                                     env=_env(self.threads), cwd=ROOT, start_new_session=True)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.log.read_text()[-1500:])
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not start")

    def rss(self) -> int:
        """Resident set size in bytes (Linux /proc: no extra dependency)."""
        with open(f"/proc/{self.proc.pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def cpu(self) -> float:
        """Server CPU seconds so far (user + system, all threads): robust to other load."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()


class Rows(list):
    """Rows printed (and appended to --out as JSON lines) the moment they are measured: a later
    phase failing after a 10-minute soak must not lose the soak's numbers."""

    def __init__(self, out: Path | None):
        super().__init__()
        self.out = out

    def append(self, r: dict) -> None:
        super().append(r)
        print(f"{r['name']:48s} baseline {r['baseline']!s:>9} value {r['value']!s:>9} ratio {r['ratio']!s:>6} "
              f"{r['unit']:9s} {r['note']}", flush=True)
        if self.out is not None:
            with self.out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(r) + "\n")


def _suggest_all(url, token, notes, clients: int):
    """(outputs in note order, per-request seconds, wall seconds, errors) with `clients` threads."""
    import httpx

    outs, lat, errors = [None] * len(notes), [0.0] * len(notes), [0]
    nxt = iter(range(len(notes)))
    lock = threading.Lock()

    def worker():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as c:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = c.post("/v1/suggest", json={"note": notes[i]})
                lat[i] = time.perf_counter() - t0
                if r.status_code == 200:
                    outs[i] = r.json()["output"]
                else:
                    errors[0] += 1

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return outs, lat, time.perf_counter() - t0, errors[0]


def _soak(srv, token, notes, clients: int, seconds: float):
    import httpx

    stop = time.monotonic() + seconds
    counts = {"ok": 0, "err": 0}
    lock = threading.Lock()
    rss = []

    def worker(k):
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as c:
            i = k
            while time.monotonic() < stop:
                try:
                    ok = c.post("/v1/suggest", json={"note": notes[i % len(notes)]}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts["ok" if ok else "err"] += 1
                i += clients

    ths = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in ths:
        t.start()
    while any(t.is_alive() for t in ths):
        rss.append(srv.rss())
        time.sleep(min(5.0, max(seconds / 20, 0.5)))
    for t in ths:
        t.join()
    return counts, rss


def _kill_restart(args, tmp: Path, model_args, cases_file: Path, threads: int):
    """Decisions streamed by 4 clients; kill -9 mid-stream; restart; retry the unanswered ones."""
    import httpx

    db = tmp / "kill.db"
    admin = _opclaim(["user", "add", "kadmin", "--role", "admin", "--db", db], threads, "opclaim.serve").strip()
    coder = _opclaim(["user", "add", "kcoder", "--role", "coder", "--db", db], threads, "opclaim.serve").strip()
    srv = Server([*model_args, "--db", db, "--store-notes", "--max-new-tokens", "8"], tmp / "kill.log", threads).start()
    h = {"Authorization": f"Bearer {admin}"}
    ids = [a["id"] for a in httpx.post(srv.url + "/v1/cases", headers=h, content=cases_file.read_bytes(),
                                       timeout=600).json()["accepted"]]
    hc = {"Authorization": f"Bearer {coder}"}
    # The server suggests every enqueued case in the background; wait for that (the decode is not
    # what is measured here) by polling the queue, so no single request waits behind all of them.
    deadline = time.monotonic() + 7200
    while time.monotonic() < deadline:
        queue = httpx.get(srv.url + "/v1/cases", headers=hc, timeout=60).json()
        if all(c["status"] != "queued" for c in queue if c["id"] in set(ids)):
            break
        time.sleep(2)
    items = {}
    for cid in ids:
        sug = httpx.get(f"{srv.url}/v1/cases/{cid}", headers=hc, timeout=600).json()["suggestion"]
        its = [{"system": c["system"], "code": c["code"], "action": "accept"} for c in (sug or {}).get("codes", [])]
        items[cid] = its + [{"system": "icd10", "code": "K80.20", "action": "add"}] if not any(
            c["code"] == "K80.20" for c in its) else its
    answered, lock = {}, threading.Lock()
    todo = list(ids)

    def worker(part):
        with httpx.Client(base_url=srv.url, headers=hc, timeout=30) as c:
            for cid in part:
                key = f"bench-{cid}"
                try:
                    r = c.post(f"/v1/cases/{cid}/decision", json={"items": items[cid]}, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    continue
                if r.status_code in (200, 201):
                    with lock:
                        answered[key] = r.json()["id"]

    ths = [threading.Thread(target=worker, args=(todo[k::4],)) for k in range(4)]
    for t in ths:
        t.start()
    while len(answered) < max(1, len(ids) // 3) and any(t.is_alive() for t in ths):
        time.sleep(0.005)
    srv.stop(signal.SIGKILL)
    for t in ths:
        t.join()
    before = dict(answered)
    srv = Server([*model_args, "--db", db, "--store-notes", "--max-new-tokens", "8"], tmp / "kill.log", threads).start()
    with httpx.Client(base_url=srv.url, headers=hc, timeout=60) as c:  # the clients retry what got no answer
        for cid in ids:
            key = f"bench-{cid}"
            if key not in answered:
                r = c.post(f"/v1/cases/{cid}/decision", json={"items": items[cid]}, headers={"Idempotency-Key": key})
                if r.status_code in (200, 201):
                    answered[key] = r.json()["id"]
    srv.stop()
    con = sqlite3.connect(db)
    rows = dict(con.execute("SELECT client_key, COUNT(*) FROM decisions WHERE client_key LIKE 'bench-%' "
                            "GROUP BY client_key").fetchall())
    per_case = con.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM decisions GROUP BY case_id)").fetchone()[0]
    con.close()
    once = sum(1 for k in before if rows.get(k) == 1)
    return {"answered_before_kill": len(before), "present_once": once, "cases": len(ids),
            "after_retry": sum(1 for k in answered if rows.get(k) == 1), "max_per_case": per_case}


def _throughput(args, srv, token, model, label, cases, tmp: Path, rows) -> None:
    """8 clients against 1, by wall and server CPU time; outputs against `opclaim infer`'s; p95."""
    notes = [c.note for c in cases]
    # what `opclaim infer` writes for the same notes (its default batch of 8)
    _opclaim(["infer", "--model", model, "--mode", args.mode, "--cases", tmp / "cases.jsonl", "--out", tmp / "p.jsonl",
              "--max-new-tokens", args.max_new_tokens, "--threads", args.threads, "--no-progress"], args.threads)
    ref = {json.loads(x)["id"]: json.loads(x)["output"] for x in (tmp / "p.jsonl").read_text().splitlines()}
    ref = [ref[c.id] for c in cases]
    c0 = srv.cpu()
    one, lat1, wall1, err1 = _suggest_all(srv.url, token, notes, 1)
    c1 = srv.cpu()
    many, _, wall8, err8 = _suggest_all(srv.url, token, notes, args.clients)
    cpu1, cpu8 = c1 - c0, srv.cpu() - c1
    note = (f"model={label} n={args.n} max_new={args.max_new_tokens} mode={args.mode} threads={args.threads} "
            f"window={args.batch_window_ms:g}ms")
    rows.append({"name": f"throughput, {args.clients} clients vs 1", "baseline": round(args.n / wall1, 3),
                 "value": round(args.n / wall8, 3), "ratio": round(wall1 / wall8, 2), "unit": "req/s",
                 "note": f"{note}; errors {err1}+{err8}"})
    rows.append({"name": f"requests per server CPU-second, {args.clients} clients vs 1",
                 "baseline": round(args.n / cpu1, 3), "value": round(args.n / cpu8, 3),
                 "ratio": round(cpu1 / cpu8, 2), "unit": "req/cpu-s",
                 "note": "robust to other load on a shared machine"})
    for name, outs in (("1 client", one), (f"{args.clients} clients", many)):
        same = sum(a == b for a, b in zip(outs, ref, strict=True))
        rows.append({"name": f"identical to opclaim infer, {name}", "baseline": args.n, "value": same,
                     "ratio": round(same / args.n, 3), "unit": "outputs",
                     "note": "infer batches 8 sorted by length; fp32 sums in another batch order can flip "
                             "near-tied greedy picks" if same < args.n else "all identical"})
    lat1.sort()
    p50, p95 = statistics.median(lat1), lat1[min(len(lat1) - 1, int(round(0.95 * (len(lat1) - 1))))]
    rows.append({"name": "p95 latency, 1 client (baseline p50)", "baseline": round(p50, 3), "value": round(p95, 3),
                 "ratio": round(p95 / p50, 2), "unit": "s", "note": f"{len(lat1)} requests"})


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/models/smollm2-135m",
                    help="model folder, or 'tiny' for the random tiny Phi-3 (also used when the folder is missing)")
    ap.add_argument("--n", type=int, default=16, help="notes per throughput run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--mode", default="base", choices=["base", "finetuned"])
    ap.add_argument("--soak", type=float, default=600, help="soak seconds at --clients (0 = skip)")
    ap.add_argument("--kill-cases", type=int, default=40, help="cases in the kill -9 decision stream (0 = skip)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="server torch threads")
    ap.add_argument("--batch-window-ms", type=float, default=20.0,
                    help="the server's --batch-window-ms: how long a first request waits for company")
    ap.add_argument("--phases", default="throughput,soak,kill", help="which of throughput,soak,kill to run")
    ap.add_argument("--out", help="append each row as a JSON line to this file as it is measured")
    args = ap.parse_args(argv)
    from opclaim.io import write_cases
    from opclaim.synth import generate_cases

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = Path(args.model)
    label = str(model)
    if args.model == "tiny" or not (model / "config.json").is_file():
        from opclaim.registry import build_tiny_phi3

        model, label = build_tiny_phi3(tmp / "tiny"), "tiny random Phi-3"
    cases = generate_cases(args.n, seed=0, style="dictation", length="short")
    write_cases(tmp / "cases.jsonl", cases)
    notes = [c.note for c in cases]

    phases = set(args.phases.split(","))
    db = tmp / "serve.db"
    token = _opclaim(["user", "add", "bench", "--role", "coder", "--db", db], args.threads, "opclaim.serve").strip()
    model_args = ["--model", model, "--mode", args.mode]
    rows = Rows(Path(args.out) if args.out else None)
    if phases & {"throughput", "soak"}:
        srv = Server([*model_args, "--db", db, "--max-new-tokens", args.max_new_tokens, "--max-batch", args.clients,
                      "--batch-window-ms", args.batch_window_ms], tmp / "server.log", args.threads).start()
        try:
            _suggest_all(srv.url, token, notes[:2], 1)  # warm-up
            if "throughput" in phases:
                _throughput(args, srv, token, model, label, cases, tmp, rows)
            if "soak" in phases and args.soak > 0:
                # warm-up: full batches first, so the baseline holds the largest batch's working set
                _suggest_all(srv.url, token, (notes * 2)[:2 * args.clients], args.clients)
                warm = srv.rss()
                counts, rss = _soak(srv, token, notes, args.clients, args.soak)
                mid = rss[len(rss) // 2]
                rows.append({"name": f"soak {int(args.soak)} s, {args.clients} clients: errors",
                             "baseline": counts["ok"] + counts["err"], "value": counts["err"],
                             "ratio": round(counts["err"] / max(1, counts["ok"] + counts["err"]), 4),
                             "unit": "requests", "note": "goal: 0 errors"})
                rows.append({"name": "soak: server RSS, end vs after warm-up", "baseline": round(warm / 2**20, 1),
                             "value": round(rss[-1] / 2**20, 1), "ratio": round(rss[-1] / warm, 3), "unit": "MiB",
                             "note": f"halfway {mid / 2**20:.1f} MiB (second half x{rss[-1] / mid:.3f}); max "
                                     f"{max(rss) / 2**20:.1f} MiB over {len(rss)} samples; goal ratio within 0.9-1.1"})
        finally:
            srv.stop()
    if "kill" in phases and args.kill_cases > 0:
        write_cases(tmp / "kill.jsonl", generate_cases(args.kill_cases, seed=1, style="terse", length="short",
                                                       id_prefix="k"))
        k = _kill_restart(args, tmp, model_args, tmp / "kill.jsonl", args.threads)
        rows.append({"name": "kill -9 mid-stream: 2xx decisions present once", "baseline": k["answered_before_kill"],
                     "value": k["present_once"], "ratio": round(k["present_once"] / max(1, k["answered_before_kill"]), 3),
                     "unit": "decisions", "note": f"after restart and retry {k['after_retry']}/{k['cases']} once; "
                                                  f"max decisions per case {k['max_per_case']}"})
    return list(rows)


if __name__ == "__main__":
    main()
