"""Health check node port servers (LoadBalancer services with externalTrafficPolicy: Local).

Like kube-proxy's ServiceHealthServer: one HTTP server per health check node port, bound to
all addresses of the node's namespace, answering every GET with 200 and a JSON body when the
service has local ready endpoints on this node, 503 otherwise, so a cloud load balancer
sends traffic only to nodes that can serve it without an extra hop.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("refproxier.healthcheck")


@dataclass(frozen=True)
class HealthCheckTarget:
    namespace: str
    name: str
    local_endpoints: int


def response_for(target: HealthCheckTarget) -> tuple[int, bytes]:
    body = {
        "service": {"namespace": target.namespace, "name": target.name},
        "localEndpoints": target.local_endpoints,
        "serviceProxyHealthy": True,
    }
    status = 200 if target.local_endpoints > 0 else 503
    return status, json.dumps(body).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], family: int, target: HealthCheckTarget) -> None:
        self.address_family = socket.AF_INET6 if family == 6 else socket.AF_INET
        self.target = target
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status, body = response_for(self.server.target)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Load-Balancing-Endpoint-Weight", str(self.server.target.local_endpoints))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # Probes are frequent; access logs would drown the daemon's event log.
        pass


class HealthCheckServers:
    """The set of running health check servers, reconciled with :meth:`sync`."""

    def __init__(self, family: int = 4) -> None:
        self.family = family
        self._servers: dict[int, tuple[_Server, threading.Thread]] = {}

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(self._servers)

    def sync(self, wanted: Mapping[int, HealthCheckTarget]) -> list[str]:
        """Open servers for new ports, close those no longer wanted, update the answers of
        the others. Returns error messages (e.g. a port in use); a failed port is retried on
        the next sync."""
        errors = []
        for port in sorted(set(self._servers) - set(wanted)):
            self._close(port)
            log.info("health check server on port %d closed", port)
        for port, target in sorted(wanted.items()):
            if port in self._servers:
                self._servers[port][0].target = target
                continue
            host = "::" if self.family == 6 else "0.0.0.0"
            try:
                srv = _Server((host, port), self.family, target)
            except OSError as e:
                errors.append(
                    f"health check server for {target.namespace}/{target.name} "
                    f"on port {port}: {e}"
                )
                continue
            t = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                name=f"healthcheck-{port}", daemon=True,
            )
            t.start()
            self._servers[port] = (srv, t)
            log.info(
                "health check server for %s/%s listening on port %d",
                target.namespace, target.name, port,
            )
        return errors

    def _close(self, port: int) -> None:
        srv, t = self._servers.pop(port)
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)

    def close_all(self) -> None:
        for port in list(self._servers):
            self._close(port)
