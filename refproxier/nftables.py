"""kube-proxy's nftables rules, rendered as an ``nft -f`` script (pure).

This follows ``setupNFTables``/``syncProxyRules``/``writeServiceToEndpointRules`` in
kube-proxy's pkg/proxy/nftables/proxier.go (the layout since kubernetes#132456, v1.34 and
the 1.33 cherry-pick: ``filter-*-pre-dnat`` chains at dstnat-10 for the firewall check,
``filter-forward/-input/-output`` at priority 0, ``cluster-ips-check``): the same
table, chain, set and map names, rule texts, verdict maps and element keys.

Entry point::

    render_nft(proxy_state, config, *, changed=None, previous=None) -> str

``previous`` is the proxy state whose script was last applied successfully with the same
config, or None. With ``previous=None`` the script replaces the whole ``kube-proxy`` table
in one transaction (``add table; delete table; add table ...``): what the kernel held
before does not matter; unless ``existing`` lists the table found in the kernel
(:class:`ExistingTable`): then it is kube-proxy's first sync over that table, a full sync
in place that re-creates the base chains once. With a ``previous`` state the script updates the table in place,
as kube-proxy does, so that affinity sets keep their entries:

* ``changed=None`` (kube-proxy's full sync): base and top-level chains are re-created and
  flushed, the dispatch sets/maps are flushed and refilled, every service chain is
  rewritten;
* ``changed={"ns/name", ...}`` (partial sync): only the chains of those services (and any
  chain whose content differs) are rewritten, set/map elements are added and deleted by
  difference. When nothing differs the script is empty ("").

The order of commands within a script does not change the committed ruleset, but it
changes the kernel's cost a lot: see :func:`_bind_order` and :func:`split_replace_script`
(the latter lets :mod:`refproxier.nft_exec` commit a new table in parts).

Chains and affinity sets no longer needed are flushed and deleted in the same transaction
(kube-proxy defers chain deletion by a second because kernels before 6.2 keep a chain
busy briefly after the last map element pointing to it is gone; that is not modelled).

Fault-injection points. As in :mod:`refproxier.iptables`, every decision is a module-level
function called through the module namespace (``_mod().name(...)``), so a test can
``monkeypatch.setattr(refproxier.nftables, "name", replacement)``. Rule functions return
rule bodies (the text after ``add rule <family> kube-proxy <chain>``).

``loadbalancing_rule(ctx, sp, chain, endpoints) -> str``
    ``numgen random mod N vmap { 0 : goto ep0 , ... }``.
``affinity_rules(ctx, sp, chain, endpoints) -> list[str]``
    ``ip saddr @affinity-X goto endpoint-X`` rules written before the numgen rule.
``affinity_update_rule(ctx, sp, ep) -> str | None``
    ``update @affinity-X { ip saddr }`` in the endpoint chain.
``affinity_set_spec(ctx, sp, ep) -> str``
    The ``{ type ...; flags dynamic,timeout ; timeout Ns ; }`` of an affinity set.
``hairpin_masquerade_rule(ctx, sp, ep) -> str``
    ``ip saddr <epIP> jump mark-for-masquerade``.
``dnat_rule(ctx, sp, ep) -> str``
    ``meta l4proto <p> dnat to <ip:port>``.
``cluster_ip_masquerade_rule(ctx, sp) -> str | None``
    First rule of the internal policy chain (masquerade-all, or off-cluster sources).
``external_chain_rules(ctx, sp, has_external_endpoints) -> list[str]``
    The ``external-`` chain.
``firewall_chain_rules(ctx, sp) -> list[str]``
    The ``firewall-`` chain (loadBalancerSourceRanges).
``no_endpoints_verdict(ctx, sp) -> str``, ``no_local_endpoints_verdict(ctx, sp) -> str``
    Verdicts stored in ``no-endpoint-services``/``no-endpoint-nodeports``.
``masquerade_rules(ctx) -> dict[str, list[str]]``
    ``mark-for-masquerade`` and ``masquerading``.
``effective_config(config, proxy_state) -> ProxierConfig``
    The config with the ServiceCIDR objects' CIDRs added to ``--service-cidr``'s.
``cluster_ips_check_rules(ctx) -> list[str]``
    Reject unknown ports of ClusterIPs, drop unallocated addresses in the service CIDRs.
``nodeport_dispatch_rule(ctx) -> str``, ``nodeport_endpoints_check_rule(ctx) -> str``
    Which destinations NodePorts are accepted on.
``nodeport_ips(ctx) -> list[str]``
    Elements of ``nodeport-ips``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import sys
from dataclasses import dataclass, field, replace
from types import ModuleType

from refproxier.config import ProxierConfig
from refproxier.memo import PortMemo, module_functions
from refproxier.proxystate import EndpointInfo, ProxyState, ServicePortInfo

TABLE = "kube-proxy"
TABLE_COMMENT = "rules for kube-proxy"

# Base chains: (name, type, hook, priority). kube-proxy writes the priorities as
# "dstnat-10" etc.; nft prints (and accepts) the numbers.
DSTNAT, SRCNAT = -100, 100
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    # loadBalancerSourceRanges are checked on the pre-DNAT destination.
    ("filter-prerouting-pre-dnat", "filter", "prerouting", DSTNAT - 10),
    ("filter-output-pre-dnat", "filter", "output", DSTNAT - 10),
    # The endpoint checks run after DNAT, so traffic the external chain short-circuited
    # (pods and the node itself, to an eTP Local Service without local endpoints) is no
    # longer addressed to the external IP and escapes the drop (kubernetes#131765, fixed
    # by kubernetes#132456; v1.31 ran these chains at dstnat-10 and dropped it).
    ("filter-forward", "filter", "forward", 0),
    ("filter-input", "filter", "input", 0),
    ("filter-output", "filter", "output", 0),
    ("nat-prerouting", "nat", "prerouting", DSTNAT),
    ("nat-output", "nat", "output", DSTNAT),
    ("nat-postrouting", "nat", "postrouting", SRCNAT),
)

SERVICES = "services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IPS = "cluster-ips"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_IPS = "firewall-ips"
FIREWALL_CHECK = "firewall-check"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"

# (destination chain, source base chain, extra match), in kube-proxy's order.
JUMP_CHAINS: tuple[tuple[str, str, str], ...] = (
    (FIREWALL_CHECK, "filter-prerouting-pre-dnat", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-forward", "ct state new"),
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", "ct state new"),
    (FIREWALL_CHECK, "filter-output-pre-dnat", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-output", "ct state new"),
    (SERVICES, "nat-output", ""),
    (SERVICES, "nat-prerouting", ""),
    (MASQUERADING, "nat-postrouting", ""),
)

SERVICE_PREFIX = "service-"
LOCAL_PREFIX = "local-"
EXTERNAL_PREFIX = "external-"
FIREWALL_PREFIX = "firewall-"
ENDPOINT_PREFIX = "endpoint-"
AFFINITY_PREFIX = "affinity-"

NAME_LENGTH_MAX = 256  # knftables.NameLengthMax
CHAIN_NAME_BASE_LENGTH_MAX = NAME_LENGTH_MAX - 16


def _mod() -> ModuleType:
    """This module, looked up at call time so monkeypatched functions take effect."""
    return sys.modules[__name__]


# --------------------------------------------------------------------------------------
# Names


def hash_and_truncate(name: str) -> str:
    """``base32(sha256(name))[:8] + "-" + name``, cut to 240 chars with ``...``."""
    digest = hashlib.sha256(name.encode()).digest()
    out = base64.b32encode(digest).decode()[:8] + "-" + name
    if len(out) > CHAIN_NAME_BASE_LENGTH_MAX:
        out = out[: CHAIN_NAME_BASE_LENGTH_MAX - 3] + "..."
    return out


def service_chain_base(sp: ServicePortInfo) -> str:
    """``HASH-ns/name/proto/portname`` (an unnamed port leaves a trailing slash)."""
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.protocol_lower}/{sp.port_name}")


def endpoint_chain_base(sp: ServicePortInfo, ep: EndpointInfo) -> str:
    # ':' is not allowed in chain names, so IPv6 colons become dots.
    ip = ep.ip.replace(":", ".")
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.protocol_lower}/{sp.port_name}__{ip}/{ep.port}")


@dataclass(frozen=True)
class Names:
    """The per-service chain names of one service port."""

    cluster: str
    local: str
    external: str
    firewall: str

    @classmethod
    def of(cls, sp: ServicePortInfo) -> Names:
        base = service_chain_base(sp)
        return cls(SERVICE_PREFIX + base, LOCAL_PREFIX + base, EXTERNAL_PREFIX + base, FIREWALL_PREFIX + base)


def endpoint_chain(sp: ServicePortInfo, ep: EndpointInfo) -> str:
    return ENDPOINT_PREFIX + endpoint_chain_base(sp, ep)


def affinity_set(sp: ServicePortInfo, ep: EndpointInfo) -> str:
    return AFFINITY_PREFIX + endpoint_chain_base(sp, ep)


def is_service_chain(name: str) -> bool:
    """kube-proxy's test: only per-service chains contain a '/'."""
    return "/" in name


