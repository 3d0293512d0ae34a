"""The API clients, made once per operator process. Every request carries a timeout: a call
that hangs (an apiserver restarting, a dropped connection) fails after `REQUEST_SECONDS` and
its reconcile is retried, instead of holding a worker forever."""

from __future__ import annotations

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


class TimedApiClient(client.ApiClient):
    """An ApiClient whose every call has a timeout unless the caller gives one (watches do)."""

    request_seconds = REQUEST_SECONDS

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.request_seconds
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
        )
        found: dict[str, Any] = applied.to_dict()
        return found
