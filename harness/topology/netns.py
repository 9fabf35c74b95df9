"""Network-namespace topology: a lan, nodes, clients and pods, built over netlink (pyroute2).

Addressing plan (IPv4 now; every address goes through ``ipaddress`` so IPv6 can follow):

* lan 192.0.2.0/24: .1 the lan "router" (an address on the lan bridge, forwarding off, so
  traffic to unknown destinations dies there), nodes .11, .12, ..., clients .101, ...,
  client secondaries .150-.199.
* cluster 10.244.0.0/16, node i's pod CIDR 10.244.i.0/24, its .1 is the pods' gateway.
* clients route the service CIDR, external IPs (198.51.100.0/24) and LB IPs
  (203.0.113.0/24) via ``client_gateway``, and each pod CIDR via its node.
* nodes: ip_forward=1, a route per other node's pod CIDR via its lan IP, default via the
  lan router (so locally generated traffic to a service IP gets past routing to the
  proxier's OUTPUT rules, as on a real node).

Sysctls set in our namespaces (never the root's), each because the test bed differs from
a real cluster: rp_filter=0 explicitly (new namespaces inherit the root's IPv4 values),
send_redirects=0 on nodes (the lan router shares the clients' segment), and
icmp_ratemask=0 on nodes and pods (one client stands in for many hosts, and the default
ICMP rate limit would turn the 7th REJECT within a second into silence).

Layout: the lan is a bridge ``br0`` in its own namespace ``<prefix>-lan0``; each node and
client has ``eth0`` with its peer on that bridge. A separate namespace (rather than a
bridge in a node) keeps every node symmetric and lets the lan be captured in one place.
Every veth is created *inside* a run namespace with its peer placed directly in another
one, so no interface ever appears in the root namespace, not even for a moment.

Dual-stack (``TopologySpec(families=("IPv4", "IPv6"))``): every host also gets an IPv6
address at the same host offset in the ``*_v6`` ranges (node 1 ``2001:db8:c0:2::b``, its pods
``fd00:10:244:1::<n>``), with the same routes for IPv6; ``Host.ip`` stays the IPv4 one and
``Host.ip_of(6)`` gives the IPv6 one.

Pods: ``routed`` = one veth per pod, pod IP /32, the gateway address on every host-side
veth and a /32 route per pod (CNI ptp, as kindnet uses); ``bridge`` = ``cni0`` bridge
holding the gateway /24, pods attached to it (CNI bridge plugin), hairpin_mode and
bridge-nf-call-iptables settable per node namespace.

Example::

    spec = TopologySpec(nodes=[NodeSpec("node-a"), NodeSpec("node-b")])
    with Topology(spec) as topo:
        pod = topo.add_pod("web-1", "node-b")
        [obs] = probe(topo.clients["client"], pod.ip, 8080)
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import socket
import subprocess
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from harness.timing import Timing, default_timing

from .alloc import Allocator
from .nsutil import (
    NetnsThread,
    is_gone_error,
    kill_pids,
    netns_inode,
    pids_in_netns,
    read_sysctl,
    run_in_netns,
    write_sysctl,
)
from .registry import Registration, make_prefix, reap_stale_runs
from .spec import (
    ClientSpec,
    IPAddress,
    NodeSpec,
    ObjectsTopology,
    PodSpec,
    TopologyError,
    TopologySpec,
    check_pod,
    topology_from_objects,
    validate,
)

if TYPE_CHECKING:
    from harness.traffic.echo import EchoServer

__all__ = [
    "Allocator", "CleanupStack", "Client", "ClientSpec", "Host", "Node", "NodeSpec",
    "ObjectsTopology", "Pod", "PodSpec", "Topology", "TopologyError", "TopologySpec",
    "topology_from_objects",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
IFA_F_NODAD = 0x02


# ------------------------------------------------------------------------ cleanup stack


class CleanupStack:
    """Undo actions run last-in first-out; "already gone" is fine, other errors are kept.

    Every error except "already gone" is logged and re-raised (as an ExceptionGroup) after
    *all* actions ran, so one failed removal never leaves the rest behind.
    """

    def __init__(self) -> None:
        self._items: list[tuple[int, str, Callable[[], Any]]] = []
        self._next = 0

    def push(self, what: str, fn: Callable[[], Any]) -> int:
        """Register ``fn`` (described by ``what``); returns a token for ``run_one``."""
        self._next += 1
        self._items.append((self._next, what, fn))
        return self._next

    def run_one(self, token: int) -> None:
        """Run and forget one action now (e.g. a pod removed during the run)."""
        for i, (tok, what, fn) in enumerate(self._items):
            if tok == token:
                del self._items[i]
                self._call(what, fn, [])
                return

    def close(self) -> None:
        errors: list[Exception] = []
        interrupted: KeyboardInterrupt | None = None
        while self._items:
            _, what, fn = self._items.pop()
            try:
                self._call(what, fn, errors)
            except KeyboardInterrupt as e:
                # a Ctrl-C during teardown must not strand the rest: finish, then re-raise
                interrupted = e
        if interrupted is not None:
            raise interrupted
        if errors:
            raise ExceptionGroup("cleanup failed", errors)

    @staticmethod
    def _call(what: str, fn: Callable[[], Any], errors: list[Exception]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - collected and re-raised after the loop
            if is_gone_error(e):
                return
            log.error("cleanup %s: %s", what, e)
            e.add_note(f"while cleaning up: {what}")
            errors.append(e)


# -------------------------------------------------------------------------------- handles


@dataclass(eq=False)
class Host:
    """A namespace-backed host: node, client or pod.

    ``timing`` is its topology's (probes from this host use it); ``cleanup`` is the stack
    that stops what the host starts (processes, its namespace thread) when the topology,
    or for a pod the pod, goes away.
    """

    name: str
    netns: str
    ip: str
    addresses: list[str]
    timing: Timing = field(default_factory=default_timing, repr=False)
    cleanup: CleanupStack = field(default_factory=lambda: CleanupStack(), repr=False)
    _worker: NetnsThread | None = field(default=None, repr=False)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.ip else socket.AF_INET

    def ip_of(self, family: int | str) -> str:
        """This host's first address of ``family`` (4, 6, "IPv4" or "IPv6"), e.g. the
        IPv6 address of a dual-stack pod; KeyError if it has none."""
        version = {"IPv4": 4, "IPv6": 6}.get(family, family)  # type: ignore[call-overload]
        for a in self.addresses:
            if ipaddress.ip_address(a).version == version:
                return a
        raise KeyError(f"{self.name} has no IPv{version} address (it has {self.addresses})")

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run a command in this namespace (``ip netns exec``); output captured as text."""
        return run_in_netns(self.netns, list(argv), **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start a process in this namespace; it is stopped when the topology closes."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], **kw)
        self.cleanup.push(f"process {proc.pid} in {self.netns}", lambda: _stop_process(proc))
        return proc

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a Python callable on a thread that lives in this namespace."""
        if self._worker is None:
            self._worker = NetnsThread(self.netns)
            self.cleanup.push(f"thread in {self.netns}", self._worker.close)
        return self._worker.call(fn, *args, **kwargs)

    def socket(self, family: int | None = None, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A socket created inside this namespace, usable from any thread."""
        return self.call(socket.socket, self.family if family is None else family, type, proto)

    def iproute(self) -> IPRoute:
        """A new pyroute2 IPRoute bound to this namespace (close it, or use ``with``)."""
        return IPRoute(netns=self.netns)

    def sysctl(self, key: str, value: str | int | None = None) -> str | None:
        """Read (or with ``value``, write then read) a sysctl inside this namespace."""
        if value is not None:
            self.call(write_sysctl, key, value)
        return self.call(read_sysctl, key)


@dataclass(eq=False)
class Node(Host):
    """A cluster node: lan ``eth0`` at ``lan_ip``, pods in ``pod_cidr``.

    ``addresses`` is ``[lan_ip, pod_gateway]``: every address the node owns.
    """

    lan_ip: str = ""
    pod_cidr: str = ""
    pod_gateway: str = ""
    index: int = 0
    #: dual-stack only: the IPv6 pod CIDR and pod gateway ("" otherwise)
    pod_cidr6: str = ""
    pod_gateway6: str = ""
    #: bridge mode: the node's bridge-nf-call-iptables value, None if the kernel lacks it
    br_netfilter: bool | None = None


@dataclass(eq=False)
class Client(Host):
    """A host outside the cluster on the lan; ``addresses[1:]`` are secondaries."""


@dataclass(eq=False)
class Pod(Host):
    """A pod on ``node`` with the echo server on ``ports``."""

    node: Node | None = None
    ports: list[tuple[int, str]] = field(default_factory=list)
    host_ifname: str = ""


def _stop_process(proc: subprocess.Popen, grace: float = 1.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _nl_retry(fn: Callable[[], T]) -> T:
    # A just-created veth peer can briefly be invisible in its new namespace's dumps; retry.
    for attempt in range(50):
        try:
            return fn()
        except IndexError:
            if attempt == 49:
                raise
            time.sleep(0.002)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------- topology

_open_topologies: weakref.WeakSet[Topology] = weakref.WeakSet()


@atexit.register
def _close_leftovers() -> None:
    # a Topology used without ``with`` and never closed: remove it at interpreter exit
    for topo in list(_open_topologies):
        with contextlib.suppress(Exception):
            topo.close()


class Topology:
    """Build ``spec`` on enter, remove everything on exit (also after errors and Ctrl-C).

    Attributes: ``nodes``, ``clients``, ``pods`` (dicts of typed handles), ``prefix``,
    ``lan_netns``, ``echo`` (the EchoServer serving every pod, when ``echo=True``).
    """

    def __init__(self, spec: TopologySpec, *, prefix: str | None = None,
                 timing: Timing | None = None, echo: bool = True) -> None:
        self.spec = spec
        self.resolved = validate(spec)  # before anything exists
        self.timing = timing or default_timing()
        self.prefix = prefix or make_prefix()
        self.alloc = Allocator(self.prefix, self.resolved)
        for n in self.resolved.nodes.values():
            self.alloc.reserve_pod_ip(n.gateway)
        for p in spec.pods:  # explicit IPs must not be handed to earlier automatic pods
            if p.ip:
                self.alloc.reserve_pod_ip(ipaddress.ip_address(p.ip))
        self.nodes: dict[str, Node] = {}
        self.clients: dict[str, Client] = {}
        self.pods: dict[str, Pod] = {}
        self.lan_netns = f"{self.prefix}-lan0"
        self.echo: EchoServer | None = None
        self._want_echo = echo
        self._cleanup = CleanupStack()
        self._pod_tokens: dict[str, int] = {}
        self._registration: Registration | None = None
        self._pod_ips: dict[IPAddress, str] = {}
        self._names: dict[str, str] = {}
        self._nl_cache: dict[str, IPRoute] = {}
        self.setup_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Topology:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Build the topology (``with`` does this; a second call does nothing)."""
        if self._registration is not None:
            return
        t0 = time.monotonic()
        reap_stale_runs()
        self._registration = Registration.create(self.prefix)
        _open_topologies.add(self)
        self._cleanup.push("registry entry", self._registration.remove)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - t0

    def keep(self) -> None:
        """Leave everything up for a person to inspect (``--keep-on-failure``): not
        removed at interpreter exit either; the next run's reaper removes it."""
        _open_topologies.discard(self)

    def close(self) -> None:
        """Remove everything this topology created (idempotent)."""
        _open_topologies.discard(self)
        self._cleanup.close()

    # -- building ----------------------------------------------------------------------

    def _create_netns(self, name: str, cleanup: CleanupStack | None = None) -> None:
        pr_netns.create(name)
        (cleanup or self._cleanup).push(f"netns {name}", lambda: self._remove_netns(name))
        if 6 in self.resolved.versions:
            # before any interface exists: no duplicate address detection on links we
            # built ourselves, so link-local addresses (used by neighbour discovery) are
            # usable at once instead of after ~1 s, which cost first probes a SYN retry
            worker = NetnsThread(name)
            try:
                for conf in ("all", "default"):
                    worker.call(write_sysctl, f"net.ipv6.conf.{conf}.accept_dad", 0)
            finally:
                worker.close()

    def _remove_netns(self, name: str) -> None:
        ino = netns_inode(name)
        if ino is None:
            return
        kill_pids(pids_in_netns([ino])[ino])
        pr_netns.remove(name)

    def _build(self) -> None:
        r = self.resolved
        lan_len = r.lan.prefixlen
        self._create_netns(self.lan_netns)
        with IPRoute(netns=self.lan_netns) as lan:
            lan.link("set", index=lan.link_lookup(ifname="lo")[0], state="up")
            lan.link("add", ifname="br0", kind="bridge")
            br = lan.link_lookup(ifname="br0")[0]
            lan.addr("add", index=br, address=str(r.router), prefixlen=lan_len,
                     **({"flags": IFA_F_NODAD} if r.lan.version == 6 else {}))
            if r.router6 is not None:
                assert r.lan6 is not None
                lan.addr("add", index=br, address=str(r.router6), prefixlen=r.lan6.prefixlen,
                         flags=IFA_F_NODAD)
            lan.link("set", index=br, state="up")

            def attach(ns: str, port: str, addrs: list[IPAddress]) -> None:
                self._create_netns(ns)
                lan.link("add", ifname=self.alloc.ifname(port), kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": ns})
                idx = lan.link_lookup(ifname=port)[0]
                lan.link("set", index=idx, master=br, state="up")
                ipr = self._nl(ns)
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                eth = _nl_retry(lambda: ipr.link_lookup(ifname="eth0")[0])
                for k, a in enumerate(addrs):
                    extra: dict[str, Any] = {}
                    plen = lan_len
                    if a.version == 6:
                        # usable at once (no duplicate address detection on our own lan),
                        # and secondaries deprecated so the kernel never picks one as a
                        # default source (IPv4 marks them secondary by itself)
                        extra = {"flags": IFA_F_NODAD}
                        if any(b.version == 6 for b in addrs[:k]):
                            extra.update(preferred_lft=0, valid_lft=0xFFFFFFFF)
                        if r.lan6 is not None and a in r.lan6:
                            plen = r.lan6.prefixlen
                    ipr.addr("add", index=eth, address=str(a), prefixlen=plen, **extra)
                ipr.link("set", index=eth, state="up")

            for rn in r.nodes.values():
                ns = self.alloc.netns_name("node", rn.index)
                six = [rn.lan_ip6] if rn.lan_ip6 is not None else []
                attach(ns, f"node{rn.index}", [rn.lan_ip, *six])
                if rn.extra:
                    self._node_extras(ns, rn.extra)
                # the pod gateway is a local address of the node too (cni0 or every host
                # veth): a node reaching a local pod, or masquerading to it, uses it
                self.nodes[rn.name] = Node(
                    name=rn.name, netns=ns, ip=str(rn.lan_ip),
                    addresses=[str(rn.lan_ip), str(rn.gateway),
                               *(str(a) for a in (rn.lan_ip6, rn.gateway6) if a is not None),
                               *map(str, rn.extra)],
                    timing=self.timing, cleanup=self._cleanup,
                    lan_ip=str(rn.lan_ip), pod_cidr=str(rn.pod_cidr),
                    pod_gateway=str(rn.gateway), index=rn.index,
                    pod_cidr6=str(rn.pod_cidr6 or ""), pod_gateway6=str(rn.gateway6 or ""))
                self._names[rn.name] = "node"
            for j, (cname, (ip, extras)) in enumerate(r.clients.items(), start=1):
                ns = self.alloc.netns_name("client", j)
                six = [r.clients6[cname]] if cname in r.clients6 else []
                attach(ns, f"client{j}", [ip, *extras, *six])
                self.clients[cname] = Client(
                    name=cname, netns=ns, ip=str(ip),
                    addresses=[str(ip), *map(str, extras), *map(str, six)],
                    timing=self.timing, cleanup=self._cleanup)
                self._names[cname] = "client"

        for node in self.nodes.values():
            self._setup_node(node)
        gw = self.nodes[r.gateway]
        for client in self.clients.values():
            ipr = self._nl(client.netns)
            for net in (r.service, r.external, r.lb):
                ipr.route("add", dst=str(net), gateway=gw.lan_ip)
            for node in self.nodes.values():
                ipr.route("add", dst=node.pod_cidr, gateway=node.lan_ip)
            self._extra_routes(ipr, None)
            if r.service6 is not None:
                ipr.route("add", dst=str(r.service6), gateway=gw.ip_of(6))
                for node in self.nodes.values():
                    ipr.route("add", dst=node.pod_cidr6, gateway=node.ip_of(6))

        if self._want_echo:
            from harness.traffic.echo import EchoServer

            self.echo = EchoServer(timing=self.timing, registration=self._registration)
            self._cleanup.push("echo server", self.echo.close)
        for p in self.spec.pods:
            self.add_pod(p.name, p.node, ports=list(p.ports), ip=p.ip)

    def _node_extras(self, ns: str, extra: list[IPAddress]) -> None:
        """A node's further addresses on its eth0: lan ones on-link, the others as host
        addresses (deprecated for IPv6, secondary for IPv4, so never a default source)."""
        lan = self.resolved.lan
        ipr = self._nl(ns)
        eth = ipr.link_lookup(ifname="eth0")[0]
        for a in extra:
            plen = lan.prefixlen if a in lan else a.max_prefixlen
            kw: dict[str, Any] = ({"flags": IFA_F_NODAD, "preferred_lft": 0,
                                   "valid_lft": 0xFFFFFFFF} if a.version == 6 else {})
            ipr.addr("add", index=eth, address=str(a), prefixlen=plen, **kw)

    def _extra_routes(self, ipr: IPRoute, skip: str | None) -> None:
        """Host routes to the nodes' further addresses outside the lan, via their node."""
        r = self.resolved
        for rn in r.nodes.values():
            if rn.name == skip:
                continue
            for a in rn.extra:
                if a not in r.lan:
                    ipr.route("add", dst=f"{a}/{a.max_prefixlen}", gateway=str(rn.lan_ip))

    def _setup_node(self, node: Node) -> None:
        r = self.resolved
        v6 = r.lan.version == 6
        node.sysctl("net.ipv6.conf.all.forwarding" if v6 else "net.ipv4.ip_forward", 1)
        if r.dual_stack:
            node.sysctl("net.ipv6.conf.all.forwarding", 1)
        # explicit values instead of whatever the root namespace's defaults leak in
        node.sysctl("net.ipv4.conf.all.rp_filter", 0)
        node.sysctl("net.ipv4.conf.default.rp_filter", 0)
        # the lan router sits on the clients' own segment, so a gateway node forwarding
        # unmatched service traffic to it would answer with ICMP redirects: noise
        node.sysctl("net.ipv4.conf.all.send_redirects", 0)
        node.sysctl("net.ipv4.conf.default.send_redirects", 0)
        node.sysctl("net.ipv4.conf.eth0.send_redirects", 0)
        # One client stands in for many hosts: with the default ICMP rate limit (burst 6,
        # then 1/s per destination) the 7th REJECT in a second would look like a DROP.
        node.sysctl("net.ipv4.icmp_ratemask", 0)
        # the same for ICMPv6 errors (no ratemask there to clear: a zero interval lets each
        # one through); three rejected UDP probes in a row lost their third reply to it
        node.sysctl("net.ipv6.icmp.ratelimit", 0)
        ipr = self._nl(node.netns)
        ipr.route("add", dst="default", gateway=str(r.router))
        for other in self.nodes.values():
            if other is not node:
                ipr.route("add", dst=other.pod_cidr, gateway=other.lan_ip)
        self._extra_routes(ipr, node.name)
        if r.router6 is not None:
            ipr.route("add", dst="::/0", gateway=str(r.router6))
            for other in self.nodes.values():
                if other is not node:
                    ipr.route("add", dst=other.pod_cidr6, gateway=other.ip_of(6))
        if self.spec.pod_network == "bridge":
            ipr.link("add", ifname="cni0", kind="bridge", br_mcast_snooping=0)
            br = ipr.link_lookup(ifname="cni0")[0]
            pc = ipaddress.ip_network(node.pod_cidr)
            nodad = {"flags": IFA_F_NODAD} if pc.version == 6 else {}
            ipr.addr("add", index=br, address=node.pod_gateway, prefixlen=pc.prefixlen,
                     **nodad)
            if node.pod_cidr6:
                ipr.addr("add", index=br, address=node.pod_gateway6,
                         prefixlen=ipaddress.ip_network(node.pod_cidr6).prefixlen,
                         flags=IFA_F_NODAD)
            ipr.link("set", index=br, state="up")
        if self.spec.pod_network == "bridge":
            key = "net.bridge.bridge-nf-call-iptables"
            if self.spec.br_netfilter is not None and node.sysctl(key) is not None:
                node.sysctl(key, int(self.spec.br_netfilter))
            cur = node.sysctl(key)
            node.br_netfilter = None if cur is None else cur == "1"
            if self.spec.br_netfilter and cur is None:
                raise TopologyError(
                    "TopologySpec", "br_netfilter", "this kernel has no per-namespace "
                    "net.bridge.bridge-nf-call-iptables (br_netfilter not loaded)",
                    "load br_netfilter on the machine (modprobe br_netfilter) or leave "
                    "br_netfilter=None")

    # -- pods ----------------------------------------------------------------------------

    def add_pod(self, name: str, node: str | Node,
                ports: Sequence[tuple[int, str]] = ((8080, "tcp"), (8080, "udp")),
                ip: str | None = None) -> Pod:
        """Create a pod on ``node`` serving the echo server on ``ports``; returns its handle.

        Raises ``TopologyError`` (nothing created) for a bad name, node, port or IP.
        """
        node_name = node.name if isinstance(node, Node) else node
        ports_t = tuple((int(p), str(proto).lower()) for p, proto in ports)
        spec = PodSpec(name=name, node=node_name, ports=ports_t, ip=ip)
        explicit = check_pod(self.resolved, spec, self._pod_ips, dict(self._names))
        n = self.nodes[node_name]
        pod_ip = explicit or self.alloc.pod_ip(n.name, ipaddress.ip_network(n.pod_cidr))
        self.alloc.reserve_pod_ip(pod_ip)
        self._pod_ips[pod_ip] = f"pod {name!r}"
        self._names[name] = "pod"
        k = self.alloc.next_index("pod")
        ns = self.alloc.netns_name("pod", k)
        host_if = self.alloc.ifname(f"veth{k}")
        addrs = [str(pod_ip)]
        if n.pod_cidr6:  # dual-stack: the IPv6 twin at the same host offset
            addrs.append(str(self.resolved.v6_twin(pod_ip, ipaddress.ip_network(n.pod_cidr),
                                                   ipaddress.ip_network(n.pod_cidr6))))
        # everything of this pod is undone by one token, so remove_pod can run it mid-run
        sub = CleanupStack()
        pod = Pod(name=name, netns=ns, ip=str(pod_ip), addresses=addrs, timing=self.timing,
                  cleanup=sub, node=n, ports=list(ports_t), host_ifname=host_if)
        token = self._cleanup.push(f"pod {name}", sub.close)
        self._pod_tokens[name] = token
        self.pods[name] = pod

        def forget() -> None:
            self.pods.pop(name, None)
            self._pod_ips.pop(pod_ip, None)
            self._names.pop(name, None)
        sub.push("forget pod", forget)
        try:
            self._create_netns(ns, sub)
            self._wire_pod(pod, n, pod_ip, sub)
            pod.sysctl("net.ipv4.icmp_ratemask", 0)  # see _setup_node
            if self.echo is not None:
                self.echo.add_pod(pod)
                sub.push(f"echo for {name}", lambda: self.echo and self.echo.remove_pod(name))
        except BaseException:
            self._cleanup.run_one(token)
            raise
        return pod

    def _wire_pod(self, pod: Pod, n: Node, pod_ip: IPAddress, sub: CleanupStack) -> None:
        pc = ipaddress.ip_network(n.pod_cidr)
        bridge = self.spec.pod_network == "bridge"
        ipr = self._nl(n.netns)
        ipr.link("add", ifname=pod.host_ifname, kind="veth",
                 peer={"ifname": "eth0", "net_ns_fd": pod.netns})
        sub.push(f"veth {pod.host_ifname} in {n.netns}",
                 lambda: self._del_link(n.netns, pod.host_ifname))
        idx = ipr.link_lookup(ifname=pod.host_ifname)[0]
        if bridge:
            br = ipr.link_lookup(ifname="cni0")[0]
            ipr.link("set", index=idx, master=br)
            if self.spec.hairpin_mode:
                ipr.brport("set", index=idx, mode=1)  # IFLA_BRPORT_MODE = hairpin
            ipr.link("set", index=idx, state="up")
        else:
            ipr.addr("add", index=idx, address=n.pod_gateway,
                     prefixlen=pc.max_prefixlen,
                     **({"flags": IFA_F_NODAD} if pc.version == 6 else {}))
            ipr.link("set", index=idx, state="up")
            ipr.route("add", dst=f"{pod_ip}/{pc.max_prefixlen}", oif=idx, scope=253)
            if n.pod_cidr6:
                ipr.addr("add", index=idx, address=n.pod_gateway6, prefixlen=128,
                         flags=IFA_F_NODAD)
                ipr.route("add", dst=f"{pod.ip_of(6)}/128", oif=idx)
        with pod.iproute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            eth = _nl_retry(lambda: ipr.link_lookup(ifname="eth0")[0])
            plen = pc.prefixlen if bridge else pc.max_prefixlen
            nodad = {"flags": IFA_F_NODAD} if pod_ip.version == 6 else {}
            ipr.addr("add", index=eth, address=str(pod_ip), prefixlen=plen, **nodad)
            ipr.link("set", index=eth, state="up")
            if not bridge:
                ipr.route("add", dst=f"{n.pod_gateway}/{pc.max_prefixlen}", oif=eth,
                          scope=253)
            ipr.route("add", dst="default", gateway=n.pod_gateway)
            if n.pod_cidr6:
                pc6 = ipaddress.ip_network(n.pod_cidr6)
                ipr.addr("add", index=eth, address=pod.ip_of(6),
                         prefixlen=pc6.prefixlen if bridge else 128, flags=IFA_F_NODAD)
                if not bridge:
                    ipr.route("add", dst=f"{n.pod_gateway6}/128", oif=eth)
                ipr.route("add", dst="::/0", gateway=n.pod_gateway6)

    def _nl(self, ns: str) -> IPRoute:
        """The topology's netlink handle for a lan/node/client namespace (opened once).

        pyroute2 opens a netlink socket in another namespace through a helper process
        (~20 ms); reusing one per namespace halves the set-up time. It is closed before its
        namespace is removed (pushed onto the cleanup stack after the namespace).
        """
        ipr = self._nl_cache.get(ns)
        if ipr is None:
            ipr = self._nl_cache[ns] = IPRoute(netns=ns)

            def close() -> None:
                self._nl_cache.pop(ns, None)
                ipr.close()
            self._cleanup.push(f"netlink socket in {ns}", close)
        return ipr

    def _del_link(self, ns: str, ifname: str) -> None:
        ipr = self._nl(ns)
        found = ipr.link_lookup(ifname=ifname)
        if found:
            ipr.link("del", index=found[0])

    def remove_pod(self, name: str) -> None:
        """Stop the pod's echo listeners and delete its namespace and veth."""
        if name not in self.pods:
            raise KeyError(f"no pod {name!r}; pods are {sorted(self.pods)}")
        self._cleanup.run_one(self._pod_tokens.pop(name))

    def hairpin(self, pod: str) -> bool:
        """Whether hairpin_mode is on for ``pod``'s bridge port (bridge mode only)."""
        p = self.pods[pod]
        assert p.node is not None
        ipr = self._nl(p.node.netns)
        idx = ipr.link_lookup(ifname=p.host_ifname)[0]
        msgs = ipr.brport("show", index=idx)
        return bool(msgs[0].get_nested("IFLA_PROTINFO", "IFLA_BRPORT_MODE"))

    def describe(self) -> str:
        """Where everything is, with the command to enter each namespace."""
        lines = [f"topology {self.prefix} (lan {self.resolved.lan} in {self.lan_netns})"]
        for h in [*self.nodes.values(), *self.clients.values(), *self.pods.values()]:
            lines.append(f"  {type(h).__name__.lower():6} {h.name:20} {h.ip:15} "
                         f"ip netns exec {h.netns} bash")
        return "\n".join(lines)

    @property
    def hosts(self) -> dict[str, Host]:
        return {**self.nodes, **self.clients, **self.pods}


