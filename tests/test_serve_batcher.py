"""The batcher's gathering rule, on the real Batcher with a recording generate() (the model's
side is tests/test_serve.py::test_concurrent_suggestions_share_a_batch, on the real server)."""

import threading
import time

import pytest

from opclaim.serve.batcher import Batcher


def _run(batcher, arrivals_s: list[float]) -> list[str]:
    """Submit one note per arrival time (seconds after start) from its own thread; the answers."""
    out, t0 = [None] * len(arrivals_s), time.monotonic()

    def one(i, at):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        out[i] = batcher.submit_sync(f"note {i}")

    ths = [threading.Thread(target=one, args=(i, a)) for i, a in enumerate(arrivals_s)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return out


def _recorder():
    sizes = []

    def generate(notes):
        sizes.append(len(notes))
        return [n.upper() for n in notes]

    return sizes, generate


def test_a_staggered_burst_decodes_as_one_batch():
    """8 clients 100 ms apart, a 250-ms window: every arrival keeps it open, so one batch of 8
    (a window fixed at the first arrival would close after three)."""
    sizes, gen = _recorder()
    b = Batcher(gen, max_batch=8, window_s=0.25)
    try:
        out = _run(b, [0.1 * i for i in range(8)])
    finally:
        b.stop()
    assert out == [f"NOTE {i}" for i in range(8)] and sizes == [8]


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_the_batch_closes_at_max_batch_and_at_max_wait():
    sizes, gen = _recorder()
    b = Batcher(gen, max_batch=3, window_s=0.5)
    try:
        _run(b, [0.0] * 7)
    finally:
        b.stop()
    assert sorted(sizes, reverse=True)[0] == 3 and sum(sizes) == 7 and max(sizes) <= 3
    sizes, gen = _recorder()
    b = Batcher(gen, max_batch=100, window_s=0.3, max_wait_s=0.6)
    try:  # a steady stream 100 ms apart for 2.4 s never closes the window: max_wait_s does
        out = _run(b, [0.1 * i for i in range(25)])
    finally:
        b.stop()
    assert len(out) == 25 and None not in out and len(sizes) >= 3 and max(sizes) < 25


def test_a_lone_request_is_answered_alone():
    sizes, gen = _recorder()
    b = Batcher(gen, max_batch=8, window_s=0.05)
    try:
        assert _run(b, [0.0]) == ["NOTE 0"]
        assert _run(b, [0.0]) == ["NOTE 0"]
    finally:
        b.stop()
    assert sizes == [1, 1]