# --------------------------------------------------------------------------------------
# Context


@dataclass(frozen=True)
class RenderContext:
    config: ProxierConfig

    @property
    def ipx(self) -> str:
        return "ip6" if self.config.is_ipv6 else "ip"

    @property
    def addr_type(self) -> str:
        return "ipv6_addr" if self.config.is_ipv6 else "ipv4_addr"

    @property
    def no_localhost(self) -> str:
        return "ip6 daddr != ::1" if self.config.is_ipv6 else "ip daddr != 127.0.0.0/8"

    @property
    def mark(self) -> str:
        return self.config.masquerade_mark

    @property
    def local_cidr(self) -> str | None:
        """The local-traffic detector's CIDR (kube-proxy DetectLocalByCIDR), if any."""
        cidrs = self.config.family_cluster_cidrs
        return cidrs[0] if cidrs else None

    @property
    def nodeport_cidrs(self) -> tuple[str, ...]:
        """--nodeport-addresses for this family. Unset means kube-proxy's nftables
        default, "primary": the node's primary IP (match-all only if it has none)."""
        cidrs = self.config.family_nodeport_cidrs
        if cidrs:
            return cidrs
        ip = self.config.primary_node_ip
        if ip is None:
            return ()
        return (str(ipaddress.ip_network(ip)),)

    @property
    def nodeport_match_all(self) -> bool:
        cidrs = self.nodeport_cidrs
        return not cidrs or any(ipaddress.ip_network(c, strict=False).prefixlen == 0 for c in cidrs)


