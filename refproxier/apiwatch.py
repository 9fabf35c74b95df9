"""Reading Services, EndpointSlices, Nodes and ServiceCIDRs from a Kubernetes API (``run --kubeconfig``).

As kube-proxy's informers: each kind is listed, then watched from the list's
resourceVersion; a watch that ends is resumed from the last resourceVersion seen, and one
that fails (410 Gone: the version is too old, or the connection broke) starts over with a
new list. Services and EndpointSlices are selected with kube-proxy's label selector
(Services ``!service.kubernetes.io/service-proxy-name`` and ``spec.clusterIP!=None``, EndpointSlices ``!service.kubernetes.io/headless``), the Node
with ``metadata.name=<hostname>``.

The client is lightkube's ``AsyncClient``: the four watches run as tasks of one asyncio
loop in one thread, so lightkube's models are only ever decoded on that thread (their
lazy type resolution is not thread-safe; see ``runner._SerializedLoads``).

Generation: watches ask for bookmarks, so each kind knows the resourceVersion up to which
it has seen every change (its list, an event, a BOOKMARK). The generation handed to the
daemon, and acknowledged in ``applied/<node>``, is the lowest of the four: every change
up to it is in the state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from typing import Any

from refproxier.backend import LoadedState
from servicemodel.cluster import ClusterState
from servicemodel.names import HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL

log = logging.getLogger("refproxier.apiwatch")

WATCH_TIMEOUT = (240, 360)  # seconds, randomised like client-go's reflector (5-10 min)
RETRY_MIN, RETRY_MAX = 0.2, 5.0
#: the kinds watched; a state is handed on once each has been listed
WATCHED = ("Service", "EndpointSlice", "Node", "ServiceCIDR")


class WatchFailed(Exception):
    """A watch the server refused or ended with an ERROR event; the informer re-lists."""


class ApiSource:
    """Keeps the four kinds' objects in step with the API; ``poll`` hands the daemon a new
    ``LoadedState`` when something changed. Thread-safe."""

    def __init__(self, kubeconfig: str, hostname: str) -> None:
        self.kubeconfig = kubeconfig
        self.hostname = hostname
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], Any]] = {}
        self._rv: dict[str, int] = {}
        self._version = 0  # bumped on every change; what poll compares against
        self._built: tuple[int, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._config: Any = None

    # --- the daemon's side ---------------------------------------------------------------

    def poll(self, token: int) -> tuple[int, Any] | None:
        """``(token, LoadedState)`` if the state changed since ``token`` and every kind has
        been listed; else None."""
        with self._lock:
            if self._version == token or len(self._rv) < len(WATCHED):
                return None
            if self._built is None or self._built[0] != self._version:
                generation = min(self._rv.values())
                objs = [o for by_key in self._objects.values() for o in by_key.values()]
                self._built = (self._version, LoadedState(
                    generation, ClusterState.from_objects(objs, generation=generation)))
            return self._built

    def start(self) -> None:
        """Read the kubeconfig (a bad one is an error here, in the caller) and start
        watching on a thread of its own."""
        from lightkube import KubeConfig

        self._config = KubeConfig.from_file(self.kubeconfig)
        self._thread = threading.Thread(target=self._run, name="api-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the watcher thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            # A proxier that silently stopped watching would look alive and stale; exit so
            # the failure is visible (the harness reports the exit and this log).
            log.critical("the API watcher failed; exiting", exc_info=True)
            os._exit(1)

    async def _main(self) -> None:
        from lightkube import AsyncClient, operators
        from lightkube.resources.core_v1 import Node, Service
        from lightkube.resources.discovery_v1 import EndpointSlice
        from lightkube.resources.networking_v1 import ServiceCIDR

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = AsyncClient(config=self._config)
        # kube-proxy's selections since v1.36 (kubernetes#134623)
        svc_labels = {SERVICE_PROXY_NAME_LABEL: operators.not_exists()}
        slice_labels = {HEADLESS_LABEL: operators.not_exists()}
        log.info("watching the API at %s (kubeconfig %s)", self._config.get().cluster.server,
                 self.kubeconfig)
        tasks = [
            asyncio.create_task(self._informer(client, Service, "*", svc_labels,
                                               {"spec.clusterIP": operators.not_equal("None")})),
            asyncio.create_task(self._informer(client, EndpointSlice, "*", slice_labels, None)),
            asyncio.create_task(self._informer(client, Node, None, None,
                                               {"metadata.name": self.hostname})),
            # kube-proxy's ServiceCIDR informer (nftables mode drops unallocated ClusterIPs)
            asyncio.create_task(self._informer(client, ServiceCIDR, None, None, None)),
        ]
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await client.close()

    async def _informer(self, client: Any, res: Any, namespace: str | None,
                        labels: dict | None, fields: dict | None) -> None:
        """List, then watch from the list's resourceVersion; re-list after any failure."""
        from lightkube.core.selector import build_selector

        kind = res.__name__
        backoff = RETRY_MIN
        params = {
            "labelSelector": build_selector(labels) if labels else None,
            "fieldSelector": build_selector(fields, for_fields=True) if fields else None,
        }
        while True:
            try:
                items = client.list(res, namespace=namespace, labels=labels, fields=fields)
                listed = {_key(o): o async for o in items}
                rv = int(items.resourceVersion)
                self.replace_kind(kind, listed, rv)
                log.info("listed %d %s(s) at resourceVersion %d", len(listed), kind, rv)
                backoff = RETRY_MIN
                while True:
                    rv = await self._watch(client, res, namespace, params, rv)
                    # the server ended the watch (timeoutSeconds): resume from rv
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - 410 Gone, a broken connection, a bad reply
                log.warning("%s list/watch failed (%s: %s); listing again in %.1fs",
                            kind, type(e).__name__, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)

    async def _watch(self, client: Any, res: Any, namespace: str | None,
                     params: dict[str, Any], rv: int) -> int:
        """One watch from ``rv`` until the server ends it; returns the last resourceVersion.

        lightkube's ``watch()`` neither asks for bookmarks nor accepts them (it decodes a
        BOOKMARK's bare object as a full one, which fails on required fields), so the
        request is prepared by lightkube and the event lines are read here; objects are
        validated by ``servicemodel.load`` (lightkube's models), like state.yaml's."""
        from servicemodel.load import load_dict

        kind = res.__name__
        gc = client._client
        br = gc.prepare_request(
            "list", res=res, namespace=namespace, watch=True,
            params={**params, "resourceVersion": str(rv), "allowWatchBookmarks": "true",
                    "timeoutSeconds": random.randint(*WATCH_TIMEOUT)})
        req = gc._client.build_request(br.method, br.url, params=br.params, timeout=gc._watch_timeout)
        resp = await gc.send(req, stream=True)
        try:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")
                raise WatchFailed(f"watch {kind}: HTTP {resp.status_code}: {body[:300]}")
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                typ, obj = event.get("type"), event.get("object") or {}
                if typ == "ERROR":
                    # e.g. 410 Expired: the resourceVersion is too old; the caller re-lists
                    raise WatchFailed(f"watch {kind}: {obj.get('code')} {obj.get('reason')}: "
                                      f"{obj.get('message')}")
                rv = int(obj["metadata"]["resourceVersion"])
                if typ == "BOOKMARK":
                    self.apply_event(kind, typ, None, rv)
                else:
                    # validated as state.yaml's objects are (servicemodel.load): a ModelError
                    # names the object and field; the informer then re-lists
                    self.apply_event(kind, typ, load_dict(obj, source=f"watch {kind}"), rv)
        finally:
            await resp.aclose()
        return rv

    def replace_kind(self, kind: str, objs: dict[tuple[str, str], Any], rv: int) -> None:
        """A list of ``kind`` at ``rv``: its objects replace what was known."""
        with self._lock:
            self._objects[kind] = objs
            self._rv[kind] = rv
            self._version += 1

    def apply_event(self, kind: str, typ: str, obj: Any, rv: int) -> None:
        """One watch event of ``kind`` (a BOOKMARK has no object): ``kind`` is current up
        to ``rv``."""
        with self._lock:
            by_key = self._objects.setdefault(kind, {})
            if typ in ("ADDED", "MODIFIED"):
                by_key[_key(obj)] = obj
            elif typ == "DELETED":
                by_key.pop(_key(obj), None)
            # BOOKMARK: nothing changed up to rv for this kind
            self._rv[kind] = rv
            self._version += 1


def _key(obj: Any) -> tuple[str, str]:
    return (obj.metadata.namespace or "", obj.metadata.name)
