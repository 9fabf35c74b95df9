"""A minimal Kubernetes API server for what a Service proxy reads: Services, EndpointSlices
and Nodes, with list, get and watch as the real API shapes them (JSON only, plain HTTP).

``ApiControlPlane`` has the interface of ``StateDirControlPlane`` (put / remove /
remove_where / objects / publish / wait_applied / published_at), so ``ClusterEnv`` can use
either. Its HTTP server listens on the lan router address, port 6443, on a socket created
inside the topology's lan namespace (``NetnsThread``): nodes reach it over the lan, and
nothing listens in the root namespace.

Generations: ``publish`` turns the changes since the last publish into watch events, one
new global resourceVersion per changed object, and bumps the resourceVersion once more when
nothing changed, so every publish is a new generation. The generation is the resulting
global resourceVersion. A proxier declaring ``acks`` writes, to ``{state_dir}/applied/<node>``,
the resourceVersion up to which it has applied every list and watch (a watch opened with
``allowWatchBookmarks`` gets a BOOKMARK carrying the global resourceVersion after each
publish, so a watcher of one kind knows it is current even when only another kind changed).
``state.yaml`` is not written: a proxier that ignores the API never syncs.

The request handling (``ApiState.handle``, ``ApiState.watch_events``, the selectors) is pure
and tested without sockets (tests/unit/test_apiserver.py).
"""

from __future__ import annotations

import copy
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from harness.controlplane.legacy import LEGACY_RESOURCES, derived_objects, store_kind
from harness.controlplane.statedir import ObjectStore, publish_order
from harness.kubebins import DEFAULT_VERSION

API_PORT = 6443
HISTORY_LIMIT = 20000  # watch events kept for watches resuming from a resourceVersion
DEFAULT_WATCH_TIMEOUT = 1800.0  # the real API picks 30-60 min when the client gives none

# (group version path, plural) -> (kind, apiVersion, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("api/v1", "services"): ("Service", "v1", True),
    ("api/v1", "nodes"): ("Node", "v1", False),
    ("apis/discovery.k8s.io/v1", "endpointslices"): ("EndpointSlice", "discovery.k8s.io/v1", True),
    # nftables-mode kube-proxy drops traffic to unallocated ClusterIPs of these ranges
    ("apis/networking.k8s.io/v1", "servicecidrs"): ("ServiceCIDR", "networking.k8s.io/v1", False),
}
# Events a proxier may post (kube-proxy records some): accepted and dropped.
EVENT_RESOURCES = {("api/v1", "events"), ("apis/events.k8s.io/v1", "events"),
                   ("apis/events.k8s.io/v1beta1", "events")}
SERVED_KINDS = {kind for kind, _, _ in RESOURCES.values()}
# Older APIs that older proxiers read (kube-proxy 1.19-1.21: discovery.k8s.io/v1beta1
# EndpointSlices, 1.18 and older: v1 Endpoints), derived from the published objects on every
# publish when ApiState.legacy is set: harness.controlplane.legacy.


# --- selectors ----------------------------------------------------------------------------

class SelectorError(ValueError):
    """A labelSelector or fieldSelector the API would reject (400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label too, as the real API
        return labels.get(self.key) not in self.values


_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top(selector: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b``)."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Parse a labelSelector (``=``, ``==``, ``!=``, ``key``, ``!key``, ``in``, ``notin``)."""
    reqs: list[Requirement] = []
    for part in _split_top(selector or ""):
        if m := _SET_RE.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _CMP_RE.match(part):
            reqs.append(Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {part.strip()!r} in labelSelector "
                                f"{selector!r}")
    return reqs


FIELDS = ("metadata.name", "metadata.namespace")
#: field labels the real API supports per kind beyond metadata.name and metadata.namespace
#: (kube-proxy lists Services with ``spec.clusterIP!=None``)
KIND_FIELDS: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {
    "Service": {"spec.clusterIP": lambda o: (o.get("spec") or {}).get("clusterIP") or "",
                "spec.type": lambda o: (o.get("spec") or {}).get("type") or ""},
    "Node": {"spec.unschedulable": lambda o: str(bool((o.get("spec") or {}).get("unschedulable"))).lower()},
}