def _proto_dport(sp: ServicePortInfo) -> str:
    return f"{sp.protocol_lower} dport {sp.port}"


# --------------------------------------------------------------------------------------
# Fault-injection points (see module docstring)


def loadbalancing_rule(
    ctx: RenderContext, sp: ServicePortInfo, chain: str, endpoints: tuple[EndpointInfo, ...]
) -> str:
    elements = " , ".join(f"{i} : goto {endpoint_chain(sp, ep)}" for i, ep in enumerate(endpoints))
    return f"numgen random mod {len(endpoints)} vmap {{ {elements} }}"


def affinity_rules(
    ctx: RenderContext, sp: ServicePortInfo, chain: str, endpoints: tuple[EndpointInfo, ...]
) -> list[str]:
    if not sp.session_affinity:
        return []
    return [f"{ctx.ipx} saddr @{affinity_set(sp, ep)} goto {endpoint_chain(sp, ep)}" for ep in endpoints]


def affinity_update_rule(ctx: RenderContext, sp: ServicePortInfo, ep: EndpointInfo) -> str | None:
    if not sp.session_affinity:
        return None
    return f"update @{affinity_set(sp, ep)} {{ {ctx.ipx} saddr }}"


def affinity_set_spec(ctx: RenderContext, sp: ServicePortInfo, ep: EndpointInfo) -> str:
    # "dynamic" although nft's docs do not need it: some kernels add it themselves, and a
    # later "add set" with different flags would then fail (kube-proxy's comment).
    return f"{{ type {ctx.addr_type} ; flags dynamic,timeout ; timeout {sp.affinity_timeout}s ; }}"


def hairpin_masquerade_rule(ctx: RenderContext, sp: ServicePortInfo, ep: EndpointInfo) -> str:
    # A pod reaching itself through the service would see its own address as source.
    return f"{ctx.ipx} saddr {ep.ip} jump {MARK_MASQ}"


def dnat_rule(ctx: RenderContext, sp: ServicePortInfo, ep: EndpointInfo) -> str:
    return f"meta l4proto {sp.protocol_lower} dnat to {ep.address}"


def cluster_ip_masquerade_rule(ctx: RenderContext, sp: ServicePortInfo) -> str | None:
    match = f"{ctx.ipx} daddr {sp.cluster_ip} {_proto_dport(sp)}"
    if ctx.config.masquerade_all:
        return f"{match} jump {MARK_MASQ}"
    if ctx.local_cidr:
        # Off-cluster sources may be routed to any node and bounce to another: masquerade.
        return f"{match} {ctx.ipx} saddr != {ctx.local_cidr} jump {MARK_MASQ}"
    return None


def external_chain_rules(ctx: RenderContext, sp: ServicePortInfo, has_external_endpoints: bool) -> list[str]:
    names = Names.of(sp)
    out: list[str] = []
    if not sp.external_policy_local:
        # Endpoints may be on other nodes: masquerade so replies come back through us.
        out.append(f"jump {MARK_MASQ}")
    else:
        if ctx.local_cidr:
            # Pods reaching an external IP behave as if they went out and came back in.
            out.append(f'{ctx.ipx} saddr {ctx.local_cidr} goto {names.cluster} comment "short-circuit pod traffic"')
        # The node's own traffic to a local VIP gets the VIP as source: masquerade it.
        out.append(f'fib saddr type local jump {MARK_MASQ} comment "masquerade local traffic"')
        out.append(f'fib saddr type local goto {names.cluster} comment "short-circuit local traffic"')
    if has_external_endpoints:
        out.append(f"goto {names.local if sp.external_policy_local else names.cluster}")
    return out


def firewall_chain_rules(ctx: RenderContext, sp: ServicePortInfo) -> list[str]:
    sources = list(sp.load_balancer_source_ranges)
    node_ip = ctx.config.primary_node_ip
    allow_from_node = node_ip is not None and any(
        ipaddress.ip_address(node_ip) in ipaddress.ip_network(c, strict=False) for c in sources
    )
    if allow_from_node:
        # A node reaching a VIP that is local to it arrives with the VIP as source.
        sources += list(sp.load_balancer_ips)
    return [f"{ctx.ipx} saddr != {{ {', '.join(sources)} }} drop"]


