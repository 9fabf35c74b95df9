"""kube-proxy's iptables rules, rendered as ``iptables-restore --noflush`` input (pure).

This follows ``syncProxyRules`` in kube-proxy's pkg/proxy/iptables/proxier.go (v1.31-1.33):
the same chain names, rule order within each chain, comments and probabilities. Entry points:

``render(proxy_state, config, *, changed=None, existing_nat_chains=frozenset()) -> str``
    The restore input, ``*filter`` then ``*nat``. ``changed`` is the set of service keys
    (``"namespace/name"``) whose Service or EndpointSlices changed since the last successful
    sync; ``None`` means a full sync. Per-service chains (KUBE-SVC/SVL/EXT/FW/SEP) are written
    only for changed services; top-level chains are rewritten every time. Service chains
    listed in ``existing_nat_chains`` (from ``iptables-save -t nat``) that are no longer
    needed are flushed and deleted.
``jump_rules(config) -> list[JumpRule]``
    The rules kube-proxy prepends to built-in chains (``iptables -C`` then ``-I chain 1``)
    on full syncs, in the order kube-proxy ensures them.
``CANARY_TABLES``
    The tables where kube-proxy's ``iptables.Monitor`` creates its empty canary chain
    (``refproxier.netfilter_exec.CANARY_CHAIN``) with ``-N``; if it disappears, rules
    were flushed and a full sync is due.

Fault-injection points. Every decision below is a module-level function that the rest of
this module calls through the module namespace (``_mod().name(...)``), so a test can
``monkeypatch.setattr(refproxier.iptables, "name", replacement)`` and the daemon renders
with the replacement. Each returns complete rule lines (``"-A CHAIN ..."``).

``compute_probability(n) -> str``
    The ``--probability`` value for the first of ``n`` remaining endpoints (1/n, ``%0.10f``).
``loadbalancing_rules(ctx, sp, chain, endpoints) -> list[str]``
    The statistic cascade from a SVC/SVL chain to the SEP chains.
``affinity_rules(ctx, sp, chain, endpoints) -> list[str]``
    ``-m recent --rcheck`` rules written before the cascade (ClientIP affinity).
``affinity_set_args(ctx, sp, ep) -> list[str]``
    The ``-m recent --name SEP --set`` match on the DNAT rule.
``hairpin_masquerade_rule(ctx, sp, ep) -> str``
    SEP rule ``-s <epIP> -j KUBE-MARK-MASQ`` (a pod reaching itself through the service).
``dnat_rule(ctx, sp, ep) -> str``
    SEP rule with the DNAT target.
``cluster_ip_masquerade_rule(ctx, sp, chain) -> str | None``
    First rule of the internal chain: masquerade-all, or off-cluster sources per cluster CIDR.
``external_masquerade_rules(ctx, sp) -> list[str]``
    The KUBE-EXT masquerade rule: every packet for eTP=Cluster, LOCAL sources for eTP=Local.
``external_destination_rules(ctx, sp, has_external_endpoints) -> list[str]``
    The whole KUBE-EXT chain: pod short-circuit (eTP=Local), the masquerade rule above,
    routing of LOCAL sources to the cluster chain, then the jump to the policy chain.
``firewall_chain_rules(ctx, sp) -> list[str]``
    The KUBE-FW chain (loadBalancerSourceRanges).
``nodeport_rules(ctx, sp) -> list[str]``
    nat KUBE-NODEPORTS rules for a service port with endpoints.
``nodeports_jump_rules(ctx) -> list[str]``
    The last rule(s) of nat KUBE-SERVICES, to KUBE-NODEPORTS.
``no_endpoints_rules(ctx, sp) -> list[str]``
    filter REJECT rules for a service port with no usable endpoints at all.
``no_local_endpoints_rules(ctx, sp, internal, external) -> list[str]``
    filter DROP rules when a Local traffic policy has no local endpoints.
``health_check_rule(ctx, sp) -> str``
    filter KUBE-NODEPORTS ACCEPT for the health check node port.
``proxy_firewall_rules(ctx, sp) -> list[str]``
    filter KUBE-PROXY-FIREWALL DROP for LB IPs whose source ranges a packet did not match.
``masquerade_rules(ctx) -> list[str]``, ``forward_rules(ctx) -> list[str]``,
``localnet_firewall_rules(ctx) -> list[str]``
    KUBE-POSTROUTING/KUBE-MARK-MASQ, KUBE-FORWARD and KUBE-FIREWALL.
``service_port_rules(ctx, sp) -> ServicePortRules``
    Everything one service port contributes (calls the functions above).

``ctx`` is a :class:`RenderContext` (the config, and whether large-cluster mode drops
per-endpoint comments); ``sp`` a :class:`~refproxier.proxystate.ServicePortInfo`; ``ep`` an
:class:`~refproxier.proxystate.EndpointInfo`. Chain names come from :class:`Chains` and
:func:`sep_chain`.

Not done here (the daemon's business, as in kube-proxy): deciding full vs partial syncs,
reading existing chains (pass an empty set to skip deletions, e.g. to delete stale chains
only once per sync period in large clusters), applying jump rules and canary chains.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import sys
from dataclasses import dataclass
from types import ModuleType

from refproxier.config import ProxierConfig
from refproxier.memo import PortMemo, module_functions
from refproxier.proxystate import EndpointInfo, ProxyState, ServicePortInfo
from servicemodel.load import gc_paused

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's anti-martian chain, duplicated by kube-proxy
CANARY_TABLES = ("mangle", "nat", "filter")

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
EXT_PREFIX = "KUBE-EXT-"
FW_PREFIX = "KUBE-FW-"
SEP_PREFIX = "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX)

#: Above this many endpoints in total, kube-proxy drops per-endpoint comments.
LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000

NFACCT_CT_INVALID = "ct_state_invalid_dropped_pkts"
NFACCT_LOCALHOST_NODEPORTS = "localhost_nps_accepted_pkts"


def _mod() -> ModuleType:
    """This module, looked up at call time so monkeypatched functions take effect."""
    return sys.modules[__name__]


# --------------------------------------------------------------------------------------
# Chain names


@functools.lru_cache(maxsize=1 << 15)
def _hash16(text: str) -> str:
    """First 16 chars of base32(sha256(text)): the first 10 bytes encode to exactly those
    16 characters. Cached: a sync asks for each endpoint's chain name several times."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


