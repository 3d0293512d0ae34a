"""The work queue: one entry per key however often it is added, never one key in two workers at
once, delayed and rate-limited re-queues."""

from __future__ import annotations

import threading
import time

from trainkube.controller.workqueue import WorkQueue


def test_a_key_added_many_times_is_handed_out_once() -> None:
    queue = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert [queue.get(timeout=0.1), queue.get(timeout=0.1), queue.get(timeout=0.1)] == [
        "a",
        "b",
        None,
    ]


def test_a_key_added_while_processed_comes_back_only_after_done() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0.1) == "a"
    queue.add("a")
    assert queue.get(timeout=0.1) is None  # not to a second worker while the first has it
    queue.done("a")
    assert queue.get(timeout=0.1) == "a"


def test_add_after_hands_the_key_out_when_its_time_has_come() -> None:
    queue = WorkQueue()
    queue.add_after("a", 0.3)
    started = time.monotonic()
    assert queue.get(timeout=2) == "a"
    assert time.monotonic() - started >= 0.29


def test_failures_back_off_exponentially_and_forget_resets_it() -> None:
    queue = WorkQueue()
    waits = []
    for _ in range(3):
        started = time.monotonic()
        queue.add_rate_limited("a")
        assert queue.get(timeout=2) == "a"
        queue.done("a")
        waits.append(time.monotonic() - started)
    assert waits[0] >= 0.045
    assert waits[1] >= 0.095
    assert waits[2] >= 0.195
    queue.forget("a")
    started = time.monotonic()
    queue.add_rate_limited("a")
    assert queue.get(timeout=2) == "a"
    assert time.monotonic() - started < 0.2


def test_shutdown_wakes_every_waiting_worker() -> None:
    queue = WorkQueue()
    got: list[object] = []
    workers = [threading.Thread(target=lambda: got.append(queue.get())) for _ in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(0.1)
    queue.shutdown()
    for worker in workers:
        worker.join(timeout=2)
    assert got == [None, None, None]