def parse_field_selector(selector: str | None, kind: str | None = None) -> list[Requirement]:
    """Parse a fieldSelector: ``metadata.name``, ``metadata.namespace`` and the fields the
    real API supports for ``kind``, with =, ==, !=."""
    supported = (*FIELDS, *KIND_FIELDS.get(kind or "", {}))
    reqs: list[Requirement] = []
    for part in _split_top(selector or ""):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*([-A-Za-z0-9_.:]*)\s*$", part)
        if not m:
            raise SelectorError(f"invalid selector: {part.strip()!r} in fieldSelector {selector!r}")
        if m.group(1) not in supported:
            raise SelectorError(f"field label not supported: {m.group(1)} (supported: "
                                f"{', '.join(supported)})")
        reqs.append(Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
    return reqs


def _field_values(obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    out = {"metadata.name": meta.get("name") or "", "metadata.namespace": meta.get("namespace") or ""}
    for name, get in KIND_FIELDS.get(obj.get("kind") or "", {}).items():
        out[name] = get(obj)
    return out


@dataclass(frozen=True)
class Selection:
    """Which objects one list or watch sees: a kind, maybe a namespace, selectors."""

    kind: str
    namespace: str | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()
    #: the version listed or watched (None: any); a legacy version's objects are its own
    api_version: str | None = None

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None or obj.get("kind") != self.kind:
            return False
        if self.api_version is not None and obj.get("apiVersion") != self.api_version:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and (meta.get("namespace") or "") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        fields = _field_values(obj)
        return all(r.matches(labels) for r in self.labels) and all(r.matches(fields) for r in self.fields)


# --- responses ----------------------------------------------------------------------------

REASONS = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 410: "Expired",
           422: "Invalid", 500: "InternalError"}


def status_body(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    """A ``v1 Status`` failure, as the real API returns for errors."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code}


@dataclass
class Response:
    code: int
    body: Any = None  # JSON-able, or a plain string (healthz)
    #: set for a watch: the stream of events to send (chunked), ``body`` unused
    stream: Iterator[dict[str, Any]] | None = None


@dataclass
class _Event:
    rv: int
    key: tuple[str, str, str]
    old: dict[str, Any] | None  # as served before the change (None: created)
    new: dict[str, Any] | None  # as served after (None: deleted)


@dataclass
class WatchParams:
    selection: Selection
    since: int | None  # None: start with the current objects as ADDED
    timeout: float
    bookmarks: bool
    #: a streaming list (``sendInitialEvents=true``): the current objects as ADDED, then a
    #: BOOKMARK annotated ``k8s.io/initial-events-end: "true"`` (client-go's WatchListClient
    #: waits for it before it calls its cache synced)
    send_initial_events: bool = False


INITIAL_EVENTS_END = "k8s.io/initial-events-end"


# --- the state ----------------------------------------------------------------------------

class ApiState:
    """Published objects, the global resourceVersion and the event history. Thread-safe;
    ``handle`` answers one request (without sockets)."""

    def __init__(self, history_limit: int = HISTORY_LIMIT, legacy: bool = False) -> None:
        #: also serve LEGACY_RESOURCES (for proxiers older than discovery.k8s.io/v1)
        self.legacy = legacy
        self.cond = threading.Condition()
        self.rv = 1
        self.live: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: deque[_Event] = deque(maxlen=history_limit)
        self.closed = False

    # oldest rv a watch may resume from without missing events
    def _oldest_resumable(self) -> int:
        return self.history[0].rv - 1 if len(self.history) == self.history.maxlen else 0

    def apply(self, desired: dict[tuple[str, str, str], dict[str, Any]]) -> int:
        """Make ``desired`` the served state: one resourceVersion per changed object (at
        least one bump in all); returns the new global resourceVersion."""
        if self.legacy:
            desired = {**desired, **derived_objects(desired)}
        with self.cond:
            changed = False
            # Watch events go out in this order: the sentinel's last (see publish_order).
            for key in sorted(set(self.live) | set(desired), key=publish_order):
                old, want = self.live.get(key), desired.get(key)
                if want is None:
                    self.rv += 1
                    gone = copy.deepcopy(old)
                    gone["metadata"]["resourceVersion"] = str(self.rv)
                    del self.live[key]
                    # a DELETED event carries the object at the deletion's resourceVersion
                    self.history.append(_Event(self.rv, key, gone, None))
                    changed = True
                    continue
                if old is not None and _strip_server_fields(old) == want:
                    continue
                self.rv += 1
                obj = copy.deepcopy(want)
                meta = obj.setdefault("metadata", {})
                prev = (old or {}).get("metadata") or {}
                meta["resourceVersion"] = str(self.rv)
                meta["uid"] = prev.get("uid") or str(uuid.uuid4())
                meta["creationTimestamp"] = prev.get("creationTimestamp") or time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self.live[key] = obj
                self.history.append(_Event(self.rv, key, old, obj))
                changed = True
            if not changed:
                self.rv += 1  # still a new generation (bookmarks carry it)
            self.cond.notify_all()
            return self.rv

    def _events_after(self, rv: int) -> list[_Event]:
        out = []
        for e in reversed(self.history):  # rv order: newest last
            if e.rv <= rv:
                break
            out.append(e)
        out.reverse()
        return out

    def close(self) -> None:
        """End every watch stream (the server is going away)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def reopen(self) -> None:
        """Serve watches again (the server is back), objects and history as they were."""
        with self.cond:
            self.closed = False

    # --- requests ------------------------------------------------------------------------

    def handle(self, method: str, target: str) -> Response:
        """Answer one request: ``method`` and the request target (path and query)."""
        parts = urlsplit(target)
        path = parts.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            return self._route(method, path, query)
        except SelectorError as e:
            return Response(400, status_body(400, str(e)))
        except ValueError as e:
            return Response(400, status_body(400, f"bad request: {e}"))

    def _route(self, method: str, path: str, query: dict[str, str]) -> Response:
        if path in ("healthz", "livez", "readyz"):
            return Response(200, "ok")
        segs = path.split("/") if path else []
        gv, rest = _split_group_version(segs)
        if method in ("POST", "PUT", "PATCH"):
            plural = rest[2] if len(rest) >= 3 and rest[0] == "namespaces" else (rest[0] if rest else "")
            if gv is not None and (gv, plural) in EVENT_RESOURCES:
                # created (POST) or updated (PATCH/PUT), as the real API answers; the body,
                # JSON or protobuf, is not read
                return Response(201 if method == "POST" else 200,
                                {"kind": "Event", "apiVersion": "v1", "metadata": {}})
            return Response(405, status_body(405, f"{method} is not supported on /{path}: this "
                                             "API serves Services, EndpointSlices and Nodes "
                                             "read-only (events are accepted and dropped)"))
        if method != "GET":
            return Response(405, status_body(405, f"{method} is not supported on /{path}"))
        if gv is None:
            return self._discovery(path)
        if not rest:
            return _resource_list(gv, self.legacy)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        res = RESOURCES.get((gv, plural)) or (LEGACY_RESOURCES.get((gv, plural)) if self.legacy else None)
        kind, api_version, namespaced = res or ("", "", False)
        if res is None or len(rest) > 2 or (namespace is not None and not namespaced):
            return _not_found()
        if name is not None:
            return self._get(store_kind(kind, api_version), plural, namespace or "", name)
        sel = Selection(kind, namespace, tuple(parse_label_selector(query.get("labelSelector"))),
                        tuple(parse_field_selector(query.get("fieldSelector"), kind)), api_version)
        rv = query.get("resourceVersion") or ""
        if rv not in ("", "0") and not rv.isdigit():
            # as kube-apiserver: a list is refused, a watch is opened and ends in an error
            if query.get("watch") not in _TRUE:
                return Response(400, status_body(400, f"invalid resource version: {rv}"))
            return Response(200, stream=iter([{"type": "ERROR", "object": {
                **status_body(500, f"invalid resource version: {rv}"), "reason": ""}}]))
        if query.get("watch") in _TRUE:
            since = None if rv in ("", "0") else _parse_rv(rv)
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
            bookmarks = query.get("allowWatchBookmarks") in _TRUE
            initial = query.get("sendInitialEvents") in _TRUE
            invalid = _watch_list_invalid(query, initial, bookmarks)
            if invalid:
                return Response(422, status_body(422, f"{kind}List.meta.k8s.io \"\" is invalid: "
                                                 f"{invalid}", "Invalid"))
            if initial:
                since = None  # the state now is at least as new as any rv asked for
            return Response(200, stream=self.watch_events(
                WatchParams(sel, since, timeout, bookmarks, send_initial_events=initial)))
        if query.get("sendInitialEvents") is not None:
            return Response(422, status_body(422, "sendInitialEvents: Forbidden: sendInitialEvents "
                                             "is forbidden for list", "Invalid"))
        return self._list(kind, api_version, sel)

    def _discovery(self, path: str) -> Response:
        if path == "version":
            # the release whose API it stands in for (the kube-apiserver option's default)
            major, minor, _ = DEFAULT_VERSION.lstrip("v").split(".", 2)
            return Response(200, {"major": major, "minor": minor,
                                  "gitVersion": f"{DEFAULT_VERSION}-svcconf", "platform": "linux/amd64"})
        if path == "api":
            return Response(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": []})
        if path == "apis":
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                       "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}}
                      for g in ("discovery.k8s.io", "events.k8s.io", "networking.k8s.io")]
            for g in groups if self.legacy else ():  # the versions an old client looks for
                legacy = sorted({gv.split("/")[2] for gv, _ in (*LEGACY_RESOURCES, *EVENT_RESOURCES)
                                 if gv.startswith(f"apis/{g['name']}/") and not gv.endswith("/v1")})
                g["versions"] += [{"groupVersion": f"{g['name']}/{v}", "version": v} for v in legacy]
            return Response(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        return _not_found()

    def _get(self, kind: str, plural: str, namespace: str, name: str) -> Response:
        with self.cond:
            obj = self.live.get((kind, namespace, name))
            if obj is None:
                what = f"{plural} \"{name}\" not found"
                return Response(404, {**status_body(404, what),
                                      "details": {"name": name, "kind": plural}})
            return Response(200, copy.deepcopy(obj))

    def _list(self, kind: str, api_version: str, sel: Selection) -> Response:
        # (sel.api_version keeps a legacy version's objects apart from the current one's)
        with self.cond:
            # as kube-apiserver's JSON: the list's kind names its items' kind
            items = [{k: v for k, v in copy.deepcopy(o).items() if k not in ("kind", "apiVersion")}
                     for _, o in sorted(self.live.items()) if sel.matches(o)]
            rv = self.rv
        return Response(200, {"kind": f"{kind}List", "apiVersion": api_version,
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    def watch_events(self, params: WatchParams, clock: Callable[[], float] = time.monotonic
                     ) -> Iterator[dict[str, Any]]:
        """The watch stream: events after ``params.since`` (or the current objects as ADDED),
        then live ones until the timeout; ``ERROR`` with a 410 Status when ``since`` is older
        than the history kept."""
        sel = params.selection
        deadline = clock() + params.timeout
        with self.cond:
            if params.since is None:
                sent = self.rv
                initial = [copy.deepcopy(o) for _, o in sorted(self.live.items()) if sel.matches(o)]
            else:
                if params.since < self._oldest_resumable():
                    initial = None
                else:
                    initial = []
                sent = params.since
            bookmarked = sent
        if initial is None:
            yield {"type": "ERROR", "object": status_body(
                410, f"too old resource version: {params.since} ({self._oldest_resumable()})",
                "Expired")}
            return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        if params.send_initial_events:
            yield {"type": "BOOKMARK", "object": {
                "kind": sel.kind, "apiVersion": sel.api_version or _api_version_of(sel.kind),
                "metadata": {"resourceVersion": str(sent),
                             "annotations": {INITIAL_EVENTS_END: "true"}}}}
            bookmarked = sent
        while True:
            with self.cond:
                while True:
                    if self.closed:
                        return
                    if sent < self._oldest_resumable():
                        events = None  # fell behind the bounded history: the client must re-list
                        break
                    events = self._events_after(sent)
                    current = self.rv
                    if events or (params.bookmarks and current > bookmarked):
                        break
                    left = deadline - clock()
                    if left <= 0:
                        return
                    self.cond.wait(min(left, 1.0))
            if events is None:
                yield {"type": "ERROR", "object": status_body(410, "too old resource version", "Expired")}
                return
            for e in events:
                out = _event_for(sel, e)
                if out is not None:
                    yield out
                sent = e.rv
            if params.bookmarks and current > bookmarked:
                bookmarked = sent = max(sent, current)
                kind, api_version = sel.kind, sel.api_version or _api_version_of(sel.kind)
                yield {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                                                      "metadata": {"resourceVersion": str(current)}}}
            if clock() >= deadline:
                return


_TRUE = ("1", "true", "True")


def _watch_list_invalid(query: dict[str, str], initial: bool, bookmarks: bool) -> str | None:
    """What the real API's validation says of a watch's sendInitialEvents and
    resourceVersionMatch combination (None: valid)."""
    match = query.get("resourceVersionMatch")
    if initial:
        if match != "NotOlderThan":
            return ("resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                    "resourceVersionMatch to NotOlderThan")
        if not bookmarks:
            return ("allowWatchBookmarks: Forbidden: sendInitialEvents requires setting "
                    "allowWatchBookmarks to true")
    elif match:
        return ("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch "
                "unless sendInitialEvents is provided")
    return None


def _event_for(sel: Selection, e: _Event) -> dict[str, Any] | None:
    """What a watch with ``sel`` sees of one change: an object entering the selection is
    ADDED, leaving it DELETED, as the real API's watch cache does."""
    before, after = sel.matches(e.old), sel.matches(e.new)
    if e.new is None:
        return {"type": "DELETED", "object": copy.deepcopy(e.old)} if before else None
    if before and after:
        return {"type": "MODIFIED", "object": copy.deepcopy(e.new)}
    if after:
        return {"type": "ADDED", "object": copy.deepcopy(e.new)}
    if before:
        return {"type": "DELETED", "object": copy.deepcopy(e.new)}
    return None


def _not_found() -> Response:
    """kube-apiserver's answer to a path it serves nothing at."""
    return Response(404, {**status_body(404, "the server could not find the requested resource"),
                          "details": {}})


def _api_version_of(kind: str) -> str:
    return next(av for k, av, _ in RESOURCES.values() if k == kind)


def _parse_rv(rv: str) -> int:
    try:
        return int(rv)
    except ValueError:
        raise ValueError(f"resourceVersion {rv!r} is not a resourceVersion this server issued") from None


def _split_group_version(segs: list[str]) -> tuple[str | None, list[str]]:
    if len(segs) >= 2 and segs[0] == "api" and segs[1] == "v1":
        return "api/v1", segs[2:]
    if len(segs) >= 3 and segs[0] == "apis":
        return f"apis/{segs[1]}/{segs[2]}", segs[3:]
    return None, segs


_VERBS = ["get", "list", "watch"]
_SHORT_NAMES = {"services": ["svc"], "nodes": ["no"]}  # kubectl resolves "svc" through these


def _resource_list(gv: str, legacy: bool = False) -> Response:
    resources = [{"name": plural, "singularName": kind.lower(), "namespaced": ns, "kind": kind,
                  "verbs": _VERBS, **({"shortNames": _SHORT_NAMES[plural]} if plural in _SHORT_NAMES else {})}
                 for (g, plural), (kind, _, ns) in (*RESOURCES.items(), *(LEGACY_RESOURCES.items() if legacy else ()))
                 if g == gv]
    if (gv, "events") in EVENT_RESOURCES:
        resources.append({"name": "events", "singularName": "event", "namespaced": True,
                          "kind": "Event", "verbs": ["create", "patch", "update"]})
    if not resources:
        return _not_found()
    return Response(200, {"kind": "APIResourceList", "apiVersion": "v1",
                          "groupVersion": gv.split("/", 1)[1], "resources": resources})


_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp")


def _strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    return out


# --- HTTP ---------------------------------------------------------------------------------

def _make_handler(state: ApiState, access_log: Any = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked watches, as client-go expects
        server_version = "svcconf-apiserver"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the access log below says more (content types, user agent)

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            if access_log is not None:
                access_log(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} {self.command} "
                           f"{self.path} -> {code} accept={self.headers.get('Accept')!r} "
                           f"content-type={self.headers.get('Content-Type')!r} "
                           f"agent={self.headers.get('User-Agent')!r}")

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)  # bodies (events) are dropped
            try:
                resp = state.handle(self.command, self.path)
            except Exception as e:  # noqa: BLE001 - a bug here must still answer with a Status
                resp = Response(500, status_body(500, f"internal error: {type(e).__name__}: {e}"))
            if resp.stream is None:
                if isinstance(resp.body, str):
                    data, ctype = resp.body.encode(), "text/plain; charset=utf-8"
                else:
                    data, ctype = json.dumps(resp.body).encode(), "application/json"
                self.send_response(resp.code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for event in resp.stream:
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                self.close_connection = True  # the client went away

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kw)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-request (a proxier stopped at the end of a case or
        # check) is what a server sees every day; anything else is a bug worth its trace.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Cut every open connection (watch streams included), as a server that dies does."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler


class _Server6(_Server):
    address_family = socket.AF_INET6


# --- the control plane ---------------------------------------------------------------------

def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig naming ``server``, a user without credentials and a context."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "svcconf",
        "clusters": [{"name": "svcconf", "cluster": {"server": server}}],
        "users": [{"name": "proxier", "user": {}}],
        "contexts": [{"name": "svcconf", "context": {"cluster": "svcconf", "user": "proxier"}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def server_url(address: str, port: int = API_PORT) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


@dataclass
class ApiControlPlane(ObjectStore):
    """The Kubernetes-API control plane: same interface as ``StateDirControlPlane``.

    ``start`` binds the server inside ``netns`` (the topology's lan namespace) on
    ``address``; ``kubeconfig`` is then the path proxiers get as ``{kubeconfig}``.
    """

    state_dir: Path
    workdir: Path
    state: ApiState = field(default_factory=ApiState)
    published_at: dict[int, float] = field(default_factory=dict)
    kubeconfig: Path | None = None
    url: str | None = None
    #: also serve Endpoints and discovery.k8s.io/v1beta1 EndpointSlices (kube-proxy < 1.22)
    legacy_apis: bool = False

    def __post_init__(self) -> None:
        self.state.legacy = self.state.legacy or self.legacy_apis
        self.state_dir = Path(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._server: _Server | None = None
        self._bind: tuple[str, str, int] = ("", "", API_PORT)
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        (Path(self.workdir) / "logs").mkdir(parents=True, exist_ok=True)

    name = "api"

    @property
    def generation(self) -> int:
        return self.state.rv

    def start(self, netns: str, address: str, port: int = API_PORT) -> None:
        self._bind = (netns, address, port)
        self._listen()
        self.url = server_url(address, port)
        self.kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", self.url)

    def _listen(self) -> None:
        from harness.topology.nsutil import NetnsThread

        netns, address, port = self._bind
        cls = _Server6 if ":" in address else _Server
        worker = NetnsThread(netns)
        try:
            # The listening socket is created in the lan namespace; accepted connections
            # belong to it too, whichever thread serves them.
            self._server = worker.call(cls, (address, port),
                                       _make_handler(self.state, self._log_request))
        finally:
            worker.close()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="svcconf-apiserver", daemon=True)
        self._thread.start()

    def _log_request(self, line: str) -> None:
        # one line per request, as evidence of what a proxier asked for
        with self._log_lock, open(self.workdir / "logs" / "apiserver-access.log", "a") as f:
            f.write(line + "\n")

    def stop(self) -> None:
        self.stop_server()

    def stop_server(self) -> None:
        """Take the API server down, as a crash or a restart does: new connections are
        refused, open ones (watch streams too) are cut. Its objects, resourceVersions and
        watch history stay, so ``start_server`` brings back the same API (a watch resumes
        from its last resourceVersion, as from a restarted kube-apiserver whose etcd kept
        its data)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()  # the listening socket: connections are refused now
        self.state.close()  # watch streams end
        self._server.drop_connections()
        self._server = None

    def start_server(self) -> None:
        """Serve again, on the address ``start`` bound, after ``stop_server``."""
        if self._server is not None:
            return
        self.state.reopen()
        self._listen()

    def publish(self) -> int:
        served = {k: copy.deepcopy(o) for k, o in self._objects.items() if k[0] in SERVED_KINDS}
        gen = self.state.apply(served)
        self.published_at[gen] = time.monotonic()
        return gen

    def _not_applied(self, generation: int, behind: list[str], seen: dict[str, int | None],
                     timeout: float) -> str:
        return (f"resourceVersion {generation} was not applied within {timeout:.1f}s by "
                f"node(s) {', '.join(behind)} (last applied: {seen}) with --control-plane "
                f"api: the proxier must list and watch Services, EndpointSlices and Nodes "
                f"from the API server {self.url} (kubeconfig {self.kubeconfig}; no "
                f"state.yaml is written) and write the resourceVersion it applied to "
                f"{self.state_dir}/applied/<node>. Check that its command uses "
                "{kubeconfig}, its log, or raise --timeout-scale.")