def port_proto_hash(port_name: str, protocol: str) -> str:
    """First 16 chars of base32(sha256(servicePortName + protocol)), no separator."""
    return _hash16(port_name + protocol)


def service_chain_name(port_name: str, protocol: str) -> str:
    return SVC_PREFIX + port_proto_hash(port_name, protocol)


def local_chain_name(port_name: str, protocol: str) -> str:
    return SVL_PREFIX + port_proto_hash(port_name, protocol)


def external_chain_name(port_name: str, protocol: str) -> str:
    return EXT_PREFIX + port_proto_hash(port_name, protocol)


def firewall_chain_name(port_name: str, protocol: str) -> str:
    return FW_PREFIX + port_proto_hash(port_name, protocol)


def endpoint_chain_name(port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP- chain for ``endpoint`` written as ``ip:port`` / ``[ip]:port``."""
    return SEP_PREFIX + _hash16(port_name + protocol + endpoint)


def is_service_chain(chain: str) -> bool:
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


@dataclass(frozen=True)
class Chains:
    """The per-service chain names of one service port."""

    svc: str
    svl: str
    ext: str
    fw: str

    @classmethod
    def of(cls, sp: ServicePortInfo) -> Chains:
        n, p = sp.port_name_string, sp.protocol_lower
        return cls(service_chain_name(n, p), local_chain_name(n, p), external_chain_name(n, p), firewall_chain_name(n, p))


def sep_chain(sp: ServicePortInfo, ep: EndpointInfo) -> str:
    return endpoint_chain_name(sp.port_name_string, sp.protocol_lower, ep.address)


# --------------------------------------------------------------------------------------
# Small helpers


@dataclass(frozen=True)
class RenderContext:
    """What every rule function may consult besides the service port itself."""

    config: ProxierConfig
    large_cluster_mode: bool = False

    @property
    def mark(self) -> str:
        return self.config.masquerade_mark

    @property
    def local_cidr(self) -> str | None:
        """The local-traffic detector's CIDR (kube-proxy DetectLocalByCIDR), if any."""
        cidrs = self.config.family_cluster_cidrs
        return cidrs[0] if cidrs else None


def quote(text: str) -> str:
    """Quote a comment the way kube-proxy writes it (only when it has spaces)."""
    return f'"{text}"' if " " in text else text


def comment(text: str) -> list[str]:
    return ["-m", "comment", "--comment", quote(text)]


def service_comment(ctx: RenderContext, text: str) -> list[str]:
    """Comments kube-proxy drops in large-cluster mode (``appendServiceCommentLocked``)."""
    return [] if ctx.large_cluster_mode else comment(text)


def rule(chain: str, *parts: list[str] | str) -> str:
    words: list[str] = ["-A", chain]
    for p in parts:
        words.extend([p] if isinstance(p, str) else p)
    return " ".join(words)


def proto_match(sp: ServicePortInfo) -> list[str]:
    p = sp.protocol_lower
    return ["-m", p, "-p", p]


# --------------------------------------------------------------------------------------
# Fault-injection points (see module docstring)


def compute_probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"


def affinity_rules(ctx: RenderContext, sp: ServicePortInfo, chain: str, endpoints: tuple[EndpointInfo, ...]) -> list[str]:
    if not sp.session_affinity:
        return []
    out = []
    for ep in endpoints:
        sep = sep_chain(sp, ep)
        out.append(
            rule(
                chain,
                service_comment(ctx, f"{sp.port_name_string} -> {ep.address}"),
                ["-m", "recent", "--name", sep, "--rcheck", "--seconds", str(sp.affinity_timeout), "--reap"],
                ["-j", sep],
            )
        )
    return out


def loadbalancing_rules(
    ctx: RenderContext, sp: ServicePortInfo, chain: str, endpoints: tuple[EndpointInfo, ...]
) -> list[str]:
    out = []
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        stat: list[str] = []
        if i < n - 1:
            # Each rule takes 1/(remaining) of what reaches it: uniform overall.
            stat = ["-m", "statistic", "--mode", "random", "--probability", _mod().compute_probability(n - i)]
        out.append(rule(chain, service_comment(ctx, f"{sp.port_name_string} -> {ep.address}"), stat, ["-j", sep_chain(sp, ep)]))
    return out


def affinity_set_args(ctx: RenderContext, sp: ServicePortInfo, ep: EndpointInfo) -> list[str]:
    if not sp.session_affinity:
        return []
    return ["-m", "recent", "--name", sep_chain(sp, ep), "--set"]


def hairpin_masquerade_rule(ctx: RenderContext, sp: ServicePortInfo, ep: EndpointInfo) -> str:
    return rule(sep_chain(sp, ep), service_comment(ctx, sp.port_name_string), ["-s", ep.ip, "-j", KUBE_MARK_MASQ])


def dnat_rule(ctx: RenderContext, sp: ServicePortInfo, ep: EndpointInfo) -> str:
    return rule(
        sep_chain(sp, ep),
        service_comment(ctx, sp.port_name_string),
        _mod().affinity_set_args(ctx, sp, ep),
        proto_match(sp),
        ["-j", "DNAT", "--to-destination", ep.address],
    )


def cluster_ip_match(sp: ServicePortInfo) -> list[str]:
    return [*comment(f"{sp.port_name_string} cluster IP"), *proto_match(sp), "-d", sp.cluster_ip, "--dport", str(sp.port)]


def cluster_ip_masquerade_rule(ctx: RenderContext, sp: ServicePortInfo, chain: str) -> str | None:
    if ctx.config.masquerade_all:
        return rule(chain, cluster_ip_match(sp), ["-j", KUBE_MARK_MASQ])
    if ctx.local_cidr:
        # Off-cluster sources may be routed to any node and bounce to another: masquerade.
        return rule(chain, cluster_ip_match(sp), ["!", "-s", ctx.local_cidr], ["-j", KUBE_MARK_MASQ])
    return None


def external_masquerade_rules(ctx: RenderContext, sp: ServicePortInfo) -> list[str]:
    """Which external-destination traffic is masqueraded: all of it for eTP=Cluster (it
    may cross nodes), only node-originated (LOCAL source) traffic for eTP=Local."""
    ch = Chains.of(sp)
    spn = sp.port_name_string
    if not sp.external_policy_local:
        return [rule(ch.ext, comment(f"masquerade traffic for {spn} external destinations"), ["-j", KUBE_MARK_MASQ])]
    return [
        rule(
            ch.ext,
            comment(f"masquerade LOCAL traffic for {spn} external destinations"),
            ["-m", "addrtype", "--src-type", "LOCAL", "-j", KUBE_MARK_MASQ],
        )
    ]


def external_destination_rules(ctx: RenderContext, sp: ServicePortInfo, has_external_endpoints: bool) -> list[str]:
    ch = Chains.of(sp)
    spn = sp.port_name_string
    out = []
    if sp.external_policy_local and ctx.local_cidr:
        # Pods reaching an external IP are treated as if they went out and came back.
        out.append(rule(ch.ext, comment(f"pod traffic for {spn} external destinations"), ["-s", ctx.local_cidr, "-j", ch.svc]))
    out += _mod().external_masquerade_rules(ctx, sp)
    if sp.external_policy_local:
        out.append(
            rule(
                ch.ext,
                comment(f"route LOCAL traffic for {spn} external destinations"),
                ["-m", "addrtype", "--src-type", "LOCAL", "-j", ch.svc],
            )
        )
    if has_external_endpoints:
        out.append(rule(ch.ext, ["-j", ch.svl if sp.external_policy_local else ch.svc]))
    return out


def firewall_chain_rules(ctx: RenderContext, sp: ServicePortInfo) -> list[str]:
    ch = Chains.of(sp)
    spn = sp.port_name_string
    head = comment(f"{spn} loadbalancer IP")
    out = []
    allow_from_node = False
    node_ip = ctx.config.primary_node_ip
    for cidr in sp.load_balancer_source_ranges:
        out.append(rule(ch.fw, head, ["-s", cidr, "-j", ch.ext]))
        if node_ip and ipaddress.ip_address(node_ip) in ipaddress.ip_network(cidr):
            allow_from_node = True
    if allow_from_node:
        # Node-originated traffic to a local VIP arrives with the VIP as source.
        for lbip in sp.load_balancer_ips:
            out.append(rule(ch.fw, head, ["-s", lbip, "-j", ch.ext]))
    out.append(rule(ch.fw, comment(f"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL")))
    return out


def nodeport_rules(ctx: RenderContext, sp: ServicePortInfo) -> list[str]:
    ext = Chains.of(sp).ext
    out = []
    c = comment(sp.port_name_string)
    if ctx.config.localhost_nodeports and not ctx.config.is_ipv6 and ctx.config.nfacct:
        out.append(
            rule(
                KUBE_NODEPORTS, c, proto_match(sp),
                ["-d", "127.0.0.0/8", "--dport", str(sp.node_port)],
                ["-m", "nfacct", "--nfacct-name", NFACCT_LOCALHOST_NODEPORTS, "-j", ext],
            )
        )
    out.append(rule(KUBE_NODEPORTS, c, proto_match(sp), ["--dport", str(sp.node_port), "-j", ext]))
    return out


def nodeports_jump_rules(ctx: RenderContext) -> list[str]:
    cfg = ctx.config
    c = comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    if cfg.nodeport_match_all:
        dest = ["-m", "addrtype", "--dst-type", "LOCAL"]
        # Localhost NodePorts never work on IPv6, and on IPv4 only with route_localnet.
        if cfg.is_ipv6:
            dest += ["!", "-d", "::1/128"]
        elif not cfg.localhost_nodeports:
            dest += ["!", "-d", "127.0.0.0/8"]
        return [rule(KUBE_SERVICES, c, dest, ["-j", KUBE_NODEPORTS])]
    out = []
    for ip in cfg.nodeport_ips():
        if ipaddress.ip_address(ip).is_loopback and (cfg.is_ipv6 or not cfg.localhost_nodeports):
            continue
        out.append(rule(KUBE_SERVICES, c, ["-d", ip, "-j", KUBE_NODEPORTS]))
    return out


def _filter_rules(sp: ServicePortInfo, target: str, text: str, internal: bool, external: bool) -> list[str]:
    """filter rules for the service's addresses, in kube-proxy's order."""
    c = comment(text)
    port = ["--dport", str(sp.port)]
    out = []
    if internal:
        out.append(rule(KUBE_SERVICES, c, proto_match(sp), ["-d", sp.cluster_ip], port, ["-j", target]))
    if external:
        for ip in (*sp.external_ips, *sp.load_balancer_ips):
            out.append(rule(KUBE_EXTERNAL_SERVICES, c, proto_match(sp), ["-d", ip], port, ["-j", target]))
        if sp.node_port:
            out.append(
                rule(
                    KUBE_EXTERNAL_SERVICES, c, ["-m", "addrtype", "--dst-type", "LOCAL"], proto_match(sp),
                    ["--dport", str(sp.node_port), "-j", target],
                )
            )
    return out


def no_endpoints_rules(ctx: RenderContext, sp: ServicePortInfo) -> list[str]:
    return _filter_rules(sp, "REJECT", f"{sp.port_name_string} has no endpoints", True, True)


def no_local_endpoints_rules(ctx: RenderContext, sp: ServicePortInfo, internal: bool, external: bool) -> list[str]:
    return _filter_rules(sp, "DROP", f"{sp.port_name_string} has no local endpoints", internal, external)


def proxy_firewall_rules(ctx: RenderContext, sp: ServicePortInfo) -> list[str]:
    fw = Chains.of(sp).fw
    return [
        rule(
            KUBE_PROXY_FIREWALL, comment(f"{sp.port_name_string} traffic not accepted by {fw}"), proto_match(sp),
            ["-d", lbip, "--dport", str(sp.port), "-j", "DROP"],
        )
        for lbip in sp.load_balancer_ips
    ]


def health_check_rule(ctx: RenderContext, sp: ServicePortInfo) -> str:
    return rule(
        KUBE_NODEPORTS, comment(f"{sp.port_name_string} health check node port"),
        ["-m", "tcp", "-p", "tcp", "--dport", str(sp.health_check_node_port), "-j", "ACCEPT"],
    )


def masquerade_rules(ctx: RenderContext) -> list[str]:
    m = ctx.mark
    masq = rule(KUBE_POSTROUTING, comment("kubernetes service traffic requiring SNAT"), ["-j", "MASQUERADE"])
    if ctx.config.random_fully:
        masq += " --random-fully"
    return [
        rule(KUBE_POSTROUTING, ["-m", "mark", "!", "--mark", f"{m}/{m}", "-j", "RETURN"]),
        # Clear the mark so a packet re-traversing the stack is not masqueraded twice.
        rule(KUBE_POSTROUTING, ["-j", "MARK", "--xor-mark", m]),
        masq,
        rule(KUBE_MARK_MASQ, ["-j", "MARK", "--or-mark", m]),
    ]


def localnet_firewall_rules(ctx: RenderContext) -> list[str]:
    return [
        rule(
            KUBE_FIREWALL, comment("block incoming localnet connections"),
            ["-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT"],
            ["-j", "DROP"],
        )
    ]


def forward_rules(ctx: RenderContext) -> list[str]:
    m = ctx.mark
    out = []
    if not ctx.config.conntrack_tcp_be_liberal:
        nf = ["-m", "nfacct", "--nfacct-name", NFACCT_CT_INVALID] if ctx.config.nfacct else []
        out.append(rule(KUBE_FORWARD, ["-m", "conntrack", "--ctstate", "INVALID"], nf, ["-j", "DROP"]))
    out.append(rule(KUBE_FORWARD, comment("kubernetes forwarding rules"), ["-m", "mark", "--mark", f"{m}/{m}", "-j", "ACCEPT"]))
    out.append(
        rule(
            KUBE_FORWARD, comment("kubernetes forwarding conntrack rule"),
            ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        )
    )
    return out


# --------------------------------------------------------------------------------------
# One service port


@dataclass
class ServicePortRules:
    """Everything one service port contributes to a sync."""

    filter_rules: list[str]
    nat_rules: list[str]  # in KUBE-SERVICES / KUBE-NODEPORTS (written on every sync)
    chains: list[str]  # per-service nat chains (written only when the service changed)
    chain_rules: list[str]


def service_port_rules(ctx: RenderContext, sp: ServicePortInfo) -> ServicePortRules:
    m = _mod()
    ch = Chains.of(sp)
    spn = sp.port_name_string
    has_endpoints = sp.has_endpoints
    uses_cluster_chain = bool(sp.cluster_endpoints) and sp.uses_cluster_endpoints
    uses_local_chain = bool(sp.local_endpoints) and sp.uses_local_endpoints

    internal_chain, has_internal = ch.svc, has_endpoints
    if sp.internal_policy_local:
        internal_chain = ch.svl
        has_internal = has_internal and bool(sp.local_endpoints)
    has_external = has_endpoints and (not sp.external_policy_local or bool(sp.local_endpoints))
    uses_ext_chain = has_endpoints and sp.externally_accessible
    uses_fw_chain = has_endpoints and bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
    lb_chain = ch.fw if uses_fw_chain else ch.ext

    filt: list[str] = []
    nat: list[str] = []
    if not has_endpoints:
        filt += m.no_endpoints_rules(ctx, sp)
    elif not has_internal or not has_external:
        filt += m.no_local_endpoints_rules(ctx, sp, not has_internal, not has_external)

    port = ["--dport", str(sp.port)]
    if has_internal:
        nat.append(rule(KUBE_SERVICES, cluster_ip_match(sp), ["-j", internal_chain]))
    if has_endpoints:
        for ip in sp.external_ips:
            nat.append(rule(KUBE_SERVICES, comment(f"{spn} external IP"), proto_match(sp), ["-d", ip], port, ["-j", ch.ext]))
        for ip in sp.load_balancer_ips:
            nat.append(rule(KUBE_SERVICES, comment(f"{spn} loadbalancer IP"), proto_match(sp), ["-d", ip], port, ["-j", lb_chain]))
    if uses_fw_chain:
        filt += m.proxy_firewall_rules(ctx, sp)
    if sp.node_port and has_endpoints:
        # NodePorts are not subject to loadBalancerSourceRanges (kube-proxy behaviour).
        nat += m.nodeport_rules(ctx, sp)
    if sp.health_check_node_port:
        filt.append(m.health_check_rule(ctx, sp))

    chains: list[str] = []
    crules: list[str] = []
    if has_internal:
        r = m.cluster_ip_masquerade_rule(ctx, sp, internal_chain)
        if r:
            crules.append(r)
    if uses_ext_chain:
        chains.append(ch.ext)
        crules += m.external_destination_rules(ctx, sp, has_external)
    if uses_fw_chain:
        chains.append(ch.fw)
        crules += m.firewall_chain_rules(ctx, sp)
    if uses_cluster_chain:
        chains.append(ch.svc)
        crules += m.affinity_rules(ctx, sp, ch.svc, sp.cluster_endpoints)
        crules += m.loadbalancing_rules(ctx, sp, ch.svc, sp.cluster_endpoints)
    if uses_local_chain:
        chains.append(ch.svl)
        crules += m.affinity_rules(ctx, sp, ch.svl, sp.local_endpoints)
        crules += m.loadbalancing_rules(ctx, sp, ch.svl, sp.local_endpoints)
    for ep in sp.all_reachable_endpoints:
        chains.append(sep_chain(sp, ep))
        crules.append(m.hairpin_masquerade_rule(ctx, sp, ep))
        crules.append(m.dnat_rule(ctx, sp, ep))
    return ServicePortRules(filt, nat, chains, crules)


# --------------------------------------------------------------------------------------
# The whole sync


def _chain_line(chain: str) -> str:
    return f":{chain} - [0:0]"


def render(
    proxy_state: ProxyState,
    config: ProxierConfig,
    *,
    changed: set[str] | None = None,
    existing_nat_chains: frozenset[str] = frozenset(),
    memo: PortMemo | None = None,
) -> str:
    """The ``iptables-restore --noflush`` input for one sync (see module docstring).
    ``memo`` (the daemon's) lets ports equal to the last sync's reuse their rules."""
    with gc_paused():
        return _render(proxy_state, config, changed, existing_nat_chains, memo)


def _render(
    proxy_state: ProxyState, config: ProxierConfig, changed: set[str] | None, existing_nat_chains: frozenset[str],
    memo: PortMemo | None = None,
) -> str:
    m = _mod()
    ctx = RenderContext(config, proxy_state.total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD)

    filter_chains = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]
    filter_rules: list[str] = []
    nat_chains = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]
    nat_rules = list(m.masquerade_rules(ctx))
    if not config.is_ipv6 and config.localhost_nodeports:
        # route_localnet is on: block martian 127/8 traffic arriving from outside.
        filter_chains.append(KUBE_FIREWALL)
        filter_rules += m.localnet_firewall_rules(ctx)

    active: set[str] = set()
    ports = proxy_state.service_ports
    if memo is None:
        per_port = [m.service_port_rules(ctx, sp) for sp in ports]
    else:
        settings = (config, ctx.large_cluster_mode, module_functions(m))
        per_port = memo.results(settings, ports, lambda sp: m.service_port_rules(ctx, sp))
    for sp, spr in zip(ports, per_port, strict=True):
        filter_rules += spr.filter_rules
        active.update(spr.chains)
        write_chains = changed is None or sp.service_key in changed
        # Top-level rules are always rewritten; per-service chains only when changed.
        nat_rules += spr.nat_rules
        if write_chains:
            nat_chains += spr.chains
            nat_rules += spr.chain_rules

    for chain in sorted(existing_nat_chains - active):
        if is_service_chain(chain):
            # A chain line flushes it; only then can it be deleted.
            nat_chains.append(chain)
            nat_rules.append(f"-X {chain}")

    nat_rules += m.nodeports_jump_rules(ctx)
    filter_rules += m.forward_rules(ctx)

    lines = ["*filter", *map(_chain_line, filter_chains), *filter_rules, "COMMIT"]
    lines += ["*nat", *map(_chain_line, nat_chains), *nat_rules, "COMMIT"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Jump rules from built-in chains


@dataclass(frozen=True)
class JumpRule:
    """``iptables -t <table> -I <chain> 1 <args>`` (after checking with ``-C``)."""

    table: str
    chain: str  # built-in source chain
    target: str  # kube-proxy chain jumped to (create it first)
    args: tuple[str, ...]  # exec arguments, comment unquoted


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
_JUMPS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    ("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    ("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports", ()),
    ("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", _NEW),
    ("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", _NEW),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules", ()),
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    ("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", ()),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals", ()),
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules", ()),
    # kubelet's jumps, which kube-proxy ensures too (no comment).
    ("filter", "INPUT", KUBE_FIREWALL, "", ()),
    ("filter", "OUTPUT", KUBE_FIREWALL, "", ()),
)


def jump_rules(config: ProxierConfig) -> list[JumpRule]:
    """Rules kube-proxy prepends to built-in chains on full syncs, in its order.

    Each is prepended, so the last one ends up first in its chain.
    """
    out = []
    for table, chain, target, text, extra in _JUMPS:
        args = list(extra)
        if text:
            args += ["-m", "comment", "--comment", text]
        args += ["-j", target]
        out.append(JumpRule(table, chain, target, tuple(args)))
    return out
