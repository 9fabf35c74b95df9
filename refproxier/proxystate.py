"""kube-proxy's view of the cluster: service ports with their categorised endpoints.

A pure function, :func:`build_proxy_state`, turns a :class:`~servicemodel.cluster.ClusterState`
into a :class:`ProxyState` for one node and one IP family, following kube-proxy's
``ServiceChangeTracker``/``newBaseServiceInfo`` (pkg/proxy/serviceport.go), the
EndpointSlice cache (pkg/proxy/endpointslicecache.go) and ``CategorizeEndpoints``
(pkg/proxy/topology.go).

Objects kube-proxy would reject or ignore with a log line become :class:`Problem` s that name
the object and field; everything else is still built.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from lightkube.models.core_v1 import ServiceSpec
from lightkube.resources.core_v1 import Service
from lightkube.resources.discovery_v1 import EndpointSlice

from refproxier.config import ProxierConfig
from servicemodel.cluster import ClusterState
from servicemodel.load import gc_paused
from servicemodel.names import (
    HEADLESS_LABEL,
    PROTOCOLS,
    SERVICE_NAME_LABEL,
    SERVICE_PROXY_NAME_LABEL,
)

ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_AFFINITY_TIMEOUT = 10800  # API default of sessionAffinityConfig.clientIP.timeoutSeconds


@dataclass(frozen=True)
class Problem:
    """Something in the input kube-proxy would reject or ignore."""

    kind: str
    namespace: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {self.field}: {self.message}"


@dataclass(frozen=True)
class EndpointInfo:
    """One endpoint of one service port (kube-proxy ``BaseEndpointInfo``)."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    is_local: bool = False
    node_name: str | None = None
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()

    @property
    def address(self) -> str:
        """``ip:port`` as Go's ``net.JoinHostPort`` writes it (``[v6]:port``)."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePortInfo:
    """One port of one Service, as kube-proxy's ``ServicePort`` plus its endpoints."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP, UDP or SCTP
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    external_policy_local: bool = False
    internal_policy_local: bool = False
    affinity_timeout: int | None = None  # seconds; None: no ClientIP affinity
    health_check_node_port: int = 0
    # All endpoints for this port, deduplicated and sorted by the "ip:port" string.
    endpoints: tuple[EndpointInfo, ...] = ()
    # CategorizeEndpoints results.
    cluster_endpoints: tuple[EndpointInfo, ...] = ()
    local_endpoints: tuple[EndpointInfo, ...] = ()
    all_reachable_endpoints: tuple[EndpointInfo, ...] = ()
    has_endpoints: bool = False

    @property
    def service_key(self) -> str:
        """``namespace/name``: the unit of change for partial syncs."""
        return f"{self.namespace}/{self.name}"

    @property
    def port_name_string(self) -> str:
        """kube-proxy's ``ServicePortName.String()``: ``ns/name`` or ``ns/name:port``."""
        key = self.service_key
        return f"{key}:{self.port_name}" if self.port_name else key

    @property
    def protocol_lower(self) -> str:
        return self.protocol.lower()

    @property
    def session_affinity(self) -> bool:
        return self.affinity_timeout is not None

    @property
    def externally_accessible(self) -> bool:
        return self.node_port != 0 or bool(self.load_balancer_ips) or bool(self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # eTP=Local still needs cluster endpoints for the short-circuit of local sources.
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (self.external_policy_local and self.externally_accessible)

    # For the daemon: UDP conntrack cleanup and the health check server.

    @property
    def destination_ips(self) -> tuple[str, ...]:
        """Every IP this port is reached at besides NodePorts (conntrack orig dst)."""
        return (self.cluster_ip, *self.external_ips, *self.load_balancer_ips)

    @property
    def serving_endpoint_ips(self) -> tuple[str, ...]:
        return tuple(sorted({ep.ip for ep in self.endpoints if ep.serving}))

    @property
    def serving_endpoints(self) -> tuple[str, ...]:
        """Serving endpoints as ``ip:port``: newer kube-proxy (v1.32+) keeps a UDP conntrack
        entry only if its reply source matches one of these, port included."""
        return tuple(sorted({ep.address for ep in self.endpoints if ep.serving}))

    @property
    def local_ready_endpoints(self) -> int:
        return sum(1 for ep in self.endpoints if ep.is_local and ep.ready)


@dataclass(frozen=True)
class HealthCheck:
    """One health check node port: 200 iff ``local_endpoints > 0``."""

    namespace: str
    name: str
    node_port: int
    local_endpoints: int


@dataclass(frozen=True)
class ProxyState:
    hostname: str
    ip_family: int
    service_ports: tuple[ServicePortInfo, ...] = ()  # sorted by (port name string, protocol)
    problems: tuple[Problem, ...] = ()
    generation: int | None = None
    #: CIDRs of this family from the ServiceCIDR objects (kube-proxy OnServiceCIDRsChanged)
    service_cidrs: tuple[str, ...] = ()

    @property
    def total_endpoints(self) -> int:
        return sum(len(sp.endpoints) for sp in self.service_ports)

    def service_keys(self) -> set[str]:
        return {sp.service_key for sp in self.service_ports}

    def health_checks(self) -> list[HealthCheck]:
        """Health check node ports, with the number of distinct local ready endpoint IPs over
        all the service's ports (kube-proxy ``LocalReadyEndpoints``)."""
        ips: dict[str, set[str]] = {}
        for sp in self.service_ports:
            ips.setdefault(sp.service_key, set()).update(ep.ip for ep in sp.endpoints if ep.is_local and ep.ready)
        local = {k: len(v) for k, v in ips.items()}
        seen: dict[tuple[str, str], HealthCheck] = {}
        for sp in self.service_ports:
            if sp.health_check_node_port and (sp.namespace, sp.name) not in seen:
                seen[(sp.namespace, sp.name)] = HealthCheck(
                    sp.namespace, sp.name, sp.health_check_node_port, local[sp.service_key]
                )
        return list(seen.values())

    def udp_service_ports(self) -> list[ServicePortInfo]:
        """UDP ports whose stale conntrack entries kube-proxy clears after a sync: all of
        them, including ports without serving endpoints, whose entries would otherwise keep
        DNATing one-way flows to a deleted pod (kubernetes#139628, fixed by #139629)."""
        return [sp for sp in self.service_ports if sp.protocol == "UDP"]


def changed_services(old: ProxyState | None, new: ProxyState) -> set[str] | None:
    """Service keys whose ports or endpoints differ between two states (None: all)."""
    if old is None:
        return None
    # A change of the ServiceCIDRs alone forces no full sync: as kube-proxy's nftables mode
    # (OnServiceCIDRsChanged only records them), their drop rule follows at the next one.

    def group(state: ProxyState) -> dict[str, list[ServicePortInfo]]:
        out: dict[str, list[ServicePortInfo]] = {}
        for sp in state.service_ports:
            out.setdefault(sp.service_key, []).append(sp)
        return out

    a, b = group(old), group(new)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


# --------------------------------------------------------------------------------------
# Building


@dataclass
class _Builder:
    config: ProxierConfig
    problems: list[Problem] = field(default_factory=list)

    def problem(self, kind: str, ns: str, name: str, fld: str, msg: str) -> None:
        self.problems.append(Problem(kind, ns, name, fld, msg))

    def parse_ip(
        self, value: object, kind: str, ns: str, name: str, fld: str, what: str = "ignored"
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(str(value).strip())
        except ValueError:
            self.problem(kind, ns, name, fld, f"{value!r} is not an IP address; {what}")
            return None


def _labels(obj: Service | EndpointSlice) -> dict[str, str]:
    return dict(obj.metadata.labels or {})


def _skipped_by_labels(obj: Service | EndpointSlice) -> bool:
    """kube-proxy's informers (since v1.36, kubernetes#134623): Services labelled
    service-proxy-name and EndpointSlices labelled headless are not seen; the headless label
    on a Service (the EndpointSlice controller never copies it for a ClusterIP Service) and
    service-proxy-name on a slice mean nothing."""
    label = SERVICE_PROXY_NAME_LABEL if isinstance(obj, Service) else HEADLESS_LABEL
    return label in _labels(obj)


def external_policy_local(spec: ServiceSpec) -> bool:
    """kube-proxy's apiservice.ExternalPolicyLocal: externalTrafficPolicy Local on an
    externally accessible Service (NodePort, LoadBalancer, or ClusterIP with externalIPs)."""
    accessible = spec.type in ("NodePort", "LoadBalancer") or (
        spec.type in (None, "ClusterIP") and bool(spec.externalIPs))
    return accessible and spec.externalTrafficPolicy == "Local"


def _service_ports(b: _Builder, svc: Service) -> list[ServicePortInfo] | None:
    """The service's ports for this family; None when kube-proxy does not proxy it."""
    ns, name = svc.metadata.namespace, svc.metadata.name
    spec = svc.spec
    if spec is None:
        b.problem("Service", ns, name, "spec", "missing; service ignored")
        return None
    if spec.type == "ExternalName":
        return None
    ips = list(spec.clusterIPs or ([spec.clusterIP] if spec.clusterIP else []))
    if not ips or ips[0] in ("None", ""):
        return None  # headless (or not yet allocated)
    cluster_ip = None
    for i, raw in enumerate(ips):
        fld = f"spec.clusterIPs[{i}]" if spec.clusterIPs else "spec.clusterIP"
        ip = b.parse_ip(raw, "Service", ns, name, fld, "service ignored" if i == 0 else "ignored")
        if ip is None:
            if i == 0:
                return None
            continue
        if ip.version == b.config.ip_family and cluster_ip is None:
            cluster_ip = str(ip)
    if cluster_ip is None:
        return None  # single-stack service of the other family

    family = b.config.ip_family
    external_ips = []
    for i, raw in enumerate(spec.externalIPs or []):
        ip = b.parse_ip(raw, "Service", ns, name, f"spec.externalIPs[{i}]")
        if ip is not None and ip.version == family:
            external_ips.append(str(ip))

    lb_ips = []
    ingress = (svc.status.loadBalancer.ingress if svc.status and svc.status.loadBalancer else None) or []
    for i, ing in enumerate(ingress):
        if not ing.ip or ing.ipMode == "Proxy":
            continue  # hostname-only ingress, or an LB that proxies (no VIP on the node)
        ip = b.parse_ip(ing.ip, "Service", ns, name, f"status.loadBalancer.ingress[{i}].ip")
        if ip is not None and ip.version == family:
            lb_ips.append(str(ip))

    ranges = []
    for i, raw in enumerate(spec.loadBalancerSourceRanges or []):
        try:
            net = ipaddress.ip_network(str(raw).strip(), strict=False)
        except ValueError:
            b.problem("Service", ns, name, f"spec.loadBalancerSourceRanges[{i}]", f"{raw!r} is not a CIDR; ignored")
            continue
        if net.version == family:
            ranges.append(str(net))

    etp_local = external_policy_local(spec)
    itp_local = spec.internalTrafficPolicy == "Local"
    timeout = None
    if spec.sessionAffinity == "ClientIP":
        cfg = spec.sessionAffinityConfig
        t = cfg.clientIP.timeoutSeconds if cfg and cfg.clientIP else None
        timeout = t if t is not None else DEFAULT_AFFINITY_TIMEOUT
    hcnp = 0
    if spec.type == "LoadBalancer" and etp_local:
        hcnp = spec.healthCheckNodePort or 0
        if not hcnp:
            b.problem("Service", ns, name, "spec.healthCheckNodePort", "missing for a LoadBalancer with externalTrafficPolicy Local")

    out: list[ServicePortInfo] = []
    seen: set[str] = set()
    for i, p in enumerate(spec.ports or []):
        fld = f"spec.ports[{i}]"
        pname = p.name or ""
        proto = p.protocol or "TCP"
        if proto not in PROTOCOLS:
            b.problem("Service", ns, name, f"{fld}.protocol", f"unsupported protocol {proto!r}; port ignored")
            continue
        if not 1 <= p.port <= 65535:
            b.problem("Service", ns, name, f"{fld}.port", f"{p.port} is not a port number; port ignored")
            continue
        if pname in seen:
            b.problem("Service", ns, name, f"{fld}.name", f"duplicate port name {pname!r}; port ignored")
            continue
        seen.add(pname)
        node_port = p.nodePort or 0
        if not 0 <= node_port <= 65535:
            b.problem("Service", ns, name, f"{fld}.nodePort", f"{node_port} is not a port number; ignored")
            node_port = 0
        out.append(
            ServicePortInfo(
                namespace=ns,
                name=name,
                port_name=pname,
                protocol=proto,
                cluster_ip=cluster_ip,
                port=p.port,
                node_port=node_port,
                external_ips=tuple(external_ips),
                load_balancer_ips=tuple(lb_ips),
                load_balancer_source_ranges=tuple(ranges),
                external_policy_local=etp_local,
                internal_policy_local=itp_local,
                affinity_timeout=timeout,
                health_check_node_port=hcnp,
            )
        )
    return out


def _slice_endpoints(
    b: _Builder, sl: EndpointSlice, service_ports: list[ServicePortInfo]
) -> dict[tuple[str, str], list[EndpointInfo]]:
    """Endpoints of one slice keyed by (port name, protocol)."""
    ns, name = sl.metadata.namespace, sl.metadata.name
    want = "IPv4" if b.config.ip_family == 4 else "IPv6"
    if sl.addressType != want:
        return {}  # other family, or FQDN (which kube-proxy ignores)
    known_names = {sp.port_name for sp in service_ports}
    out: dict[tuple[str, str], list[EndpointInfo]] = {}
    eps: list[tuple[str, object]] = []
    for i, ep in enumerate(sl.endpoints or []):
        if not ep.addresses:
            continue
        ip = b.parse_ip(ep.addresses[0], "EndpointSlice", ns, name, f"endpoints[{i}].addresses[0]", "endpoint ignored")
        if ip is None:
            continue
        if ip.version != b.config.ip_family:
            b.problem("EndpointSlice", ns, name, f"endpoints[{i}].addresses[0]", f"{ip} is not an {want} address; ignored")
            continue
        eps.append((str(ip), ep))
    for j, port in enumerate(sl.ports or []):
        if not port.port:
            continue
        if port.name is None:
            # kube-proxy's EndpointSliceCache ("Ignoring port with nil name"); the
            # EndpointSlice controller always writes one, "" for an unnamed Service port
            b.problem("EndpointSlice", ns, name, f"ports[{j}].name",
                      'missing; kube-proxy ignores a port without a name (write name: "")')
            continue
        pname = port.name
        if pname not in known_names:
            b.problem(
                "EndpointSlice", ns, name, f"ports[{j}].name",
                f"{pname!r} matches no port name of Service {ns}/{_service_name(sl)}; port ignored",
            )
            continue
        key = (pname, port.protocol or "TCP")
        lst = out.setdefault(key, [])
        for ipstr, ep in eps:
            cond = ep.conditions
            ready = cond is None or cond.ready is None or bool(cond.ready)
            serving = cond is None or cond.serving is None or bool(cond.serving)
            terminating = cond is not None and bool(cond.terminating)
            zones = frozenset(z.name for z in (ep.hints.forZones or [])) if ep.hints else frozenset()
            for_nodes = frozenset(n.name for n in (ep.hints.forNodes or [])) if ep.hints else frozenset()
            lst.append(
                EndpointInfo(
                    ip=ipstr,
                    port=port.port,
                    ready=ready,
                    serving=serving,
                    terminating=terminating,
                    is_local=ep.nodeName == b.config.hostname,
                    node_name=ep.nodeName,
                    zone_hints=zones,
                    node_hints=for_nodes,
                )
            )
    return out


def _service_name(sl: EndpointSlice) -> str:
    return _labels(sl).get(SERVICE_NAME_LABEL, "")


def topology_mode(endpoints: Iterable[EndpointInfo], node: str, zone: str) -> str:
    """kube-proxy's ``topologyModeFromHints``: "PreferSameNode" when every ready endpoint has
    node hints and one is hinted for ``node``; else "PreferSameZone" when every ready
    endpoint has zone hints and one is hinted for ``zone``; else "" (all endpoints). Node
    hints are read as by kube-proxy v1.35+ (PreferSameTrafficDistribution GA)."""
    ready = [ep for ep in endpoints if ep.ready]
    if not ready:
        return ""
    if all(ep.node_hints for ep in ready) and any(node in ep.node_hints for ep in ready):
        return "PreferSameNode"
    if all(ep.zone_hints for ep in ready) and any(zone in ep.zone_hints for ep in ready):
        return "PreferSameZone"
    return ""


def available_for_topology(ep: EndpointInfo, mode: str, node: str, zone: str) -> bool:
    """kube-proxy's ``availableForTopology``: whether ``ep`` serves this node in ``mode``."""
    if mode == "PreferSameNode":
        return node in ep.node_hints
    if mode == "PreferSameZone":
        return zone in ep.zone_hints
    return True


def categorize_endpoints(
    sp: ServicePortInfo, endpoints: tuple[EndpointInfo, ...], zone: str = "", node: str = ""
) -> tuple[tuple[EndpointInfo, ...], tuple[EndpointInfo, ...], tuple[EndpointInfo, ...], bool]:
    """kube-proxy's ``CategorizeEndpoints``: (cluster, local, all reachable, has any).

    "Usable" means ready, falling back to serving-and-terminating when nothing is ready
    (independently for cluster and local endpoints). Topology hints (same node, then same
    zone) narrow the cluster endpoints only; Local traffic policies ignore them.
    """
    cluster: tuple[EndpointInfo, ...] = ()
    local: tuple[EndpointInfo, ...] = ()
    has_any = False
    mode = ""
    if sp.uses_cluster_endpoints:
        mode = topology_mode(endpoints, node, zone)
        cluster = tuple(e for e in endpoints if e.ready and available_for_topology(e, mode, node, zone))
        if not cluster:
            cluster = tuple(e for e in endpoints if e.serving and e.terminating)
        has_any = bool(cluster)
    if not sp.uses_local_endpoints:
        return cluster, local, cluster, has_any

    local_ready = local_st = False
    for e in endpoints:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.is_local
        elif e.serving and e.terminating:
            has_any = True
            local_st = local_st or e.is_local
    use_st = False
    if local_ready:
        local = tuple(e for e in endpoints if e.is_local and e.ready)
    elif local_st:
        use_st = True
        local = tuple(e for e in endpoints if e.is_local and e.serving and e.terminating)
    if not sp.uses_cluster_endpoints:
        return cluster, local, local, has_any
    if not mode and not use_st:
        return cluster, local, cluster, has_any
    merged = {e.address: e for e in (*cluster, *local)}
    return cluster, local, tuple(sorted(merged.values(), key=lambda e: e.address)), has_any


def build_proxy_state(cluster: ClusterState, config: ProxierConfig) -> ProxyState:
    """kube-proxy's service and endpoint maps for ``config.hostname`` and ``config.ip_family``."""
    with gc_paused():
        return _build_proxy_state(cluster, config)


def _build_proxy_state(cluster: ClusterState, config: ProxierConfig) -> ProxyState:
    b = _Builder(config)
    ports_by_service: dict[tuple[str, str], list[ServicePortInfo]] = {}
    known_services: set[tuple[str, str]] = set()
    for key, svc in sorted(cluster.services.items()):
        known_services.add(key)
        if _skipped_by_labels(svc):
            continue
        ports = _service_ports(b, svc)
        if ports:
            ports_by_service[key] = ports

    # Endpoints per (service, port name, protocol), deduplicated by ip:port across slices.
    collected: dict[tuple[str, str, str, str], dict[str, EndpointInfo]] = {}
    for (ns, sname), sl in sorted(cluster.endpoint_slices.items()):
        if _skipped_by_labels(sl):
            continue
        svc_name = _service_name(sl)
        if not svc_name:
            b.problem("EndpointSlice", ns, sname, f"metadata.labels[{SERVICE_NAME_LABEL}]", "missing; slice ignored")
            continue
        if (ns, svc_name) not in known_services:
            b.problem(
                "EndpointSlice", ns, sname, f"metadata.labels[{SERVICE_NAME_LABEL}]",
                f"Service {ns}/{svc_name} does not exist; slice ignored",
            )
            continue
        ports = ports_by_service.get((ns, svc_name))
        if not ports:
            continue
        for (pname, proto), eps in _slice_endpoints(b, sl, ports).items():
            bucket = collected.setdefault((ns, svc_name, pname, proto), {})
            for ep in eps:
                # A duplicate address (an endpoint moving between slices, or a reused pod
                # IP) keeps the earlier entry unless the later one is not terminating.
                if ep.address not in bucket or not ep.terminating:
                    bucket[ep.address] = ep

    node = cluster.nodes.get(config.hostname)
    zone = ((node.metadata.labels or {}).get(ZONE_LABEL, "") if node else "") or ""
    result: list[ServicePortInfo] = []
    for (ns, sname), ports in ports_by_service.items():
        for sp in ports:
            bucket = collected.get((ns, sname, sp.port_name, sp.protocol), {})
            # kube-proxy sorts by the string "ip:port" (so 10.1.1.11:11 < 10.1.1.1:11).
            eps = tuple(sorted(bucket.values(), key=lambda e: e.address))
            c, loc, allr, has = categorize_endpoints(sp, eps, zone, config.hostname)
            result.append(
                replace(sp, endpoints=eps, cluster_endpoints=c, local_endpoints=loc,
                         all_reachable_endpoints=allr, has_endpoints=has)
            )
    result.sort(key=lambda sp: (sp.port_name_string, sp.protocol))
    return ProxyState(
        hostname=config.hostname,
        ip_family=config.ip_family,
        service_ports=tuple(result),
        problems=tuple(b.problems),
        generation=cluster.generation,
        service_cidrs=_family_service_cidrs(cluster, config.ip_family),
    )


def _family_service_cidrs(cluster: ClusterState, family: int) -> tuple[str, ...]:
    """Every ServiceCIDR object's CIDRs of ``family``, as kube-proxy's ServiceCIDR handler
    collects them (all objects, whatever their status); sorted, invalid ones skipped."""
    out: set[str] = set()
    for sc in cluster.service_cidrs.values():
        for c in (sc.spec.cidrs if sc.spec else None) or []:
            try:
                net = ipaddress.ip_network(c, strict=False)
            except ValueError:
                continue
            if net.version == family:
                out.add(str(net))
    return tuple(sorted(out))