def no_endpoints_verdict(ctx: RenderContext, sp: ServicePortInfo) -> str:
    return f"goto {REJECT_CHAIN}"


def no_local_endpoints_verdict(ctx: RenderContext, sp: ServicePortInfo) -> str:
    return "drop"


def masquerade_rules(ctx: RenderContext) -> dict[str, list[str]]:
    m = ctx.mark
    return {
        MARK_MASQ: [f"mark set mark or {m}"],
        MASQUERADING: [
            f"mark and {m} == 0 return",
            # Clear the mark so a packet re-traversing the stack is not masqueraded twice.
            f"mark set mark xor {m}",
            "masquerade fully-random",
        ],
    }


def effective_config(config: ProxierConfig, proxy_state: ProxyState) -> ProxierConfig:
    """``config`` with the ServiceCIDR objects' CIDRs added to ``--service-cidr``'s (kube-proxy
    learns them only from the objects; the flag serves a state without any)."""
    extra = [c for c in proxy_state.service_cidrs if c not in config.service_cidrs]
    return replace(config, service_cidrs=(*config.service_cidrs, *extra)) if extra else config


def cluster_ips_check_rules(ctx: RenderContext) -> list[str]:
    out = [f'{ctx.ipx} daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"']
    cidrs = ctx.config.family_service_cidrs
    if cidrs:
        out.append(f'{ctx.ipx} daddr {{ {", ".join(cidrs)} }} drop comment "Drop traffic to unallocated ClusterIPs"')
    return out


def nodeport_dispatch_rule(ctx: RenderContext) -> str:
    if ctx.nodeport_match_all:
        # Localhost NodePorts are never supported in nftables mode.
        return f"fib daddr type local {ctx.no_localhost} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
    return f"{ctx.ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"


def nodeport_endpoints_check_rule(ctx: RenderContext) -> str:
    # Only jumped to from filter-input, so the destination is already local.
    if ctx.nodeport_match_all:
        return f"{ctx.no_localhost} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
    return f"{ctx.ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"


def nodeport_ips(ctx: RenderContext) -> list[str]:
    """Local addresses inside the NodePort CIDRs, loopback excluded (unsupported)."""
    cfg = ctx.config
    addrs = list(cfg.local_addresses or cfg.node_ips)
    out: list[str] = []
    for cidr in ctx.nodeport_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        for a in addrs:
            ip = ipaddress.ip_address(a)
            if ip.version == cfg.ip_family and ip in net and not ip.is_loopback and str(ip) not in out:
                out.append(str(ip))
    return out


# --------------------------------------------------------------------------------------
# The model: what the table should hold


@dataclass(frozen=True)
class Element:
    container: str
    key: str
    value: str | None = None  # None for set elements
    comment: str | None = None

    def text(self) -> str:
        c = f' comment "{self.comment}"' if self.comment else ""
        v = f" : {self.value}" if self.value is not None else ""
        return f"{{ {self.key}{c}{v} }}"


@dataclass
class ServicePortObjects:
    """Everything one service port contributes."""

    service_key: str
    chains: dict[str, list[str]] = field(default_factory=dict)  # chain -> rule bodies
    affinity_sets: dict[str, str] = field(default_factory=dict)  # set -> spec
    elements: list[Element] = field(default_factory=list)


