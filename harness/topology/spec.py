"""Topology specifications and their validation (pure: no root, nothing created).

Every problem found here is a ``TopologyError`` that names the object and the field and says
what to do, raised before a single namespace exists.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PodNetwork = Literal["routed", "bridge"]
PROTOCOLS = ("tcp", "udp", "sctp")
# Kubernetes object names (RFC 1123 subdomain); namespace and interface names are derived
# from indexes, but names also appear in echo replies, reports and dict keys.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
NAME_MAX = 253

# Host numbering on the lan (see addressing plan in the module docs of netns.py)
LAN_ROUTER_HOST = 1
LAN_NODE_BASE = 10  # node i (1-based) gets .10+i
LAN_CLIENT_BASE = 100  # client j gets .100+j
LAN_SECONDARY_FIRST, LAN_SECONDARY_LAST = 150, 199


class TopologyError(ValueError):
    """A topology specification that cannot be built; names object, field and remedy."""

    def __init__(self, obj: str, field_name: str, problem: str, hint: str = "") -> None:
        self.obj = obj
        self.field = field_name
        self.problem = problem
        self.hint = hint
        msg = f"{obj}: field {field_name!r}: {problem}"
        if hint:
            msg += f" -- {hint}"
        super().__init__(msg)


@dataclass(frozen=True)
class NodeSpec:
    """A cluster node. ``lan_ip``/``pod_cidr`` default to the addressing plan."""

    name: str
    lan_ip: str | None = None
    pod_cidr: str | None = None
    #: further addresses on the node's lan interface (a keepalived VIP, an externalIP or
    #: LB IP assigned to the node): in the lan, or /32 (/128) in the external-IP or LB
    #: range, which clients and the other nodes then route via this node
    extra_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientSpec:
    """A host outside the cluster on the lan; ``extra_addresses`` secondaries (.150-.199)."""

    name: str
    extra_addresses: int = 0
    ip: str | None = None


@dataclass(frozen=True)
class PodSpec:
    """A pod: a namespace on ``node`` with the echo server on ``ports``."""

    name: str
    node: str
    ports: tuple[tuple[int, str], ...] = ((8080, "tcp"), (8080, "udp"))
    ip: str | None = None


@dataclass(frozen=True)
class TopologySpec:
    """What to build. Example::

        spec = TopologySpec(nodes=[NodeSpec("node-a"), NodeSpec("node-b")],
                            clients=[ClientSpec("client", extra_addresses=3)],
                            pod_network="bridge", hairpin_mode=True)
    """

    nodes: Sequence[NodeSpec]
    clients: Sequence[ClientSpec] = (ClientSpec("client"),)
    pods: Sequence[PodSpec] = ()
    pod_network: PodNetwork = "routed"
    #: bridge mode: hairpin_mode on the pods' bridge ports
    hairpin_mode: bool = False
    #: bridge mode: net.bridge.bridge-nf-call-iptables in the node ns; None = kernel default
    br_netfilter: bool | None = None
    lan_cidr: str = "192.0.2.0/24"
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    external_cidr: str = "198.51.100.0/24"
    lb_cidr: str = "203.0.113.0/24"
    #: node that clients route the service/external/LB ranges through (default: first node)
    client_gateway: str | None = None
    #: prefix length of the per-node pod CIDRs carved from cluster_cidr (IPv4 default)
    node_cidr_prefixlen: int = 24
    #: ``("IPv4", "IPv6")`` builds dual-stack hosts: every node, client and pod also gets an
    #: IPv6 address from the ``*_v6`` ranges below, at the same host offset as its IPv4
    #: one, with routes for both families. Empty: single-stack, the family of the CIDRs.
    families: tuple[str, ...] = ()
    lan_cidr_v6: str = "2001:db8:c0:2::/64"  # documentation prefix: clients are outside
    cluster_cidr_v6: str = "fd00:10:244::/56"
    service_cidr_v6: str = "fd00:10:96::/108"
    node_cidr_prefixlen_v6: int = 64


#: The IPv6 single-stack addressing plan (``TopologySpec(**IPV6_PLAN, nodes=...)``): the
#: hosts outside the cluster (lan, external IPs, load-balancer IPs) in the documentation
#: prefix 2001:db8::/32, pods and Services in unique-local ranges like a cluster's.
IPV6_PLAN: dict[str, Any] = {
    "lan_cidr": "2001:db8:c0:2::/64",
    "cluster_cidr": "fd00:10:244::/56",
    "service_cidr": "fd00:10:96::/108",
    "external_cidr": "2001:db8:c6:33::/64",
    "lb_cidr": "2001:db8:cb:71::/64",
    "node_cidr_prefixlen": 64,
}


# --------------------------------------------------------------------------- validation


def _net(obj: str, fld: str, value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=True)
    except (ValueError, TypeError) as e:
        raise TopologyError(
            obj, fld, f"{value!r} is not a valid CIDR ({e})",
            "write a network address with prefix length and no host bits, e.g. 10.244.0.0/16",
        ) from None


def _addr(obj: str, fld: str, value: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise TopologyError(
            obj, fld, f"{value!r} is not an IP address", "write a plain address, e.g. 10.244.1.5"
        ) from None


def _name(obj: str, value: Any) -> None:
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > NAME_MAX:
        raise TopologyError(
            obj, "name", f"{value!r} is not a valid name",
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or "
            f"digit, at most {NAME_MAX} characters (a Kubernetes object name)",
        )


def usable_hosts(net: IPNetwork) -> tuple[int, int]:
    """First and last host offsets usable for pods (network, gateway and broadcast excluded)."""
    last = net.num_addresses - (2 if net.version == 4 else 1)
    return 2, last


@dataclass
class ResolvedNode:
    name: str
    index: int
    lan_ip: IPAddress
    pod_cidr: IPNetwork
    gateway: IPAddress
    #: dual-stack only: the second family's lan IP, pod CIDR and pod gateway
    lan_ip6: IPAddress | None = None
    pod_cidr6: IPNetwork | None = None
    gateway6: IPAddress | None = None
    #: ``NodeSpec.extra_addresses``, resolved
    extra: list[IPAddress] = field(default_factory=list)


@dataclass
class Resolved:
    """A validated spec with every default filled in (what the builder consumes)."""

    spec: TopologySpec
    lan: IPNetwork
    cluster: IPNetwork
    service: IPNetwork
    external: IPNetwork
    lb: IPNetwork
    router: IPAddress
    nodes: dict[str, ResolvedNode] = field(default_factory=dict)
    clients: dict[str, tuple[IPAddress, list[IPAddress]]] = field(default_factory=dict)
    gateway: str = ""
    #: dual-stack only (``spec.families`` has two): the IPv6 ranges, router and client IPs
    lan6: IPNetwork | None = None
    cluster6: IPNetwork | None = None
    service6: IPNetwork | None = None
    router6: IPAddress | None = None
    clients6: dict[str, IPAddress] = field(default_factory=dict)

    @property
    def dual_stack(self) -> bool:
        return self.lan6 is not None

    @property
    def versions(self) -> tuple[int, ...]:
        """IP versions of the hosts' addresses, primary first."""
        return (self.lan.version, 6) if self.dual_stack else (self.lan.version,)

    def v6_twin(self, ip: IPAddress, net: IPNetwork, net6: IPNetwork) -> IPAddress:
        """The IPv6 address at ``ip``'s host offset in ``net``, inside ``net6``."""
        return net6.network_address + (int(ip) - int(net.network_address))


