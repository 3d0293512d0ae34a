"""The API clients, made once per operator process. Every request carries a timeout: a call
that hangs (an apiserver restarting, a dropped connection) fails after `REQUEST_SECONDS` and
its reconcile is retried, instead of holding a worker forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.dynamic import DynamicClient

FIELD_MANAGER = "trainkube-operator"
REQUEST_SECONDS = 30.0
DEFAULT_IMAGES = {
    "gpu": "ghcr.io/trainkube/trainer:0.1.0",
    "cpu": "ghcr.io/trainkube/trainer-cpu:0.1.0",
}


# Connections to the apiserver kept open for reuse beyond the watches' (each watch holds one for
# as long as it runs): enough for the workers, the Event thread and a few more. The client's
# default (5 per CPU: 10 here) was fewer than the watches alone (eight per watched namespace),
# and every request made while all were taken opened a TLS connection and dropped it afterwards:
# a handshake on both sides, about 4.5 s of the operator's threads' time over 500 new jobs.
SPARE_CONNECTIONS = 16


class TokenBucket:
    """At most `rate` a second on average, `burst` at once; `take` waits for its turn."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self._clock, self._sleep = clock, sleep
        self._tokens, self._last = float(self.burst), clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:  # one waiter at a time: requests go out in the order they came
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1:
                self._sleep((1 - self._tokens) / self.rate)
                self._tokens, self._last = 1.0, self._clock()
            self._tokens -= 1


def counted(url: str) -> bool:
    """Whether a request to `url` counts against the limit: all but watches."""
    return "watch=true" not in url.lower()


class TimedApiClient(client.ApiClient):
    """An ApiClient whose every call has a timeout unless the caller gives one (watches do),
    and, given a `limit`, at most that many requests a second (watches are not counted: each
    is one long request), as client-go's QPS and burst bound a Go controller. The apiserver is
    shared: an operator that sends all it can when hundreds of jobs arrive at once starves the
    cluster's own controllers (the Job controller creating the workers among them)."""

    request_seconds = REQUEST_SECONDS

    def __init__(self, limit: TokenBucket | None = None, *, watches: int = 0) -> None:
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = watches + SPARE_CONNECTIONS
        super().__init__(configuration)
        self.limit = limit

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.request_seconds
        url = str(kwargs.get("url", args[1] if len(args) > 1 else ""))
        if self.limit is not None and counted(url):
            self.limit.take()
        return super().call_api(*args, **kwargs)


@dataclass
class Clients:
    api: client.ApiClient
    dynamic: DynamicClient
    core: client.CoreV1Api
    batch: client.BatchV1Api
    custom: client.CustomObjectsApi
    images: dict[str, str]

    @classmethod
    def create(cls, api: client.ApiClient, images: dict[str, str] | None = None) -> Clients:
        return cls(
            api=api,
            dynamic=DynamicClient(api),  # type: ignore[no-untyped-call]
            core=client.CoreV1Api(api),
            batch=client.BatchV1Api(api),
            custom=client.CustomObjectsApi(api),
            images=images or DEFAULT_IMAGES,
        )

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of one child, as the operator's one field manager; the object as
        the apiserver now has it."""
        resource = self.dynamic.resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        applied = resource.server_side_apply(
            body=manifest,
            name=manifest["metadata"]["name"],
            namespace=manifest["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            serializer=_as_dict,
        )
        found: dict[str, Any] = applied
        return found


def _as_dict(_client: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The dynamic client's answer as the JSON it was (not wrapped in a ResourceInstance,
    whose `to_dict` walks every field again)."""
    return data
