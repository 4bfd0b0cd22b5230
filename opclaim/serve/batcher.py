"""Gather concurrent suggestion requests into batches for one model on one worker thread.

The first request opens a short window (`window_s`); every request that arrives before it closes
joins the batch and keeps the window open for another `window_s`, up to `max_batch` requests or
`max_wait_s` after the first (default five windows). A burst of clients that do not start in
the same millisecond (threads, connections, a proxy) then decodes as one batch instead of a small
first batch that the rest wait behind; a lone request still waits only one window.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

log = logging.getLogger("opclaim.serve")


class Batcher:
    def __init__(self, generate, *, max_batch: int = 8, window_s: float = 0.02, max_wait_s: float | None = None,
                 on_batch=None):
        self.generate, self.max_batch, self.window_s = generate, max_batch, window_s
        self.max_wait_s = 5 * window_s if max_wait_s is None else max(max_wait_s, window_s)
        self.on_batch = on_batch  # called with the batch size after each batch (metrics)
        self.q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="opclaim-decoder", daemon=True)
        self.thread.start()

    def pending(self) -> int:
        return self.q.qsize()

    async def submit(self, note: str):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.q.put((note, loop, fut))
        return await fut

    def submit_sync(self, note: str, timeout: float | None = None):
        """From a non-async thread (background suggestion of queued cases)."""
        done = threading.Event()
        box = {}

        class _F:  # the tiny future interface _deliver needs
            def done(self):
                return done.is_set()

            def set_result(self, v):
                box["v"] = v
                done.set()

            def set_exception(self, e):
                box["e"] = e
                done.set()

        self.q.put((note, None, _F()))
        done.wait(timeout)
        if "e" in box:
            raise box["e"]
        return box.get("v")

    def stop(self) -> None:
        self._stop.set()
        self.q.put(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self.q.get()
            if first is None:
                break
            batch = [first]
            t0 = time.monotonic()
            deadline = t0 + self.window_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    item = self.q.get(timeout=max(left, 0)) if left > 0 else self.q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._stop.set()
                    break
                batch.append(item)
                deadline = min(time.monotonic() + self.window_s, t0 + self.max_wait_s)
            try:
                results = self.generate([n for n, _, _ in batch])
                outcome = [(r, None) for r in results]
            except Exception as e:  # noqa: BLE001 - answer every waiter; the type only is logged
                log.error("decode failed: %s", type(e).__name__)
                outcome = [(None, RuntimeError("decode failed"))] * len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for (_, loop, fut), (res, err) in zip(batch, outcome, strict=True):
                _deliver(loop, fut, res, err)


def _deliver(loop, fut, res, err) -> None:
    def put():
        if not fut.done():
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(res)

    if loop is None:
        put()
    else:
        loop.call_soon_threadsafe(put)