def validate(spec: TopologySpec) -> Resolved:
    """Check ``spec`` completely; return it resolved. Raises ``TopologyError``."""
    topo = "TopologySpec"
    if spec.pod_network not in ("routed", "bridge"):
        raise TopologyError(topo, "pod_network", f"{spec.pod_network!r} is unknown",
                            "use 'routed' or 'bridge'")
    nets = {
        f: _net(topo, f, getattr(spec, f))
        for f in ("lan_cidr", "cluster_cidr", "service_cidr", "external_cidr", "lb_cidr")
    }
    families = {n.version for n in nets.values()}
    if len(families) != 1:
        raise TopologyError(topo, "cluster_cidr", "CIDRs mix IPv4 and IPv6",
                            "give IPv4 ranges and set families=('IPv4', 'IPv6') for "
                            "dual-stack (the IPv6 ranges are the *_v6 fields)")
    fams = tuple(spec.families)
    primary = "IPv4" if 4 in families else "IPv6"
    if fams not in ((), (primary,), ("IPv4", "IPv6")) or (len(fams) == 2 and primary != "IPv4"):
        raise TopologyError(topo, "families", f"{fams!r} does not fit CIDRs of {primary}",
                            "use (), a single family matching the CIDRs, or ('IPv4', 'IPv6') "
                            "with IPv4 CIDRs (dual-stack, IPv4 primary)")
    nets6: dict[str, IPNetwork] = {}
    if len(fams) == 2:
        nets6 = {f: _net(topo, f, getattr(spec, f))
                 for f in ("lan_cidr_v6", "cluster_cidr_v6", "service_cidr_v6")}
        for f, n in nets6.items():
            if n.version != 6:
                raise TopologyError(topo, f, f"{n} is not IPv6", "give an IPv6 range")
        c6 = nets6["cluster_cidr_v6"]
        if not (c6.prefixlen <= spec.node_cidr_prefixlen_v6 <= 120):
            raise TopologyError(topo, "node_cidr_prefixlen_v6", f"/{spec.node_cidr_prefixlen_v6}"
                                f" does not fit in {c6}", "pick a longer prefix than the cluster's")
        nets.update(nets6)
    items = list(nets.items())
    for i, (fa, na) in enumerate(items):
        for fb, nb in items[i + 1:]:
            if na.overlaps(nb):
                raise TopologyError(topo, fb, f"{nb} overlaps {fa} {na}",
                                    "give every range its own, disjoint CIDR")
    lan, cluster = nets["lan_cidr"], nets["cluster_cidr"]
    if not spec.nodes:
        raise TopologyError(topo, "nodes", "no nodes", "give at least one NodeSpec")
    if not (cluster.prefixlen <= spec.node_cidr_prefixlen <= cluster.max_prefixlen - 2):
        raise TopologyError(topo, "node_cidr_prefixlen", f"/{spec.node_cidr_prefixlen} does "
                            f"not fit in {cluster}", "pick a longer prefix than the cluster's")
    r = Resolved(spec, lan, cluster, nets["service_cidr"], nets["external_cidr"],
                 nets["lb_cidr"], lan.network_address + LAN_ROUTER_HOST)
    if nets6:
        r.lan6, r.cluster6 = nets6["lan_cidr_v6"], nets6["cluster_cidr_v6"]
        r.service6 = nets6["service_cidr_v6"]
        r.router6 = r.lan6.network_address + LAN_ROUTER_HOST
        subnets6 = list(r.cluster6.subnets(new_prefix=spec.node_cidr_prefixlen_v6))
    seen_names: dict[str, str] = {}
    lan_used: dict[IPAddress, str] = {r.router: "the lan router"}
    subnets = list(cluster.subnets(new_prefix=spec.node_cidr_prefixlen))

    def claim_name(kind: str, name: str) -> str:
        obj = f"{kind} {name!r}"
        _name(obj, name)
        if name in seen_names:
            raise TopologyError(obj, "name", f"duplicate: also used by {seen_names[name]}",
                                "give every node, client and pod a unique name")
        seen_names[name] = obj
        return obj

    def claim_lan(obj: str, fld: str, ip: IPAddress) -> None:
        if ip not in lan or ip in (lan.network_address, lan.broadcast_address):
            raise TopologyError(obj, fld, f"{ip} is not a host address of the lan {lan}",
                                "pick an address inside lan_cidr")
        if ip in lan_used:
            raise TopologyError(obj, fld, f"{ip} is already used by {lan_used[ip]}",
                                "give every host its own lan address")
        lan_used[ip] = obj

    for i, n in enumerate(spec.nodes, start=1):
        obj = claim_name("node", n.name)
        ip = _addr(obj, "lan_ip", n.lan_ip) if n.lan_ip else lan.network_address + (
            LAN_NODE_BASE + i)
        claim_lan(obj, "lan_ip", ip)
        if n.pod_cidr:
            pc = _net(obj, "pod_cidr", n.pod_cidr)
        elif i < len(subnets):
            pc = subnets[i]
        else:
            raise TopologyError(obj, "pod_cidr", f"cluster_cidr {cluster} has no room left",
                                "use a larger cluster_cidr or fewer nodes")
        if pc.version != cluster.version or not pc.subnet_of(cluster):  # type: ignore[arg-type]
            raise TopologyError(obj, "pod_cidr", f"{pc} is not inside cluster_cidr {cluster}",
                                "pick a pod CIDR inside the cluster CIDR")
        if pc.num_addresses < 4:
            raise TopologyError(obj, "pod_cidr", f"{pc} is too small", "use at least a /30")
        for other in r.nodes.values():
            if pc.overlaps(other.pod_cidr):
                raise TopologyError(obj, "pod_cidr", f"{pc} overlaps node {other.name!r}'s "
                                    f"pod CIDR {other.pod_cidr}",
                                    "give every node a disjoint pod CIDR")
        rn = r.nodes[n.name] = ResolvedNode(n.name, i, ip, pc, pc.network_address + 1)
        if r.lan6 is not None:
            if i >= len(subnets6):
                raise TopologyError(obj, "pod_cidr", f"cluster_cidr_v6 {r.cluster6} has no "
                                    "room left", "use a larger cluster_cidr_v6")
            rn.lan_ip6 = r.v6_twin(ip, lan, r.lan6)
            rn.pod_cidr6 = subnets6[i]
            rn.gateway6 = rn.pod_cidr6.network_address + 1
    for n in spec.nodes:  # after every primary, so a clash names both
        r.nodes[n.name].extra = _node_extras(r, n, claim_lan, lan_used)

    for j, c in enumerate(spec.clients, start=1):
        obj = claim_name("client", c.name)
        ip = _addr(obj, "ip", c.ip) if c.ip else lan.network_address + (LAN_CLIENT_BASE + j)
        claim_lan(obj, "ip", ip)
        r.clients[c.name] = (ip, [])
        if r.lan6 is not None:
            r.clients6[c.name] = r.v6_twin(ip, lan, r.lan6)
    # secondaries are handed out after every primary is known, in client order
    nxt = LAN_SECONDARY_FIRST
    for c in spec.clients:
        obj = f"client {c.name!r}"
        if not isinstance(c.extra_addresses, int) or c.extra_addresses < 0:
            raise TopologyError(obj, "extra_addresses", f"{c.extra_addresses!r} is not a "
                                "count", "use a non-negative integer")
        for _ in range(c.extra_addresses):
            while nxt <= LAN_SECONDARY_LAST and (lan.network_address + nxt) in lan_used:
                nxt += 1
            if nxt > LAN_SECONDARY_LAST or nxt >= lan.num_addresses - 1:
                raise TopologyError(obj, "extra_addresses", "no free secondary lan address "
                                    f"left (.{LAN_SECONDARY_FIRST}-.{LAN_SECONDARY_LAST})",
                                    "ask for fewer extra addresses")
            ip = lan.network_address + nxt
            claim_lan(obj, "extra_addresses", ip)
            r.clients[c.name][1].append(ip)

    gw = spec.client_gateway or spec.nodes[0].name
    if gw not in r.nodes:
        raise TopologyError(topo, "client_gateway", f"{gw!r} is not a node",
                            f"name one of {sorted(r.nodes)}")
    r.gateway = gw

    pod_ips: dict[IPAddress, str] = {}
    for p in spec.pods:
        check_pod(r, p, pod_ips, seen_names)
    return r


