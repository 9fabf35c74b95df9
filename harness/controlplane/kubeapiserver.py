"""A real Kubernetes control plane: etcd and kube-apiserver, started by the harness inside
the run's lan namespace (``--control-plane kube-apiserver``), the way controller-runtime's
envtest starts them: no kubelet, no controller-manager, no scheduler.

``KubeApiServerControlPlane`` has the interface of ``StateDirControlPlane`` and
``ApiControlPlane`` (put / remove / remove_where / objects / publish -> generation /
wait_applied / published_at / state_dir / kubeconfig / start(netns, address) / stop), so
``ClusterEnv`` can use any of the three.

Processes and addresses
    Both binaries are the Go builds of ``harness.kubebins`` (``kube/<version>/bin`` in the
    cache; ``python -m harness.kubebins build v1.37.2 --component kube-apiserver,etcd``).
    They run as ``ip netns exec <lan> ...``, so they live in the lan namespace: etcd listens
    on 127.0.0.1:2379 (and its peer port 2380) of that namespace only, kube-apiserver on the
    lan router address, port 6443 (``https://192.0.2.1:6443``). Nothing listens in the root
    namespace; the harness's own connections are made from sockets created inside the lan
    namespace (``NetnsThread``). ``stop`` ends both (SIGTERM, then SIGKILL); a run killed
    before that leaves them inside its lan namespace, where the next run's reaper kills
    every process before deleting the namespace (``harness.topology.registry``).

Security, as a real cluster has it (``harness.controlplane.pki``)
    A CA; serving certificates for kube-apiserver (SANs: the lan router address(es), the
    ``kubernetes`` Service's clusterIP(s), 127.0.0.1, ``kubernetes.default.svc...``) and for
    etcd; mutual TLS between them; a service-account key pair; RBAC authorization. Two
    client identities: ``svcconf-admin`` in ``system:masters`` (the harness; kubeconfig
    ``<workdir>/kube-apiserver/admin.kubeconfig``) and ``system:kube-proxy`` (the proxier
    under test; ``{kubeconfig}`` = ``<workdir>/kubeconfig``), which the apiserver's
    bootstrap RBAC binds to ``system:node-proxier``: exactly kube-proxy's rights (list and
    watch Services, EndpointSlices, ServiceCIDRs; get/list/watch Nodes; write Events). The
    credentials are throwaway: generated for each control plane, kept in the run's work
    directory with the etcd data, protecting nothing but the run's own namespaces.

Publishing goes through the real API
    Nodes (spec, then addresses through the ``status`` subresource), Services with the
    clusterIPs and nodePorts the tests ask for (``--service-cluster-ip-range`` is the
    topology's service CIDR(s), ``--service-node-port-range`` 30000-32767), LoadBalancer
    ingress through ``services/status``, selector-less Services' EndpointSlices, updates
    (server-side apply, field manager ``svc-conformance``; status by JSON merge patch),
    deletes (EndpointSlices new-before-old, as the EndpointSlice controller replaces them). Namespaces are created
    on first use. A Service whose clusterIP changes is deleted and created again (the field
    is immutable). An object the API refuses raises ``PublishError`` naming it and quoting
    the API's causes. The apiserver's own ``default/kubernetes`` Service (clusterIP: the
    first address of the range; tests allocate from ``.1.1`` on), its EndpointSlice and the
    ``kubernetes`` ServiceCIDR exist as in a real cluster; ``objects()`` lists only what the
    harness published.

Generations and acknowledgements
    ``publish`` returns the etcd revision (resourceVersion) of its last write, as the API
    answered it (the revision after which every change of this publish is visible). A proxier declaring ``acks`` writes the resourceVersion
    it has applied to ``{state_dir}/applied/<node>``; they are compared as integers.

    The real API tells a watch of one kind that it is current only through bookmarks,
    which kube-apiserver's watch cache sends about once a minute (``defaultBookmarkFrequency``)
    and 2 s before the watch's deadline, not after every write as the harness's own API
    server does. A proxier acknowledging the lowest resourceVersion its watches have
    reached would then wait a minute for the kinds a change did not touch. So before
    waiting, ``wait_applied`` writes one *progress marker* into every stream a proxier
    watches, after every change: an annotation (``svc-conformance.io/progress``) on each
    waited-for node's Node, on the ``kubernetes`` ServiceCIDR, and on an ExternalName
    Service and its (empty) EndpointSlice,
    ``svcconf-system/svcconf-progress`` (kube-proxy and the reference proxier program
    nothing for it, and it passes kube-proxy's ``spec.clusterIP!=None`` selection). The resourceVersion waited for is the first marker's: every
    change is older, and every watch reaches it when it sees its marker.
"""

