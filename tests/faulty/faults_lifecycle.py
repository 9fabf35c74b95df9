"""Faulty proxiers for UDP conntrack under traffic policies and the smaller life-cycle cases
of issue 20 (conformance/test_udp_conntrack_policies.py, test_service_lifecycle.py).

Each changes one decision of the reference proxier: which UDP service ports the conntrack
cleanup considers (``refproxier.proxystate.ProxyState.udp_service_ports``), or which
endpoints and ports ``refproxier.proxystate`` hands on.
"""

from __future__ import annotations

from dataclasses import replace

from harness.proxiers import KUBE_PROXY_IPTABLES_CAPABILITIES
from refproxier import nftables, proxystate, runner
from tests.faulty.faults import Fault, _wrap
from tests.faulty.faults_nftables import NFT_ARGS, NFT_CAPS


def _cleanup_skips_itp_local() -> None:
    # The cleanup passes over Services with internalTrafficPolicy Local.
    orig = proxystate.ProxyState.udp_service_ports

    def ports(self):
        return [sp for sp in orig(self) if not sp.internal_policy_local]
    proxystate.ProxyState.udp_service_ports = ports


def _slice_port_from_first_slice() -> None:
    # The number a port name has in a Service's first slice is used for all its slices.
    orig = proxystate._slice_endpoints
    first: dict[tuple[str, str, str, str], int] = {}

    def eps(b, sl, ports):
        out = orig(b, sl, ports)
        svc = (sl.metadata.namespace, proxystate._service_name(sl))
        for (pname, proto), lst in out.items():
            if lst:
                num = first.setdefault((*svc, pname, proto), lst[0].port)
                out[(pname, proto)] = [replace(e, port=num) for e in lst]
        return out
    proxystate._slice_endpoints = eps


def _duplicate_address_first_wins() -> None:
    # Of two endpoints with one address, the first listed is kept (kube-proxy before
    # kubernetes#135593): later duplicates are marked terminating, which the deduplication
    # in proxystate._build_proxy_state then drops.
    orig_build, orig_eps = proxystate._build_proxy_state, proxystate._slice_endpoints
    seen: set[tuple[str, str, str, str]] = set()

    def build(cluster, config):
        seen.clear()
        return orig_build(cluster, config)

    def eps(b, sl, ports):
        svc = proxystate._service_name(sl)
        out = {}
        for (pname, proto), lst in orig_eps(b, sl, ports).items():
            keep = []
            for e in lst:
                key = (svc, pname, proto, e.address)
                keep.append(replace(e, terminating=True) if key in seen else e)
                seen.add(key)
            out[(pname, proto)] = keep
        return out
    proxystate._build_proxy_state = build
    proxystate._slice_endpoints = eps


def _duplicate_endpoint_counted_twice() -> None:
    # An endpoint listed in two slices gets two places in the load-balancing cascade.
    orig_build, orig_eps = proxystate._build_proxy_state, proxystate._slice_endpoints
    count: dict[tuple[str, str], int] = {}  # (service key, ip:port) -> slices listing it
    dup: set[tuple[str, str]] = set()

    def build(cluster, config):
        count.clear()
        st = orig_build(cluster, config)
        dup.clear()
        dup.update(k for k, n in count.items() if n > 1)
        return st

    def eps(b, sl, ports):
        out = orig_eps(b, sl, ports)
        key = f"{sl.metadata.namespace}/{proxystate._service_name(sl)}"
        for addr in {e.address for lst in out.values() for e in lst}:
            count[(key, addr)] = count.get((key, addr), 0) + 1
        return out

    def make(orig):
        def lb(ctx, sp, chain, endpoints):
            twice = [e for e in endpoints if (sp.service_key, e.address) in dup]
            return orig(ctx, sp, chain, [*endpoints, *twice])
        return lb
    proxystate._build_proxy_state = build
    proxystate._slice_endpoints = eps
    _wrap("loadbalancing_rules", make)


def _ready_terminating_not_ready() -> None:
    # A terminating endpoint counts as not ready even when its ready condition says it is.
    orig = proxystate._slice_endpoints

    def eps(b, sl, ports):
        return {k: [replace(e, ready=False) if e.terminating else e for e in v]
                for k, v in orig(b, sl, ports).items()}
    proxystate._slice_endpoints = eps


def _deleted_service_takes_shared_endpoints() -> None:
    # Endpoints are forgotten by address when a Service that had them is deleted, so another
    # Service with the same endpoints loses them too.
    orig = proxystate._build_proxy_state
    last: dict[str, set[str]] = {}
    dead: set[str] = set()

    def build(cluster, config):
        st = orig(cluster, config)
        now: dict[str, set[str]] = {}
        for sp in st.service_ports:
            now.setdefault(sp.service_key, set()).update(e.ip for e in sp.endpoints)
        for key in last.keys() - now.keys():
            dead.update(last[key])
        last.clear()
        last.update(now)
        if not dead:
            return st
        ports = []
        for sp in st.service_ports:
            keep = tuple(e for e in sp.endpoints if e.ip not in dead)
            c, loc, allr, has = proxystate.categorize_endpoints(sp, keep, "")
            ports.append(replace(sp, endpoints=keep, cluster_endpoints=c, local_endpoints=loc,
                                 all_reachable_endpoints=allr, has_endpoints=has))
        return replace(st, service_ports=tuple(ports))
    proxystate._build_proxy_state = build