def service_port_objects(ctx: RenderContext, sp: ServicePortInfo) -> ServicePortObjects:
    m = _mod()
    names = Names.of(sp)
    spn = sp.port_name_string
    proto = sp.protocol_lower
    obj = ServicePortObjects(sp.service_key)
    chains = obj.chains
    has_endpoints = sp.has_endpoints

    # Chain creation order as kube-proxy: endpoint chains, policy chains, external, firewall.
    for ep in sp.all_reachable_endpoints:
        chains[endpoint_chain(sp, ep)] = []
    uses_cluster_chain = bool(sp.cluster_endpoints) and sp.uses_cluster_endpoints
    uses_local_chain = bool(sp.local_endpoints) and sp.uses_local_endpoints
    if uses_cluster_chain:
        chains[names.cluster] = []
    if uses_local_chain:
        chains[names.local] = []

    internal_chain, has_internal = names.cluster, has_endpoints
    if sp.internal_policy_local:
        internal_chain = names.local
        has_internal = has_internal and bool(sp.local_endpoints)
    has_external = has_endpoints
    if sp.external_policy_local:
        has_external = has_external and bool(sp.local_endpoints)
    uses_external_chain = has_endpoints and sp.externally_accessible
    if uses_external_chain:
        chains[names.external] = []

    if not has_endpoints:
        internal_verdict = external_verdict = m.no_endpoints_verdict(ctx, sp)
    else:
        internal_verdict = "" if has_internal else m.no_local_endpoints_verdict(ctx, sp)
        external_verdict = "" if has_external else m.no_local_endpoints_verdict(ctx, sp)

    def key(ip: str) -> str:
        return f"{ip} . {proto} . {sp.port}"

    els = obj.elements
    els.append(Element(CLUSTER_IPS, sp.cluster_ip))
    if has_internal:
        els.append(Element(SERVICE_IPS, key(sp.cluster_ip), f"goto {internal_chain}"))
    else:
        els.append(Element(NO_ENDPOINT_SERVICES, key(sp.cluster_ip), internal_verdict, spn))
    for ip in sp.external_ips:
        if has_endpoints:
            els.append(Element(SERVICE_IPS, key(ip), f"goto {names.external}"))
        if not has_external:
            els.append(Element(NO_ENDPOINT_SERVICES, key(ip), external_verdict, spn))
    # Unlike iptables mode, the firewall applies even when there are no endpoints.
    uses_fw_chain = bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
    if uses_fw_chain:
        chains[names.firewall] = []
    for ip in sp.load_balancer_ips:
        if has_endpoints:
            els.append(Element(SERVICE_IPS, key(ip), f"goto {names.external}"))
        if uses_fw_chain:
            els.append(Element(FIREWALL_IPS, key(ip), f"goto {names.firewall}"))
    if not has_external:
        for ip in sp.load_balancer_ips:
            els.append(Element(NO_ENDPOINT_SERVICES, key(ip), external_verdict, spn))
    if sp.node_port:
        np_key = f"{proto} . {sp.node_port}"
        if has_endpoints:
            # NodePorts are not subject to loadBalancerSourceRanges (kube-proxy behaviour).
            els.append(Element(SERVICE_NODEPORTS, np_key, f"goto {names.external}"))
        if not has_external:
            els.append(Element(NO_ENDPOINT_NODEPORTS, np_key, external_verdict, spn))

    if has_internal:
        r = m.cluster_ip_masquerade_rule(ctx, sp)
        if r:
            chains.setdefault(internal_chain, []).append(r)
    if uses_external_chain:
        chains[names.external] += m.external_chain_rules(ctx, sp, has_external)
    if uses_fw_chain:
        chains[names.firewall] += m.firewall_chain_rules(ctx, sp)
    if sp.session_affinity:
        for ep in sp.all_reachable_endpoints:
            obj.affinity_sets[affinity_set(sp, ep)] = m.affinity_set_spec(ctx, sp, ep)
    if uses_cluster_chain:
        chains[names.cluster] += m.affinity_rules(ctx, sp, names.cluster, sp.cluster_endpoints)
        chains[names.cluster].append(m.loadbalancing_rule(ctx, sp, names.cluster, sp.cluster_endpoints))
    if uses_local_chain:
        chains[names.local] += m.affinity_rules(ctx, sp, names.local, sp.local_endpoints)
        chains[names.local].append(m.loadbalancing_rule(ctx, sp, names.local, sp.local_endpoints))
    for ep in sp.all_reachable_endpoints:
        rules = chains[endpoint_chain(sp, ep)]
        rules.append(m.hairpin_masquerade_rule(ctx, sp, ep))
        upd = m.affinity_update_rule(ctx, sp, ep)
        if upd:
            rules.append(upd)
        rules.append(m.dnat_rule(ctx, sp, ep))
    return obj


@dataclass
class Model:
    """The whole table for one state."""

    top_chains: dict[str, list[str]]  # non-service chains (base and regular) -> rules
    containers: dict[str, str]  # set/map name -> "set"/"map" + spec
    service_chains: dict[str, list[str]]
    chain_service: dict[str, str]  # service chain -> service key
    affinity_sets: dict[str, str]
    affinity_service: dict[str, str]
    elements: dict[tuple[str, str], Element]


def _base_spec(name: str) -> str | None:
    for n, typ, hook, prio in BASE_CHAINS:
        if n == name:
            return f"{{ type {typ} hook {hook} priority {prio} ; }}"
    return None


# Fault points the model depends on; part of the cache key so monkeypatching takes effect.
_FAULT_POINTS = (
    "loadbalancing_rule", "affinity_rules", "affinity_update_rule", "affinity_set_spec",
    "hairpin_masquerade_rule", "dnat_rule", "cluster_ip_masquerade_rule", "external_chain_rules",
    "firewall_chain_rules", "no_endpoints_verdict", "no_local_endpoints_verdict", "masquerade_rules",
    "cluster_ips_check_rules", "nodeport_dispatch_rule", "nodeport_endpoints_check_rule",
    "nodeport_ips", "service_port_objects", "effective_config",
)
# The last models built: a partial sync needs the previous state's model, which is the
# model of the previous sync's current state (same object), so keep it instead of
# rebuilding it (half the cost of a sync at 10,000 services).
_MODEL_CACHE: list[tuple[ProxyState, ProxierConfig, tuple[object, ...], Model]] = []


