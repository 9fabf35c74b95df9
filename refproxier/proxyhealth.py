"""The proxier's own health server: kube-proxy's ``/healthz`` and ``/livez`` (port 10256).

As kube-proxy's ``ProxyHealthServer`` (pkg/proxy/healthcheck/proxy_health.go, KEP-3836):

* the proxier is healthy unless an update has been queued for longer than the health
  timeout without a sync applying it (``queued_update`` / ``updated``, per IP family);
* the node is *eligible* unless its Node object has a deletionTimestamp or the taint
  ``ToBeDeletedByClusterAutoscaler`` (``sync_node``); it is eligible until the first Node
  event says otherwise;
* ``/healthz`` answers 200 when healthy and eligible, else 503; ``/livez`` ignores the node
  (a node being drained keeps a live kube-proxy). Both write a JSON body with
  ``lastUpdated`` and ``currentTime`` (RFC 3339, Go's time format); ``/healthz`` adds
  ``nodeEligible``. A healthy answer's ``lastUpdated`` is the current time, as kube-proxy's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("refproxier.proxyhealth")

TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"
DEFAULT_BIND_ADDRESS = "0.0.0.0:10256"
DEFAULT_HEALTH_TIMEOUT = 120.0  # kube-proxy: 2 x --iptables-sync-period (60 s default)


def node_eligible(node: Any) -> bool:
    """kube-proxy's ``SyncNode``: not being deleted and not tainted ToBeDeletedByClusterAutoscaler."""
    meta = getattr(node, "metadata", None)
    if meta is not None and getattr(meta, "deletionTimestamp", None):
        return False
    spec = getattr(node, "spec", None)
    return not any(t.key == TO_BE_DELETED_TAINT for t in (getattr(spec, "taints", None) or []))


def _rfc3339(t: float | None) -> str:
    if t is None:  # Go's zero time.Time
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class ProxyHealth:
    """The state both endpoints answer from; thread-safe, clock injectable (wall time)."""

    def __init__(self, health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.health_timeout = health_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._last_updated: dict[int, float] = {}
        self._oldest_queued: dict[int, float] = {}
        self._eligible = True

    def queued_update(self, family: int) -> None:
        with self._lock:
            self._oldest_queued.setdefault(family, self.clock())

    def updated(self, family: int) -> None:
        with self._lock:
            self._oldest_queued.pop(family, None)
            self._last_updated[family] = self.clock()

    def sync_node(self, node: Any) -> None:
        with self._lock:
            self._eligible = node_eligible(node)

    def healthy(self) -> tuple[bool, float | None]:
        """(healthy, lastUpdated) as kube-proxy's ``isHealthy``."""
        with self._lock:
            now = self.clock()
            last: float | None = None
            for family, updated in self._last_updated.items():
                last = updated if last is None else max(last, updated)
                queued = self._oldest_queued.get(family)
                if queued is not None and now - queued >= self.health_timeout:
                    return False, updated
            return True, last

    def eligible(self) -> bool:
        with self._lock:
            return self._eligible

    def answer(self, path: str) -> tuple[int, str]:
        """(status, body) for a GET of ``path`` (404 for any other path)."""
        route = path.split("?", 1)[0]
        if route not in ("/healthz", "/livez"):
            return 404, "404 page not found\n"
        healthy, last = self.healthy()
        now = self.clock()
        if route == "/healthz":
            eligible = self.eligible()
            ok = healthy and eligible
            last = now if ok else last
            return (200 if ok else 503,
                    f'{{"lastUpdated": "{_rfc3339(last)}","currentTime": "{_rfc3339(now)}", '
                    f'"nodeEligible": {"true" if eligible else "false"}}}')
        last = now if healthy else last
        return (200 if healthy else 503,
                f'{{"lastUpdated": "{_rfc3339(last)}","currentTime": "{_rfc3339(now)}"}}')


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status, body = self.server.health.answer(self.path)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status != 404 else "text/plain")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], health: ProxyHealth) -> None:
        self.health = health
        super().__init__(addr, _Handler)


def parse_bind_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as kube-proxy's --healthz-bind-address; ValueError names it."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--healthz-bind-address {text!r}: write HOST:PORT, e.g. {DEFAULT_BIND_ADDRESS}")
    return host.strip("[]") or "0.0.0.0", int(port)


class ProxyHealthServer:
    """``ProxyHealth`` served over HTTP on a thread; ``close`` stops it."""

    def __init__(self, health: ProxyHealth, bind_address: str = DEFAULT_BIND_ADDRESS) -> None:
        self.health = health
        self.bind_address = bind_address
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        host, port = parse_bind_address(self.bind_address)
        self._server = _Server((host, port), self.health)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="proxy-healthz",
                                        daemon=True)
        self._thread.start()
        log.info("health server (/healthz, /livez) listening on %s", self.bind_address)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