from __future__ import annotations

import base64
import copy
import http.client
import ipaddress
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from harness.controlplane.pki import CertificateAuthority, CertPair, service_account_keys
from harness.controlplane.statedir import ObjectStore

API_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
NODE_PORT_RANGE = "30000-32767"  # the default, said explicitly: tests use 30000+ and 32000+
FIELD_MANAGER = "svc-conformance"
PROGRESS_MANAGER = "svc-conformance-progress"
PROGRESS_NAMESPACE = "svcconf-system"
PROGRESS_NAME = "svcconf-progress"
PROGRESS_ANNOTATION = "svc-conformance.io/progress"
ADMIN_USER, ADMIN_GROUP = "svcconf-admin", "system:masters"
PROXIER_USER = "system:kube-proxy"  # bound to system:node-proxier by the bootstrap RBAC
STARTUP_TIMEOUT = 120.0

# kind -> (group-version path, plural, namespaced); deleted in this order, applied in reverse
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "EndpointSlice": ("apis/discovery.k8s.io/v1", "endpointslices", True),
    "Service": ("api/v1", "services", True),
    # before the Services allocated from it, after them when deleting
    "ServiceCIDR": ("apis/networking.k8s.io/v1", "servicecidrs", False),
    "Node": ("api/v1", "nodes", False),
}
SERVED_KINDS = set(RESOURCES)
_DELETE_ORDER = {k: i for i, k in enumerate(RESOURCES)}
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation",
                  "selfLink")


class ControlPlaneError(RuntimeError):
    """etcd or kube-apiserver could not be started (missing binary, early exit, no
    readiness); the message says what happened and where the logs are."""


class PublishError(ValueError):
    """kube-apiserver refused an object the harness published; the message names the
    object and quotes the API's reasons."""


def object_path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """The API path of ``kind`` (a Service, EndpointSlice or Node), or of its collection."""
    gv, plural, namespaced = RESOURCES[kind]
    path = f"/{gv}/namespaces/{quote(namespace)}/{plural}" if namespaced else f"/{gv}/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path


def binaries_missing(version: str | None = None) -> str | None:
    """Why ``--control-plane kube-apiserver`` cannot run here (which binary is missing and
    the command that builds both), or None. Tests needing the binaries skip with this."""
    from harness import kubebins

    version = version or kubebins.DEFAULT_VERSION
    for component in ("etcd", "kube-apiserver"):
        path = kubebins.binary_path(component, version)
        if not path.is_file():
            return (f"{component} {version} is not built (looked for {path}); build etcd and "
                    f"kube-apiserver with: .venv/bin/python -m harness.kubebins build {version} "
                    "--component kube-apiserver,etcd (Go 1.24+, a few minutes)")
    return None


# --- a small HTTPS client whose sockets live in the lan namespace --------------------------

class _NetnsHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, netns: str, host: str, port: int, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._netns = netns
        self._ctx = context

    def connect(self) -> None:
        from harness.topology.nsutil import NetnsThread

        worker = NetnsThread(self._netns)
        try:
            sock = worker.call(socket.create_connection, (self.host, self.port), self.timeout)
        finally:
            worker.close()
        # headers and body go out in two writes: without this, Nagle's algorithm and the
        # server's delayed ACK cost ~40 ms per request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