def build_model(proxy_state: ProxyState, config: ProxierConfig, memo: PortMemo | None = None) -> Model:
    m = _mod()
    config = m.effective_config(config, proxy_state)
    points = tuple(getattr(m, n) for n in _FAULT_POINTS)
    for st, cfg, pts, model in _MODEL_CACHE:
        if st is proxy_state and cfg == config and pts == points:
            return model
    model = _build_model(proxy_state, config, memo)
    _MODEL_CACHE.append((proxy_state, config, points, model))
    del _MODEL_CACHE[:-2]
    return model


def _build_model(proxy_state: ProxyState, config: ProxierConfig, memo: PortMemo | None) -> Model:
    m = _mod()
    ctx = RenderContext(config)
    a = ctx.addr_type
    top: dict[str, list[str]] = {name: [] for name, *_ in BASE_CHAINS}
    for dst, src, extra in JUMP_CHAINS:
        top.setdefault(dst, [])
        top[src].append(f"{extra} jump {dst}".strip())
    for name in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
        top.setdefault(name, [])
    for chain, rules in m.masquerade_rules(ctx).items():
        top[chain] += rules
    top[CLUSTER_IPS_CHECK] += m.cluster_ips_check_rules(ctx)
    top[REJECT_CHAIN] = ["reject"]
    top[SERVICE_ENDPOINTS_CHECK] += [f"{ctx.ipx} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"]
    top[NODEPORT_ENDPOINTS_CHECK] += [m.nodeport_endpoints_check_rule(ctx)]
    top[FIREWALL_CHECK] += [f"{ctx.ipx} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"]
    top[SERVICES] += [
        f"{ctx.ipx} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
        m.nodeport_dispatch_rule(ctx),
    ]

    containers = {
        CLUSTER_IPS: f'set {{ type {a} ; comment "Active ClusterIPs" ; }}',
        NO_ENDPOINT_SERVICES: f"map {{ type {a} . inet_proto . inet_service : verdict ; "
        'comment "vmap to drop or reject packets to services with no endpoints" ; }',
        NO_ENDPOINT_NODEPORTS: "map { type inet_proto . inet_service : verdict ; "
        'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }',
        FIREWALL_IPS: f"map {{ type {a} . inet_proto . inet_service : verdict ; "
        'comment "destinations that are subject to LoadBalancerSourceRanges" ; }',
        SERVICE_IPS: f"map {{ type {a} . inet_proto . inet_service : verdict ; "
        'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
        SERVICE_NODEPORTS: 'map { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }',
    }
    elements: dict[tuple[str, str], Element] = {}
    if not ctx.nodeport_match_all:
        containers[NODEPORT_IPS] = f'set {{ type {a} ; comment "IPs that accept NodePort traffic" ; }}'
        for ip in m.nodeport_ips(ctx):
            elements[(NODEPORT_IPS, ip)] = Element(NODEPORT_IPS, ip)

    service_chains: dict[str, list[str]] = {}
    chain_service: dict[str, str] = {}
    affinity: dict[str, str] = {}
    affinity_service: dict[str, str] = {}
    ports = proxy_state.service_ports
    if memo is None:
        objects = [m.service_port_objects(ctx, sp) for sp in ports]
    else:
        objects = memo.results((config, module_functions(m)), ports, lambda sp: m.service_port_objects(ctx, sp))
    for sp, obj in zip(ports, objects, strict=True):
        for chain, rules in obj.chains.items():
            service_chains[chain] = rules
            chain_service[chain] = sp.service_key
        for s, spec in obj.affinity_sets.items():
            affinity[s] = spec
            affinity_service[s] = sp.service_key
        for e in obj.elements:
            # As kube-proxy's element storage: one element per key, the last one wins.
            elements[(e.container, e.key)] = e
    return Model(top, containers, service_chains, chain_service, affinity, affinity_service, elements)


@dataclass(frozen=True)
class ExistingTable:
    """A ``kube-proxy`` table whose history the renderer does not know (the daemon's first
    sync, or the one after a failure), as listed: its chains, and its named sets with their
    element type and timeout in seconds (None without one)."""

    chains: frozenset[str]
    sets: dict[str, tuple[str, int | None]]


def _listed_model(existing: ExistingTable, cur: Model) -> Model:
    """A stand-in for the previous model, from a listing: enough for a full sync in place
    (kube-proxy's), which rewrites every chain it wants and refills every map, and must
    only know what to flush, what to delete and which affinity sets to keep."""
    chains = {c: [] for c in existing.chains if is_service_chain(c)}
    containers = {n: spec for n, spec in cur.containers.items() if not spec.startswith("set ")}
    containers.update({n: "set" for n in existing.sets if n in (CLUSTER_IPS, NODEPORT_IPS)})
    affinity: dict[str, str] = {}
    for name, (typ, timeout) in existing.sets.items():
        if name.startswith(AFFINITY_PREFIX):
            spec = cur.affinity_sets.get(name)
            same = spec is not None and f"type {typ} ;" in spec and f"timeout {timeout}s ;" in spec
            # A set whose type or timeout differs is re-created, as with a known history.
            affinity[name] = spec if same else f"listed: {typ}, timeout {timeout}"
    return Model({}, containers, chains, {}, affinity, {}, {})