def _node_extras(r: Resolved, n: NodeSpec, claim_lan: Any,
                 used: dict[IPAddress, str]) -> list[IPAddress]:
    """A node's ``extra_addresses``: in the lan (claimed there), or in the external-IP or
    LB range (documentation ranges; routed to the node as host routes)."""
    obj = f"node {n.name!r}"
    out: list[IPAddress] = []
    for k, a in enumerate(n.extra_addresses):
        fld = f"extra_addresses[{k}]"
        ip = _addr(obj, fld, a)
        if ip in r.lan:
            claim_lan(obj, fld, ip)
        elif ip in r.external or ip in r.lb:
            if ip in used:
                raise TopologyError(obj, fld, f"{ip} is already used by {used[ip]}",
                                    "give every node its own extra addresses")
            used[ip] = obj
        else:
            raise TopologyError(obj, fld, f"{ip} is neither in the lan {r.lan}, the "
                                f"external-IP range {r.external} nor the LB range {r.lb}",
                                "a node's further address must be in one of the test "
                                "network's documentation ranges")
        out.append(ip)
    return out


def check_pod(r: Resolved, p: PodSpec, pod_ips: dict[IPAddress, str],
              seen_names: dict[str, str]) -> IPAddress | None:
    """Validate one pod against a resolved topology; returns its explicit IP, if any."""
    obj = f"pod {p.name!r}"
    _name(obj, p.name)
    if p.name in seen_names:
        raise TopologyError(obj, "name", f"duplicate: also used by {seen_names[p.name]}",
                            "give every node, client and pod a unique name")
    if p.node not in r.nodes:
        raise TopologyError(obj, "node", f"{p.node!r} is not a node of this topology",
                            f"place the pod on one of {sorted(r.nodes)} or add that node")
    node = r.nodes[p.node]
    for k, port in enumerate(p.ports):
        try:
            num, proto = port
        except (TypeError, ValueError):
            raise TopologyError(obj, f"ports[{k}]", f"{port!r} is not (port, protocol)",
                                "write ports as (8080, 'tcp')") from None
        if not isinstance(num, int) or not 1 <= num <= 65535:
            raise TopologyError(obj, f"ports[{k}]", f"port {num!r} out of range",
                                "use 1..65535")
        if str(proto).lower() not in PROTOCOLS:
            raise TopologyError(obj, f"ports[{k}]", f"protocol {proto!r} unknown",
                                f"use one of {PROTOCOLS}")
    ip = None
    if p.ip is not None:
        ip = _addr(obj, "ip", p.ip)
        lo, hi = usable_hosts(node.pod_cidr)
        off = int(ip) - int(node.pod_cidr.network_address)
        if ip not in node.pod_cidr or not lo <= off <= hi:
            raise TopologyError(obj, "ip", f"{ip} is not a usable address of node "
                                f"{p.node!r}'s pod CIDR {node.pod_cidr}",
                                "other nodes route to pods by pod CIDR; pick an address "
                                f"between .{lo} and .{hi} of it, or move the pod")
        if ip in pod_ips:
            raise TopologyError(obj, "ip", f"{ip} is already the IP of {pod_ips[ip]}",
                                "pod IPs must be unique")
        pod_ips[ip] = obj
    seen_names[p.name] = obj
    return ip


