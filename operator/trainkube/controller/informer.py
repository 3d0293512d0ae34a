"""Informers: each lists one kind of object once, then watches it from that resourceVersion,
and keeps what it saw in memory; reconciles read these caches, never the apiserver.

Why informers on the kubernetes client rather than kopf's watching or indexes: a reconcile must
not act before every cache holds the whole picture (an attempt Job not yet listed would look
deleted), so each informer says when its first listing is in (`synced`); the operator's own
writes go into the cache at once (`put`, newest resourceVersion wins), so the next reconcile
never works from an older copy of what it just wrote; and reconciles run in worker threads
that read the caches under a lock. kopf's indexes offer none of the three. Objects are kept as
the plain dicts the apiserver sent (no model objects), which keeps 2,000 jobs' worth small.

A watch that ends (server timeout) resumes from the last resourceVersion seen (bookmarks keep
it fresh); one that is too old (410 Gone) or fails lists again, reporting objects that vanished
meanwhile as deleted.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("trainkube")

Key = tuple[str, str]  # namespace, name
Object = dict[str, Any]
# (event type, the object before, the object after); DELETED has no after, ADDED no before.
Handler = Callable[[str, Object | None, Object | None], None]
IndexFn = Callable[[Object], Hashable | None]

PAGE_SIZE = 500
WATCH_SECONDS = 300
RETRY_SECONDS = 1.0


def key_of(obj: Object) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _version(obj: Object | None) -> int:
    text = ((obj or {}).get("metadata") or {}).get("resourceVersion") or "0"
    return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class Source:
    """What an informer lists and watches: a kubernetes client list call (cluster-wide, or bound
    to one namespace) and the label and field selectors that narrow it; items get
    `api_version`/`kind`, which list responses leave out."""

    list_call: Callable[..., Any]
    api_version: str
    kind: str
    label_selector: str | None = None
    field_selector: str | None = None


class Informer:
    def __init__(
        self,
        source: Source,
        handler: Handler,
        *,
        index: IndexFn | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self.source, self.handler, self.index_fn = source, handler, index
        self.request_timeout = request_timeout
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._store: dict[Key, Object] = {}
        self._index: dict[Hashable, set[Key]] = {}

    # -- reading -------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Object | None:
        with self._lock:
            return self._store.get((namespace, name))

    def by_index(self, value: Hashable) -> list[Object]:
        with self._lock:
            return [self._store[k] for k in self._index.get(value, ()) if k in self._store]

    def items(self) -> list[Object]:
        with self._lock:
            return list(self._store.values())

    # -- writing ------------------------------------------------------------------------------

    def put(self, obj: Object) -> None:
        """Take an object the operator itself just wrote, unless the cache has a newer one."""
        obj.setdefault("apiVersion", self.source.api_version)
        obj.setdefault("kind", self.source.kind)
        self._store_object(obj, force=False)

    def _store_object(self, obj: Object, *, force: bool) -> Object | None:
        """Store `obj`; the object it replaced; unchanged when the cache's copy is newer."""
        key = key_of(obj)
        with self._lock:
            old = self._store.get(key)
            if not force and _version(old) >= _version(obj):
                return old
            self._store[key] = obj
            self._reindex(key, old, obj)
            return old

    def _remove(self, key: Key) -> Object | None:
        with self._lock:
            old = self._store.pop(key, None)
            self._reindex(key, old, None)
            return old

    def _reindex(self, key: Key, old: Object | None, new: Object | None) -> None:
        if self.index_fn is None:
            return
        before = self.index_fn(old) if old is not None else None
        after = self.index_fn(new) if new is not None else None
        if before == after:
            return
        if before is not None:
            keys = self._index.get(before, set())
            keys.discard(key)
            if not keys:
                self._index.pop(before, None)
        if after is not None:
            self._index.setdefault(after, set()).add(key)

    def _emit(self, event: str, old: Object | None, new: Object | None) -> None:
        try:
            self.handler(event, old, new)
        except Exception:  # a handler's bug must not stop the watch
            log.exception("handling %s %s", event, self.source.kind)

    # -- list and watch -----------------------------------------------------------------------

    def _call(self, **kwargs: Any) -> Any:
        if self.source.label_selector:
            kwargs["label_selector"] = self.source.label_selector
        if self.source.field_selector:
            kwargs["field_selector"] = self.source.field_selector
        return self.source.list_call(_preload_content=False, **kwargs)

    def _list(self) -> str:
        """List everything (in pages); report what changed or vanished; the list's version."""
        seen: dict[Key, Object] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_request_timeout": self.request_timeout}
            if token:
                kwargs["_continue"] = token
            page = json.loads(self._call(**kwargs).data)
            for item in page.get("items") or []:
                item["apiVersion"], item["kind"] = self.source.api_version, self.source.kind
                seen[key_of(item)] = item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        with self._lock:
            gone = [k for k in self._store if k not in seen]
        for key in gone:
            self._emit("DELETED", self._remove(key), None)
        for obj in seen.values():
            old = self._store_object(obj, force=True)
            if old is None or _version(old) != _version(obj):
                self._emit("ADDED" if old is None else "MODIFIED", old, obj)
        return str((page.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str, stop: threading.Event) -> str:
        """Watch from `version` until the server ends the watch; the newest version seen."""
        response = self._call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(self.request_timeout, WATCH_SECONDS + 30),
        )
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                obj["apiVersion"], obj["kind"] = self.source.api_version, self.source.kind
                if kind == "DELETED":
                    self._emit(kind, self._remove(key_of(obj)) or obj, None)
                    continue
                old = self._store_object(obj, force=False)
                if old is not obj and _version(old) < _version(obj):
                    self._emit(kind or "MODIFIED", old, obj)
        finally:
            response.close()
            response.release_conn()
        return version

    def run(self, stop: threading.Event) -> None:
        version = ""
        while not stop.is_set():
            try:
                if not version:
                    version = self._list()
                    self.synced.set()
                version = self._watch(version, stop)
            except ApiException as error:
                if error.status != 410:
                    log.warning("watching %s: %s", self.source.kind, error.reason)
                    stop.wait(RETRY_SECONDS)
                version = ""  # too old, or broken: list again
            except Exception as error:
                log.warning("watching %s: %s", self.source.kind, error)
                version = ""
                stop.wait(RETRY_SECONDS)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run, args=(stop,), name=f"informer-{self.source.kind}", daemon=True
        )
        thread.start()
        return thread