# --------------------------------------------------------------------------------------
# Rendering


def _chain_decl(name: str) -> str:
    spec = _base_spec(name)
    if spec:
        return f"{name} {spec}"
    if name == REJECT_CHAIN:
        return f'{name} {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}'
    return name


# Marks the end of the table skeleton in a script that replaces the table (previous=None),
# and the ends of the parts after it. nft reads them as comments, so the whole script is
# still one valid transaction; nft_exec.Nft.apply uses them to commit the skeleton and
# each part separately when the table does not exist yet (see split_replace_script).
SKELETON_END = "# end of table skeleton: everything above only declares the table, its chains and sets"
PART_END = "# end of part: the rules above are in chains nothing jumps to yet"
# Per-service chains (other than endpoint chains) per part: each part's rules bind a few
# thousand anonymous sets, and the kernel's cost per bind grows with the transaction.
PART_CHAINS = 4000


def _bind_order(chains: list[str]) -> list[str]:
    """Chains whose rules may bind anonymous sets (the numgen vmaps, firewall source
    sets: every chain but the endpoint chains) first, endpoint chains after them.

    Each rule that binds an anonymous set costs the kernel (6.x) a walk over the whole
    transaction so far (``__nft_set_trans_bind``) and over every set of the table, so
    the fewer commands precede them in the transaction the better; the order of commands
    within one transaction does not change the committed ruleset."""
    return [c for c in chains if not c.startswith(ENDPOINT_PREFIX)] + [
        c for c in chains if c.startswith(ENDPOINT_PREFIX)
    ]


