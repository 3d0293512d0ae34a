"""Per-job locks: the same key waits, other keys do not, and nothing is kept afterwards."""

from __future__ import annotations

import threading
import time

from trainkube.controller.keyedlocks import KeyedLocks


def _run_together(locks: KeyedLocks, keys: list[str]) -> list[tuple[str, str]]:
    """Each thread holds its key for 0.1 s; the order of enter/leave marks."""
    marks: list[tuple[str, str]] = []
    start = threading.Barrier(len(keys))

    def work(key: str) -> None:
        start.wait()
        with locks.hold(key):
            marks.append(("enter", key))
            time.sleep(0.1)
            marks.append(("leave", key))

    threads = [threading.Thread(target=work, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return marks


def test_the_same_key_is_held_by_one_at_a_time() -> None:
    locks = KeyedLocks()
    marks = _run_together(locks, ["job-a", "job-a", "job-a"])
    assert [kind for kind, _ in marks] == ["enter", "leave"] * 3
    assert len(locks) == 0


def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = KeyedLocks()
    marks = _run_together(locks, ["job-a", "job-b"])
    assert [kind for kind, _ in marks[:2]] == ["enter", "enter"]
    assert len(locks) == 0


def test_a_key_is_released_when_its_block_raises() -> None:
    locks = KeyedLocks()
    try:
        with locks.hold("job-a"):
            assert len(locks) == 1
            raise RuntimeError("reconcile failed")
    except RuntimeError:
        pass
    assert len(locks) == 0
    with locks.hold("job-a"):  # not left locked
        pass