def _removed_protocol_takes_port() -> None:
    # Removing one protocol of a port number removes the Service's other protocol of it too.
    orig = proxystate._build_proxy_state
    last: set[tuple[str, int, str]] = set()
    gone: set[tuple[str, int]] = set()

    def build(cluster, config):
        st = orig(cluster, config)
        now = {(sp.service_key, sp.port, sp.protocol) for sp in st.service_ports}
        gone.update((k, port) for k, port, _ in last - now
                    if any(k2 == k and p2 == port for k2, p2, _ in now))
        last.clear()
        last.update(now)
        return replace(st, service_ports=tuple(sp for sp in st.service_ports
                                               if (sp.service_key, sp.port) not in gone))
    proxystate._build_proxy_state = build


def _nodeport_skips_sctp() -> None:
    def make(orig):
        return lambda ctx, sp: [] if sp.protocol == "SCTP" else orig(ctx, sp)
    _wrap("nodeport_rules", make)


def _nft_nodeport_all_addresses() -> None:
    # NodePorts accepted on every local address, as iptables mode does.
    nftables.nodeport_dispatch_rule = lambda ctx: (
        f"fib daddr type local {ctx.no_localhost} meta l4proto . th dport vmap @{nftables.SERVICE_NODEPORTS}")


def _dnat_up_to_mtu() -> None:
    # Translates only packets up to 1500 bytes: a reassembled fragmented datagram is not.
    def make(orig):
        return lambda ctx, sp, ep: orig(ctx, sp, ep).replace(" -j DNAT", " -m length --length 0:1500 -j DNAT", 1)
    _wrap("dnat_rule", make)


def _nft_dnat_up_to_mtu() -> None:
    orig = nftables.dnat_rule
    nftables.dnat_rule = lambda ctx, sp, ep: "meta length <= 1500 " + orig(ctx, sp, ep)


def _no_other_mode_cleanup() -> None:
    # Starts without removing what the other mode (iptables/nftables) left on the node.
    runner.platform_cleanup = lambda config: None


_IPT_CAPS = ",".join(sorted(KUBE_PROXY_IPTABLES_CAPABILITIES))

FAULTS_LIST: list[Fault] = [
    Fault("no-other-mode-cleanup", "iptables mode leaves the nftables mode's table in place at "
          "start", _no_other_mode_cleanup, ("service/restart/other-mode-rules-cleaned",),
          capabilities=_IPT_CAPS),
    Fault("nft-no-other-mode-cleanup", "nftables: the iptables mode's chains are left in place "
          "at start", _no_other_mode_cleanup, ("service/restart/other-mode-rules-cleaned",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("dnat-up-to-mtu", "only packets up to 1500 bytes are DNATed (a reassembled "
          "fragmented datagram is not)", _dnat_up_to_mtu, ("service/udp/fragmented-datagram",)),
    Fault("nft-dnat-up-to-mtu", "nftables: only packets up to 1500 bytes are DNATed",
          _nft_dnat_up_to_mtu, ("service/udp/fragmented-datagram",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("removed-protocol-takes-port", "removing one protocol of a Service port number removes "
          "the other protocol of it too", _removed_protocol_takes_port,
          ("service/nodeport/tcp-and-udp-same-port-remove-one",)),
    Fault("nodeport-skips-sctp", "SCTP service ports get no NodePort rules", _nodeport_skips_sctp,
          ("service/sctp/nodeport-dnat",),
          capabilities=_IPT_CAPS),
    Fault("nft-nodeport-all-addresses", "nftables: NodePorts accepted on every local address, "
          "not only the primary one", _nft_nodeport_all_addresses,
          ("service/nodeport/addresses-primary-only",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("slice-port-from-first-slice", "a port name's number in a Service's first "
          "EndpointSlice is used for the endpoints of every slice", _slice_port_from_first_slice,
          ("service/slices/per-slice-port-mapping",)),
    Fault("duplicate-address-first-wins", "of two endpoints with one address the first listed "
          "is used, even when it is terminating", _duplicate_address_first_wins,
          ("service/slices/duplicate-address-not-terminating-wins",)),
    Fault("duplicate-endpoint-counted-twice", "an endpoint listed in two slices gets two places "
          "in the load-balancing cascade", _duplicate_endpoint_counted_twice,
          ("service/slices/duplicate-endpoint-counted-once",)),
    Fault("ready-terminating-not-ready", "an endpoint that is ready and terminating is treated "
          "as not ready", _ready_terminating_not_ready,
          ("service/slices/ready-and-terminating-used",)),
    Fault("deleted-service-takes-shared-endpoints", "deleting a Service removes its endpoint "
          "addresses from every other Service", _deleted_service_takes_shared_endpoints,
          ("service/slices/shared-endpoints-other-deleted",)),
    Fault("conntrack-cleanup-skips-itp-local", "stale UDP conntrack entries of Services with "
          "internalTrafficPolicy Local are not deleted", _cleanup_skips_itp_local,
          ("service/udp/conntrack/itp-local-flow-follows-local-replacement",)),
]