def render_nft(
    proxy_state: ProxyState,
    config: ProxierConfig,
    *,
    changed: set[str] | None = None,
    previous: ProxyState | None = None,
    memo: PortMemo | None = None,
    existing: ExistingTable | None = None,
) -> str:
    """The ``nft -f`` script for one sync (see module docstring). ``memo`` (the
    daemon's) lets ports equal to the last sync's reuse their objects.

    Commands are ordered for the kernel's sake (see :func:`_bind_order`): declarations
    first, then the rules of the per-service chains that bind anonymous sets, then
    endpoint chains, then the dispatch maps' elements and the top-level rules."""
    fam = "ip6" if config.is_ipv6 else "ip"
    t = f"{fam} {TABLE}"
    prev = build_model(previous, config) if previous is not None else None
    cur = build_model(proxy_state, config, memo)
    listed = prev is None and existing is not None
    if listed:
        # kube-proxy's first sync over a table it finds: a full sync in place, never a
        # replaced table (affinity sets keep their entries).
        prev = _listed_model(existing, cur)
    table_line = f'add table {t} {{ comment "{TABLE_COMMENT}" ; }}'
    out: list[str] = [table_line]

    if prev is None:
        # Replace the table atomically: "add" so that "delete" cannot fail on a fresh node.
        out += [f"delete table {t}", table_line]
        out += [f"add chain {t} {_chain_decl(c)}" for c in cur.top_chains]
        out += [f"add chain {t} {c}" for c in cur.service_chains]
        out += [f"add {spec.split(' ', 1)[0]} {t} {name} {spec.split(' ', 1)[1]}" for name, spec in cur.containers.items()]
        out += [f"add set {t} {name} {spec}" for name, spec in cur.affinity_sets.items()]
        out.append(SKELETON_END)
        binding = [c for c in cur.service_chains if not c.startswith(ENDPOINT_PREFIX)]
        parts = -(-len(binding) // PART_CHAINS)
        size = -(-len(binding) // parts) if parts else 0
        for i, c in enumerate(binding):
            if i and i % size == 0:
                out.append(PART_END)
            out += [f"add rule {t} {c} {r}" for r in cur.service_chains[c]]
        if binding:
            out.append(PART_END)
        for c in cur.service_chains:
            if c.startswith(ENDPOINT_PREFIX):
                out += [f"add rule {t} {c} {r}" for r in cur.service_chains[c]]
        for c, rules in cur.top_chains.items():
            out += [f"add rule {t} {c} {r}" for r in rules]
        out += [f"add element {t} {e.container} {e.text()}" for e in cur.elements.values()]
        return "\n".join(out) + "\n"

    full = changed is None or listed
    if listed:
        # As kube-proxy once per run: delete the base chains so that they are re-created
        # with this version's hooks and priorities (an "add" cannot change them).
        for c in cur.top_chains:
            if _base_spec(c):
                out += [f"add chain {t} {c}", f"delete chain {t} {c}"]
    if full:
        # kube-proxy's full sync: re-create and flush everything that is not per-service
        # (the maps are flushed below, after the rules: their flush adds one transaction
        # entry per element).
        for c in cur.top_chains:
            out += [f"add chain {t} {_chain_decl(c)}", f"flush chain {t} {c}"]
        for name, spec in cur.containers.items():
            kind, body = spec.split(" ", 1)
            out.append(f"add {kind} {t} {name} {body}")
        for name in prev.containers.keys() - cur.containers.keys():
            out.append(f"delete {prev.containers[name].split(' ', 1)[0]} {t} {name}")
    rewrite = [
        c for c, rules in cur.service_chains.items()
        if full or c not in prev.service_chains or prev.service_chains[c] != rules
        or cur.chain_service[c] in (changed or ())
    ]
    out += [f"add chain {t} {c}" for c in rewrite if c not in prev.service_chains]
    flushed: set[str] = set()
    # "add set" keeps the entries of an existing affinity set (that is the point).
    recreate = [
        name for name, spec in cur.affinity_sets.items()
        if prev.affinity_sets.get(name) not in (None, spec)
    ]
    for name, spec in cur.affinity_sets.items():
        old_spec = prev.affinity_sets.get(name)
        if name not in recreate and (full or old_spec is None or cur.affinity_service[name] in (changed or ())):
            out.append(f"add set {t} {name} {spec}")
    if recreate:
        # A new timeout cannot be set with "add set" on an existing set (nft refuses to
        # change its properties): re-create it, once the rules using it are flushed.
        services = {cur.affinity_service[name] for name in recreate}
        for c in rewrite:
            if c in prev.service_chains and cur.chain_service[c] in services:
                out.append(f"flush chain {t} {c}")
                flushed.add(c)
        for name in recreate:
            out.append(f"delete set {t} {name}")
            out.append(f"add set {t} {name} {cur.affinity_sets[name]}")
    for c in _bind_order(rewrite):
        if c in prev.service_chains and c not in flushed:
            out.append(f"flush chain {t} {c}")
        out += [f"add rule {t} {c} {r}" for r in cur.service_chains[c]]
    if full:
        for name, spec in cur.containers.items():
            out.append(f"flush {spec.split(' ', 1)[0]} {t} {name}")
        out += [f"add element {t} {e.container} {e.text()}" for e in cur.elements.values()]
    else:
        for k, e in prev.elements.items():
            new = cur.elements.get(k)
            if new is None or new.value != e.value:
                out.append(f"delete element {t} {e.container} {{ {e.key} }}")
        for k, e in cur.elements.items():
            old = prev.elements.get(k)
            if old is None or old.value != e.value:
                out.append(f"add element {t} {e.container} {e.text()}")
    if full:
        for c, rules in cur.top_chains.items():
            out += [f"add rule {t} {c} {r}" for r in rules]
    stale = [c for c in prev.service_chains if c not in cur.service_chains]
    # Flush every stale chain before deleting any: they may jump to each other.
    out += [f"flush chain {t} {c}" for c in stale]
    out += [f"delete chain {t} {c}" for c in stale]
    out += [f"delete set {t} {s}" for s in prev.affinity_sets if s not in cur.affinity_sets]
    if len(out) == 1:
        return ""  # nothing changed: kube-proxy runs an empty transaction
    return "\n".join(out) + "\n"


def split_replace_script(script: str) -> list[tuple[str, int]] | None:
    """For a script that replaces the table (``previous=None``): the transactions that
    build the same table when it does not exist yet, as ``(text, offset)``; None for any
    other script. Line ``n`` of a text is line ``n + offset`` of ``script`` (the first
    text's offset is meaningless: it is the skeleton, see below).

    The first text, the skeleton, creates the table with all its chains and sets but no
    rules and no elements, and fails if the table exists (``create table``), so it is
    only ever committed on a node without the table, where nothing is replaced. The
    following parts fill the per-service chains, a few thousand Services each, which
    nothing jumps to until the last part adds the base chains' rules and the maps'
    elements. Nothing sees a half-built table.

    Why: a rule that binds an anonymous set (the numgen vmaps) makes the kernel walk the
    whole transaction so far (``__nft_set_trans_bind``). In one transaction those rules
    must come after the ``add chain`` of the endpoint chains they jump to (11 chains per
    Service), so a full sync grows quadratically; committed in parts, each walk only
    covers its part (10,000 Services x 10 endpoints: 202 s as one transaction in the
    former order, about 20 s in parts on a shared 2-core VM; what is left grows with the
    number of sets in the table, which every bind also walks)."""
    head, sep, rest = script.partition(f"\n{SKELETON_END}\n")
    if not sep:
        return None
    lines = head.splitlines()
    if len(lines) < 3 or not lines[0].startswith("add table ") or not lines[1].startswith("delete table "):
        return None
    out = [("\n".join([lines[0].replace("add table", "create table", 1), *lines[3:]]) + "\n", 0)]
    offset = len(lines) + 1
    for part in rest.split(f"{PART_END}\n"):
        if part:
            out.append((part, offset))
        offset += part.count("\n") + 1
    return out


def cleanup_script(ip_family: int) -> str:
    """Remove the table if it exists (``add`` first so ``delete`` cannot fail)."""
    t = f"{'ip6' if ip_family == 6 else 'ip'} {TABLE}"
    return f"add table {t}\ndelete table {t}\n"
