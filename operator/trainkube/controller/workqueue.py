"""The work queue every watch event feeds: one entry per job key, in the shape of client-go's
workqueue. A key added many times before a worker takes it is reconciled once; a key is never
handed to two workers at once (added while being processed, it comes back when that one is
done); `add_after` is a delayed re-queue for time-based work (back-off, deadlines, TTL); failed
reconciles come back after a per-key exponential back-off."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable

BASE_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 60.0


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()  # waiting in the queue (or to be re-queued)
        self._processing: set[Hashable] = set()
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._closed = False

    def add(self, key: Hashable) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: Hashable) -> None:
        if self._closed or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Add `key` once `seconds` have passed (at once when not positive)."""
        if seconds <= 0:
            self.add(key)
            return
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + seconds, next(self._order), key))
            self._cond.notify()

    def add_rate_limited(self, key: Hashable) -> None:
        """Add `key` again after a failure: 50 ms, doubling per failure in a row, at most 60 s."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        self.add_after(key, min(BASE_BACKOFF_SECONDS * 2**failures, MAX_BACKOFF_SECONDS))

    def forget(self, key: Hashable) -> None:
        """`key` succeeded: its next failure starts the back-off from the beginning."""
        with self._cond:
            self._failures.pop(key, None)

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key to reconcile (the caller must call `done`), or None when the queue is
        shut down or `timeout` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._add(heapq.heappop(self._delayed)[2])
                if self._closed:
                    return None
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                waits = [w for w in (deadline, self._delayed[0][0] if self._delayed else None) if w]
                if deadline is not None and now >= deadline:
                    return None
                self._cond.wait(min(waits) - now if waits else None)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