class KubeHttp:
    """JSON requests to kube-apiserver with a client certificate, over one keep-alive
    connection made from inside ``netns``. Thread-safe (one request at a time)."""

    def __init__(self, netns: str, host: str, port: int, ca: Path, client: CertPair,
                 timeout: float = 30.0) -> None:
        self.netns, self.host, self.port, self.timeout = netns, host, port, timeout
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(client.cert), str(client.key))
        self._conn: _NetnsHTTPSConnection | None = None
        self._lock = threading.Lock()

    def connection(self, timeout: float | None = None) -> _NetnsHTTPSConnection:
        """A new connection of its own (e.g. for a watch stream)."""
        return _NetnsHTTPSConnection(self.netns, self.host, self.port, self.context,
                                     timeout or self.timeout)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json", query: dict[str, str] | None = None
                ) -> tuple[int, Any]:
        """``(status, decoded JSON body)`` (text when the body is not JSON)."""
        if query:
            path += ("&" if "?" in path else "?") + urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self.connection()
                try:
                    self._conn.request(method, path, body=data, headers=headers)
                    resp = self._conn.getresponse()
                    raw = resp.read()
                    break
                except (OSError, http.client.HTTPException):
                    # the server closed an idle keep-alive connection: one new connection
                    self.close_locked()
                    if attempt == 2:
                        raise
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def close_locked(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


def _kubeconfig(path: Path, server: str, ca: Path, user: str, client: CertPair) -> Path:
    """A kubeconfig with the CA and a client certificate embedded (one self-contained file)."""
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "svcconf",
        "clusters": [{"name": "svcconf", "cluster": {"server": server,
                                                     "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(client.cert),
                                          "client-key-data": b64(client.key)}}],
        "contexts": [{"name": "svcconf", "context": {"cluster": "svcconf", "user": user}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def refusal_message(kind: str, namespace: str, name: str, verb: str, code: int, body: Any) -> str:
    what = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    if isinstance(body, dict):
        msg = body.get("message") or json.dumps(body)
        causes = ((body.get("details") or {}).get("causes")) or []
        lines = [f"  {c.get('field', '')}: {c.get('message', '')}" for c in causes]
        reason = body.get("reason") or ""
    else:
        msg, lines, reason = str(body)[:500], [], ""
    out = f"kube-apiserver refused to {verb} {what}: HTTP {code} {reason}: {msg}"
    return out + ("\n" + "\n".join(lines) if lines else "")


def applied_body(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    out["metadata"] = meta
    return out


def _cluster_ips(obj: dict[str, Any] | None) -> list[str]:
    spec = (obj or {}).get("spec") or {}
    return list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 JSON merge patch turning ``old`` into ``new`` (lists are replaced
    whole; a key ``new`` lacks becomes null)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k not in old or old[k] != v:
            patch[k] = merge_patch(old.get(k), v) if isinstance(v, dict) else v
    return patch


def _rv(body: Any) -> int:
    return int(((body or {}).get("metadata") or {}).get("resourceVersion") or 0)


class KubeApiServerControlPlane(ObjectStore):
    """etcd + kube-apiserver in the lan namespace; see the module docstring."""

    name = "kube-apiserver"

    def __init__(self, state_dir: Path, workdir: Path, *, service_cidrs: Sequence[str],
                 version: str | None = None, startup_timeout: float = STARTUP_TIMEOUT) -> None:
        from harness import kubebins

        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(workdir)
        self.base = self.workdir / "kube-apiserver"
        self.service_cidrs = [str(ipaddress.ip_network(c)) for c in service_cidrs]
        self.version = version or kubebins.DEFAULT_VERSION
        self.startup_timeout = startup_timeout
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._published: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._namespaces: set[str] = set()
        self.published_at: dict[int, float] = {}
        #: generation -> the resourceVersion of its first progress marker (what was waited for)
        self.ack_targets: dict[int, int] = {}
        self.generation = 0
        self.kubeconfig: Path | None = None
        self.admin_kubeconfig: Path | None = None
        self.url: str | None = None
        self.client: KubeHttp | None = None
        #: seconds since ``start`` began: "certificates" (the PKI written), "apiserver_ready"
        #: (/readyz answers 200; etcd starts meanwhile), "total" (the default/kubernetes
        #: Service and its EndpointSlice exist)
        self.startup_seconds: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._argv: dict[str, tuple[str, list[str]]] = {}
        self._markers = itertools.count(1)

    @classmethod
    def for_topology(cls, workdir: Path, topology: Any, **kw: Any) -> KubeApiServerControlPlane:
        """For ``ClusterEnv``: the topology's service CIDR(s) (both families when it is
        dual-stack), state in ``<workdir>/state``."""
        spec = topology.spec
        cidrs = [spec.service_cidr]
        if getattr(getattr(topology, "resolved", None), "dual_stack", False):
            cidrs.append(spec.service_cidr_v6)
        return cls(Path(workdir) / "state", workdir, service_cidrs=cidrs, **kw)

    # --- life cycle ------------------------------------------------------------------------

    def start(self, netns: str, address: str, port: int = API_PORT) -> None:
        """Certificates, etcd, kube-apiserver in ``netns`` on ``address:port``; returns once
        the API is ready and its own ``default/kubernetes`` Service and EndpointSlice exist."""
        from harness import kubebins

        t0 = time.monotonic()
        missing = binaries_missing(self.version)
        if missing:
            raise ControlPlaneError(f"--control-plane kube-apiserver: {missing}")
        etcd_bin = kubebins.binary_path("etcd", self.version)
        api_bin = kubebins.binary_path("kube-apiserver", self.version)
        pki = self.base / "pki"
        ca = CertificateAuthority(pki)
        self.ca = ca.cert
        kube_ips = [str(ipaddress.ip_network(c).network_address + 1) for c in self.service_cidrs]
        serving = ca.issue("apiserver", "kube-apiserver", server=True,
                           ips=[address, *kube_ips, "127.0.0.1"],
                           dns=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                "kubernetes.default.svc.cluster.local", "localhost"])
        etcd_server = ca.issue("etcd-server", "etcd", server=True, client=True,
                               ips=["127.0.0.1"], dns=["localhost"])
        etcd_client = ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        admin = ca.issue("admin", ADMIN_USER, orgs=[ADMIN_GROUP], client=True)
        proxier = ca.issue("kube-proxy", PROXIER_USER, client=True)
        sa_key, sa_pub = service_account_keys(pki)
        host = f"[{address}]" if ":" in address else address
        self.url = f"https://{host}:{port}"
        self.admin_kubeconfig = _kubeconfig(self.base / "admin.kubeconfig", self.url, ca.cert,
                                            ADMIN_USER, admin)
        self.kubeconfig = _kubeconfig(self.workdir / "kubeconfig", self.url, ca.cert,
                                      PROXIER_USER, proxier)
        self.startup_seconds["certificates"] = round(time.monotonic() - t0, 3)

        etcd_url = f"https://127.0.0.1:{ETCD_CLIENT_PORT}"
        peer_url = f"http://127.0.0.1:{ETCD_PEER_PORT}"
        self._spawn(netns, "etcd", [
            str(etcd_bin), "--name=svcconf", f"--data-dir={self.base / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=svcconf={peer_url}", "--initial-cluster-state=new",
            f"--cert-file={etcd_server.cert}", f"--key-file={etcd_server.key}",
            f"--trusted-ca-file={ca.cert}", "--client-cert-auth=true",
            # throwaway data: no fsync (as envtest users do); the run is the durability
            "--unsafe-no-fsync=true", "--log-level=warn",
        ])
        self._spawn(netns, "kube-apiserver", [
            str(api_bin),
            f"--etcd-servers={etcd_url}", f"--etcd-cafile={ca.cert}",
            f"--etcd-certfile={etcd_client.cert}", f"--etcd-keyfile={etcd_client.key}",
            f"--bind-address={address}", f"--secure-port={port}", f"--advertise-address={address}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
            f"--service-node-port-range={NODE_PORT_RANGE}",
            "--authorization-mode=RBAC", f"--cert-dir={self.base / 'apiserver-certs'}",
            "--profiling=false", "--v=1",
        ])
        self.client = KubeHttp(netns, address, port, ca.cert, admin)
        deadline = t0 + self.startup_timeout
        self._wait("kube-apiserver /readyz", deadline, self._ready)
        self.startup_seconds["apiserver_ready"] = round(time.monotonic() - t0, 3)
        self._wait("the default/kubernetes Service and its EndpointSlice", deadline,
                   self._default_service_exists)
        self.startup_seconds["total"] = round(time.monotonic() - t0, 3)
        self.generation = self._current_rv()

    def restart_apiserver(self) -> float:
        """Stop kube-apiserver and start it again on the same etcd (its watch caches start
        afresh, as after an upgrade); returns the seconds until it is ready again."""
        t0 = time.monotonic()
        self.stop_server()
        self.start_server()
        return time.monotonic() - t0

    def stop_server(self) -> None:
        """Stop kube-apiserver (SIGTERM: it ends its watches and exits); etcd keeps running
        with the cluster's data, so ``start_server`` brings back the same objects and
        resourceVersions."""
        self._terminate("kube-apiserver")
        if self.client is not None:
            self.client.close()

    def start_server(self) -> None:
        """Start kube-apiserver again with the arguments ``start`` gave it; returns once it
        is ready (/readyz)."""
        proc = self._procs.get("kube-apiserver")
        if proc is not None and proc.poll() is None:
            return
        netns, argv = self._argv["kube-apiserver"]
        self._spawn(netns, "kube-apiserver", argv)
        self._wait("kube-apiserver /readyz after a restart", time.monotonic() + self.startup_timeout,
                   self._ready)

    def _spawn(self, netns: str, name: str, argv: list[str]) -> None:
        self._argv[name] = (netns, argv)
        log_path = self.base / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=self.base)

    def log_tail(self, name: str, lines: int = 25) -> str:
        try:
            text = (self.base / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with status {proc.returncode}; last lines of "
                    f"{self.base / (name + '.log')}:\n{self.log_tail(name)}")

    def _wait(self, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        delay = 0.05
        while True:
            self.check_alive()
            try:
                if ready():
                    return
                last = "not yet"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                self.stop()
                raise ControlPlaneError(
                    f"{what} not ready within {self.startup_timeout:.0f}s ({last}); logs in "
                    f"{self.base}; kube-apiserver log:\n{self.log_tail('kube-apiserver')}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _ready(self) -> bool:
        assert self.client is not None
        code, _ = self.client.request("GET", "/readyz")
        return code == 200

    def _default_service_exists(self) -> bool:
        assert self.client is not None
        code, _ = self.client.request("GET", object_path("Service", "default", "kubernetes"))
        if code != 200:
            return False
        code, body = self.client.request(
            "GET", object_path("EndpointSlice", "default"),
            query={"labelSelector": "kubernetes.io/service-name=kubernetes"})
        return code == 200 and bool(body.get("items"))

    def stop(self) -> None:
        """SIGTERM kube-apiserver, then etcd (SIGKILL after a grace period); idempotent."""
        if self.client is not None:
            self.client.close()
        for name in ("kube-apiserver", "etcd"):
            self._terminate(name)

    def _terminate(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    # --- publishing ------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              query: dict[str, str] | None = None) -> tuple[int, Any]:
        if self.client is None:
            raise ControlPlaneError("the kube-apiserver control plane is not started")
        return self.client.request(method, path, body, content_type, query)

    def _apply(self, path: str, body: dict[str, Any], manager: str = FIELD_MANAGER) -> tuple[int, Any]:
        return self._call("PATCH", path, body, "application/apply-patch+yaml",
                          {"fieldManager": manager, "force": "true"})

    def _ensure_namespace(self, namespace: str) -> None:
        if not namespace or namespace in self._namespaces:
            return
        code, body = self._call("POST", "/api/v1/namespaces",
                                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        if code not in (200, 201, 409):
            raise PublishError(refusal_message("Namespace", "", namespace, "create", code, body))
        self._namespaces.add(namespace)

    def _delete(self, key: tuple[str, str, str]) -> int:
        kind, ns, name = key
        code, body = self._call("DELETE", object_path(kind, ns, name))
        if code not in (200, 202, 404):
            raise PublishError(refusal_message(kind, ns, name, "delete", code, body))
        return _rv(body) if code != 404 else 0

    def _put_object(self, key: tuple[str, str, str], obj: dict[str, Any],
                    old: dict[str, Any] | None) -> int:
        """Create or update one object (and its status); returns the last write's
        resourceVersion."""
        kind, ns, name = key
        self._ensure_namespace(ns)
        rvs = [0]
        if kind == "Service" and old is not None and _cluster_ips(old) != _cluster_ips(obj):
            rvs.append(self._delete(key))  # spec.clusterIP(s) is immutable: create it again
            old = None
        status = obj.get("status") or {}
        old_status = (old or {}).get("status") or {}
        body = applied_body(obj)
        code, resp = self._apply(object_path(kind, ns, name), body)
        if code == 422 and old is not None and "immutable" in json.dumps(resp):
            # another immutable field (a Node's podCIDR): delete and create, as kubectl
            # replace --force does
            rvs.append(self._delete(key))
            old_status = {}
            code, resp = self._apply(object_path(kind, ns, name), body)
        rvs.append(self._check(key, "apply", code, resp))
        if status != old_status:
            # A JSON merge patch of the status subresource, not server-side apply: SSA keys
            # a Node's status.addresses by type alone and refuses a dual-stack node's two
            # InternalIPs (the kubelet patches them, too).
            patch = {"status": merge_patch(old_status, status)}
            rvs.append(self._check(key, "write the status of", *self._call(
                "PATCH", object_path(kind, ns, name, "status"), patch,
                "application/merge-patch+json", {"fieldManager": FIELD_MANAGER})))
        return max(rvs)

    @staticmethod
    def _check(key: tuple[str, str, str], verb: str, code: int, body: Any) -> int:
        """The written object's resourceVersion, or a ``PublishError``."""
        if code >= 400:
            raise PublishError(refusal_message(*key, verb, code, body))
        return _rv(body)

    def _current_rv(self) -> int:
        """The etcd revision now: a consistent list's resourceVersion (after a write to
        another resource this waits ~0.1 s for the watch cache's progress request; publish
        uses its writes' own resourceVersions instead)."""
        code, body = self._call("GET", "/api/v1/namespaces", query={"limit": "1"})
        if code != 200:
            raise ControlPlaneError(f"kube-apiserver: listing namespaces failed: HTTP {code} {body}")
        return _rv(body)

    def publish(self) -> int:
        """Make the API hold ``objects()``: delete the Services that went away (freeing
        their clusterIPs and nodePorts), create and update Nodes, Services and
        EndpointSlices, then delete the EndpointSlices and Nodes that went away. Slices are
        replaced new-before-old, as the EndpointSlice controller does, so a watcher never
        sees a Service without endpoints in between. Returns the resourceVersion of the
        last write (a DELETE answers with the object at its deletion's revision)."""
        desired = {k: o for k, o in self._objects.items() if k[0] in SERVED_KINDS}
        gone = set(self._published) - set(desired)
        last = self.generation
        for key in sorted(k for k in gone if k[0] == "Service"):
            last = max(last, self._delete(key))
            del self._published[key]
        for key in sorted(desired, key=lambda k: (-_DELETE_ORDER[k[0]], k)):
            obj = desired[key]
            old = self._published.get(key)
            if old == obj:
                continue
            try:
                last = max(last, self._put_object(key, obj, old))
            except PublishError:
                self._published.pop(key, None)  # unknown state now: written in full next time
                raise
            self._published[key] = copy.deepcopy(obj)
        for key in sorted((k for k in gone if k[0] != "Service"), key=lambda k: (_DELETE_ORDER[k[0]], k)):
            last = max(last, self._delete(key))
            del self._published[key]
        self.generation = last
        self.published_at[self.generation] = time.monotonic()
        return self.generation

    # --- acknowledgements ------------------------------------------------------------------

    def mark_progress(self, nodes: Iterable[str]) -> int:
        """One write into every stream a proxier on ``nodes`` watches (see the module
        docstring); returns the first one's resourceVersion, which every watch reaches
        once it has seen every earlier change."""
        token = str(next(self._markers))
        self._ensure_namespace(PROGRESS_NAMESPACE)
        meta = {"name": PROGRESS_NAME, "namespace": PROGRESS_NAMESPACE,
                "annotations": {PROGRESS_ANNOTATION: token}}
        rvs = []
        for kind, body in (
            ("Service", {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                         # ExternalName: proxiers program nothing for it, yet it passes
                         # kube-proxy's spec.clusterIP!=None selection, which a headless
                         # Service does not (the marker would never reach the watch)
                         "spec": {"type": "ExternalName",
                                  "externalName": "progress.svcconf.invalid"}}),
            ("EndpointSlice", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                               "metadata": {**meta, "labels": {
                                   "kubernetes.io/service-name": PROGRESS_NAME,
                                   "endpointslice.kubernetes.io/managed-by": "svc-conformance"}},
                               "addressType": "IPv4", "endpoints": []}),
        ):
            code, resp = self._apply(object_path(kind, PROGRESS_NAMESPACE, PROGRESS_NAME), body,
                                     PROGRESS_MANAGER)
            self._check((kind, PROGRESS_NAMESPACE, PROGRESS_NAME), "write the progress marker", code, resp)
            rvs.append(_rv(resp))
        patch = {"metadata": {"annotations": {PROGRESS_ANNOTATION: token}}}
        for node in nodes:
            if ("Node", "", node) not in self._published:
                continue
            code, resp = self._call("PATCH", object_path("Node", "", node), patch,
                                    "application/merge-patch+json", {"fieldManager": PROGRESS_MANAGER})
            self._check(("Node", "", node), "write the progress marker on", code, resp)
            rvs.append(_rv(resp))
        # The ServiceCIDR stream (watched by nftables-mode proxiers): the apiserver's own
        # default one; a release without ServiceCIDRs answers 404 and has no such stream.
        code, resp = self._call("PATCH", object_path("ServiceCIDR", "", "kubernetes"), patch,
                                "application/merge-patch+json", {"fieldManager": PROGRESS_MANAGER})
        if code != 404:
            self._check(("ServiceCIDR", "", "kubernetes"), "write the progress marker on", code, resp)
            rvs.append(_rv(resp))
        return min(rvs)

    def wait_applied(self, generation: int, nodes: Iterable[str], timeout: float,
                     check_alive: Callable[[], None] = lambda: None) -> float:
        """Write the progress markers, then wait until every node has acknowledged the
        first one's resourceVersion (which is newer than ``generation``)."""
        nodes = list(nodes)
        start = time.monotonic()
        target = self.mark_progress(nodes)
        self.ack_targets[generation] = target

        def alive() -> None:
            self.check_alive()
            check_alive()

        super().wait_applied(target, nodes, timeout, alive)
        return time.monotonic() - start

    def _not_applied(self, generation: int, behind: list[str], seen: dict[str, int | None],
                     timeout: float) -> str:
        return (f"resourceVersion {generation} (the progress marker written after the last "
                f"change) was not applied within {timeout:.1f}s by node(s) {', '.join(behind)} "
                f"(last applied: {seen}) with --control-plane kube-apiserver: the proxier must "
                f"list and watch Services, EndpointSlices and its Node from {self.url} "
                f"(kubeconfig {self.kubeconfig}, user {PROXIER_USER}, TLS) and write the "
                f"resourceVersion it applied to {self.state_dir}/applied/<node>. Check that "
                "its command uses {kubeconfig}, its log, the apiserver's log in "
                f"{self.base}, or raise --timeout-scale.")
