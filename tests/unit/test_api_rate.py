"""The operator's client-side request limit (pure, on a fake clock): a burst goes at once,
then requests are spaced at the rate; watches are not counted."""

from __future__ import annotations

from trainkube.controller.clients import TokenBucket, counted


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_burst_goes_at_once_then_requests_wait_their_turn_at_the_rate() -> None:
    clock = _Clock()
    bucket = TokenBucket(10.0, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.take()
    assert clock.slept == []
    bucket.take()
    bucket.take()
    assert [round(s, 6) for s in clock.slept] == [0.1, 0.1]
    clock.now += 60  # idle a minute: the bucket refills up to the burst, no further
    for _ in range(3):
        bucket.take()
    assert len(clock.slept) == 2
    bucket.take()
    assert len(clock.slept) == 3


def test_watches_are_not_counted_every_other_request_is() -> None:
    assert not counted("https://api/api/v1/pods?labelSelector=a&watch=True")
    assert counted("https://api/api/v1/pods?labelSelector=a")
    assert counted("https://api/apis/trainkube.io/v1alpha1/namespaces/n/llmtrainingjobs/x/status")