# --------------------------------------------------------------- from Kubernetes objects


def _get(obj: Any, *path: str) -> Any:
    """Walk ``path`` through lightkube objects or plain dicts alike."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    return obj


class ObjectsTopology(NamedTuple):
    spec: TopologySpec
    pods: list[PodSpec]


def topology_from_objects(
    slices: Iterable[Any],
    nodes: Iterable[Any] | None = None,
    *,
    clients: Sequence[ClientSpec] = (ClientSpec("client"),),
    **spec_kwargs: Any,
) -> ObjectsTopology:
    """Derive a ``TopologySpec`` from EndpointSlices (and Nodes), lightkube objects or dicts.

    One pod per distinct endpoint address, on the endpoint's ``nodeName``, listening on
    the ports of every slice that lists the address (slice ports are target ports), named
    after its endpoint's targetRef (of an address listed twice, the endpoint not terminating:
    a deleted pod's IP given to a new pod belongs to the new pod). Node
    objects give lan IPs (status.addresses InternalIP) and pod CIDRs (spec.podCIDR) when
    present; otherwise a node's pod CIDR is the node-sized subnet holding its endpoints.
    ``spec.pods`` holds the pods; they are also returned. Validated before returning.

    Example::

        spec, pods = topology_from_objects(load_slices("svc.yaml"), load_nodes("svc.yaml"))
        with Topology(spec) as topo: ...
    """
    extra = dict(spec_kwargs)
    node_specs: dict[str, NodeSpec] = {}
    explicit_nodes = nodes is not None
    for n in nodes or ():
        name = _get(n, "metadata", "name")
        obj = f"Node {name!r}"
        lan_ip = None
        for a in _get(n, "status", "addresses") or ():
            if _get(a, "type") == "InternalIP":
                lan_ip = _get(a, "address")
                break
        node_specs[name] = NodeSpec(name=name, lan_ip=lan_ip,
                                    pod_cidr=_get(n, "spec", "podCIDR"))
        _name(obj, name)

    pods: dict[str, dict[str, Any]] = {}  # by address
    nodeless: dict[str, dict[str, Any]] = {}  # endpoints without nodeName, by address
    for s in slices:
        sname = _get(s, "metadata", "name")
        atype = _get(s, "addressType") or "IPv4"
        if atype not in ("IPv4", "IPv6"):
            raise TopologyError(f"EndpointSlice {sname!r}", "addressType",
                                f"{atype!r} endpoints cannot become pods", "use IPv4 or IPv6")
        ports = []
        for k, p in enumerate(_get(s, "ports") or ()):
            num = _get(p, "port")
            if num is None:
                raise TopologyError(f"EndpointSlice {sname!r}", f"ports[{k}].port",
                                    "missing", "give every slice port a number")
            port = (int(num), str(_get(p, "protocol") or "TCP").lower())
            if port not in ports:  # two named slice ports may share a target port
                ports.append(port)
        for e_i, ep in enumerate(_get(s, "endpoints") or ()):
            obj = f"EndpointSlice {sname!r} endpoints[{e_i}]"
            node = _get(ep, "nodeName")
            if not node:
                # kube-proxy then never counts it local; the pod runs on the node whose pod
                # CIDR holds its address (placed below, once the CIDRs are known)
                ref = _get(ep, "targetRef", "name")
                for addr in _get(ep, "addresses") or ():
                    _addr(obj, "addresses", addr)
                    cur = nodeless.setdefault(addr, {"name": ref or "ep-" + re.sub(
                        r"[^0-9a-f]+", "-", addr.lower()).strip("-"), "ports": [], "obj": obj})
                    cur["ports"] += [p for p in ports if p not in cur["ports"]]
                continue
            if explicit_nodes and node not in node_specs:
                raise TopologyError(obj, "nodeName", f"{node!r} is not one of the Nodes "
                                    f"{sorted(node_specs)}", "add that Node or fix nodeName")
            node_specs.setdefault(node, NodeSpec(name=node))
            ref = _get(ep, "targetRef", "name")
            terminating = bool(_get(ep, "conditions", "terminating"))
            for addr in _get(ep, "addresses") or ():
                _addr(obj, "addresses", addr)
                cur = pods.get(addr)
                if cur is None:
                    name = ref or "ep-" + re.sub(r"[^0-9a-f]+", "-", addr.lower()).strip("-")
                    pods[addr] = {"name": name, "node": node, "ports": list(ports),
                                  "obj": obj, "terminating": terminating}
                elif cur["node"] != node:
                    raise TopologyError(obj, "nodeName", f"address {addr} is on node "
                                        f"{node!r} here but on {cur['node']!r} in "
                                        f"{cur['obj']}", "one address is one pod on one node")
                else:
                    cur["ports"] += [p for p in ports if p not in cur["ports"]]
                    if ref and cur["terminating"] and not terminating:
                        # a deleted pod's IP given to a new pod: the address is the new pod's
                        cur.update(name=ref, terminating=False)

    # endpoints without nodeName: on the node whose pod CIDR (a Node's spec.podCIDR, or
    # inferred from its other endpoints) holds the address
    homeless = {a: p for a, p in nodeless.items() if a not in pods}
    for addr, p in nodeless.items():
        if addr in pods:  # listed with a nodeName elsewhere: that pod serves these ports too
            pods[addr]["ports"] += [pp for pp in p["ports"] if pp not in pods[addr]["ports"]]

    # two endpoint addresses with the same targetRef name: disambiguate rather than fail
    names: dict[str, int] = {}
    for addr, p in pods.items():
        if p["name"] in names:
            p["name"] = f"{p['name']}-{re.sub(r'[^0-9a-f]+', '-', addr.lower()).strip('-')}"
        names[p["name"]] = 1

    # infer pod CIDRs the Node objects did not give
    cluster = _net("TopologySpec", "cluster_cidr",
                   extra.get("cluster_cidr", TopologySpec.cluster_cidr))
    plen = extra.get("node_cidr_prefixlen", TopologySpec.node_cidr_prefixlen)
    for name, ns in list(node_specs.items()):
        if ns.pod_cidr:
            continue
        subnets = {ipaddress.ip_network(f"{a}/{plen}", strict=False)
                   for a, p in pods.items() if p["node"] == name
                   if ipaddress.ip_address(a) in cluster}
        if len(subnets) == 1:
            node_specs[name] = replace(ns, pod_cidr=str(subnets.pop()))
        elif len(subnets) > 1:
            raise TopologyError(f"Node {name!r}", "spec.podCIDR", "its endpoints span "
                                f"{sorted(map(str, subnets))}", "set spec.podCIDR on the Node")
    # nodes without an inferred CIDR take the free subnets in order
    taken = {ipaddress.ip_network(ns.pod_cidr) for ns in node_specs.values() if ns.pod_cidr}
    free = (s for s in cluster.subnets(new_prefix=plen)
            if s.network_address != cluster.network_address and
            not any(s.overlaps(t) for t in taken))
    for name, ns in list(node_specs.items()):
        if not ns.pod_cidr:
            node_specs[name] = replace(ns, pod_cidr=str(next(free)))
    for addr, p in homeless.items():
        homes = [n for n, ns in node_specs.items()
                 if ipaddress.ip_address(addr) in ipaddress.ip_network(ns.pod_cidr)]
        if len(homes) != 1:
            raise TopologyError(p["obj"], "nodeName", f"missing, and {addr} is in the pod CIDR "
                                f"of {len(homes)} nodes", "give the node a pod_cidr (topology."
                                "nodes or a Node's spec.podCIDR) holding the address, or set "
                                "nodeName")
        if p["name"] in {q["name"] for q in pods.values()}:
            p["name"] = f"{p['name']}-{re.sub(r'[^0-9a-f]+', '-', addr.lower()).strip('-')}"
        pods[addr] = {"name": p["name"], "node": homes[0], "ports": p["ports"], "obj": p["obj"]}

    pod_specs = [PodSpec(name=p["name"], node=p["node"], ports=tuple(p["ports"]), ip=a)
                 for a, p in pods.items()]
    spec = TopologySpec(nodes=list(node_specs.values()), clients=tuple(clients),
                        pods=tuple(pod_specs), **extra)
    validate(spec)
    return ObjectsTopology(spec, pod_specs)
