"""Faulty proxiers: the reference proxier with exactly one defect each.

Each fault patches one fault-injection point of ``refproxier.iptables`` (see its module
docstring) and names the conformance behaviours that must catch it. They exist to prove
that every conformance test can fail (DEVELOPERS.md, "honest tests"); they are not part of
the product.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from refproxier import iptables


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    apply: Callable[[], None]
    # Behaviour ids (harness plugin's ``behavior`` marker) that must fail against it.
    caught_by: tuple[str, ...]
    # Extra ``refproxier run`` arguments (e.g. ``--proxy-mode nftables``) and, when not
    # None, the capabilities to declare instead of kube-proxy iptables mode's.
    proxier_args: tuple[str, ...] = ()
    capabilities: str | None = None
    # Extra conformance pytest arguments (e.g. ``--pod-network=bridge``).
    pytest_args: tuple[str, ...] = ()


def _wrap(name: str, make: Callable[[Callable], Callable]) -> None:
    original = getattr(iptables, name)
    setattr(iptables, name, make(original))


def _probability_one_over_n() -> None:
    def make(orig):
        def lb(ctx, sp, chain, endpoints):
            n = len(endpoints)
            return [re.sub(r"--probability \S+", f"--probability {1.0 / n:0.10f}", r)
                    for r in orig(ctx, sp, chain, endpoints)]
        return lb
    _wrap("loadbalancing_rules", make)


def _probability_coarse() -> None:
    iptables.compute_probability = lambda n: f"{1.0 / n:0.1f}"


def _missing_endpoint() -> None:
    def make(orig):
        def lb(ctx, sp, chain, endpoints):
            return orig(ctx, sp, chain, endpoints[:-1] if len(endpoints) > 1 else endpoints)
        return lb
    _wrap("loadbalancing_rules", make)


def _no_affinity() -> None:
    iptables.affinity_rules = lambda ctx, sp, chain, endpoints: []
    iptables.affinity_set_args = lambda ctx, sp, ep: []


def _affinity_fixed_timeout() -> None:
    def make(orig):
        def aff(ctx, sp, chain, endpoints):
            return [re.sub(r"--seconds \d+", "--seconds 10800", r) for r in orig(ctx, sp, chain, endpoints)]
        return aff
    _wrap("affinity_rules", make)


def _affinity_by_destination() -> None:
    # Remembers the Service address instead of the client's: every client shares one entry.
    def make_check(orig):
        return lambda ctx, sp, chain, eps: [r.replace("--reap", "--reap --rdest") for r in orig(ctx, sp, chain, eps)]

    def make_set(orig):
        return lambda ctx, sp, ep: [*orig(ctx, sp, ep), "--rdest"] if orig(ctx, sp, ep) else []
    _wrap("affinity_rules", make_check)
    _wrap("affinity_set_args", make_set)


def _affinity_fixed_at_creation() -> None:
    # A Service port keeps the sessionAffinity it had when the proxier first saw it.
    from refproxier import proxystate

    first: dict[tuple[str, str, str, str], int | None] = {}

    def make(orig):
        def ports(b, svc):
            out = orig(b, svc)
            if out is None:
                return None
            return [replace(sp, affinity_timeout=first.setdefault(
                        (sp.namespace, sp.name, sp.port_name, sp.protocol), sp.affinity_timeout))
                    for sp in out]
        return ports
    proxystate._service_ports = make(proxystate._service_ports)


def _affinity_tcp_only() -> None:
    # ClientIP affinity is written for TCP Service ports only.
    def make(orig):
        return lambda ctx, sp, *rest: [] if sp.protocol == "UDP" else orig(ctx, sp, *rest)
    _wrap("affinity_rules", make)
    _wrap("affinity_set_args", make)


def _affinity_shared_across_ports() -> None:
    # The client is remembered per endpoint address, not per endpoint chain (Service port):
    # the first port a client reaches decides the endpoint of every other port.
    def name(ep):
        return "KUBE-AFF-" + re.sub(r"[^0-9A-Za-z]", "-", ep.ip)

    def make_check(orig):
        def aff(ctx, sp, chain, endpoints):
            out = orig(ctx, sp, chain, endpoints)
            return [re.sub(r"--name \S+", f"--name {name(ep)}", r) for r, ep in zip(out, endpoints, strict=True)]
        return aff

    def make_set(orig):
        def set_args(ctx, sp, ep):
            out = orig(ctx, sp, ep)
            return [name(ep) if i and out[i - 1] == "--name" else a for i, a in enumerate(out)]
        return set_args
    _wrap("affinity_rules", make_check)
    _wrap("affinity_set_args", make_set)


def _affinity_skips_loopback() -> None:
    # Connections from 127.0.0.0/8 are never matched against the affinity lists.
    def make(orig):
        def aff(ctx, sp, chain, endpoints):
            return [r.replace(f"-A {chain} ", f"-A {chain} ! -s 127.0.0.0/8 ", 1) for r in orig(ctx, sp, chain, endpoints)]
        return aff
    _wrap("affinity_rules", make)


def _no_masquerade_external() -> None:
    iptables.cluster_ip_masquerade_rule = lambda ctx, sp, chain: None

    def make(orig):
        return lambda ctx, sp, has_ext: [r for r in orig(ctx, sp, has_ext) if "KUBE-MARK-MASQ" not in r]
    _wrap("external_destination_rules", make)


def _masquerade_pod_traffic() -> None:
    def masq_all(ctx, sp, chain):
        return iptables.rule(chain, iptables.cluster_ip_match(sp), ["-j", iptables.KUBE_MARK_MASQ])
    iptables.cluster_ip_masquerade_rule = masq_all


def _no_hairpin_masquerade() -> None:
    iptables.hairpin_masquerade_rule = lambda ctx, sp, ep: iptables.rule(
        iptables.sep_chain(sp, ep), iptables.comment("hairpin masquerade removed by fault"))


def _nodeport_local_only() -> None:
    def make(orig):
        return lambda ctx, sp: orig(ctx, sp) if any(e.is_local for e in sp.endpoints) else []
    _wrap("nodeport_rules", make)


def _no_localhost_nodeport() -> None:
    def make(orig):
        def jumps(ctx):
            return [r.replace("--dst-type LOCAL -j", "--dst-type LOCAL ! -d 127.0.0.0/8 -j")
                    if "! -d 127.0.0.0/8" not in r else r for r in orig(ctx)]
        return jumps
    _wrap("nodeports_jump_rules", make)


def _drop_no_endpoints() -> None:
    def make(orig):
        return lambda ctx, sp: [r.replace("-j REJECT", "-j DROP") for r in orig(ctx, sp)]
    _wrap("no_endpoints_rules", make)


def _stale_endpoint() -> None:
    # Keeps forwarding to the last endpoints it saw when a Service loses all of them.
    last: dict[tuple[str, str], object] = {}

    def make(orig):
        def spr(ctx, sp):
            key = (sp.port_name_string, sp.protocol)
            if sp.has_endpoints:
                last[key] = sp
            elif key in last:
                prev = last[key]
                sp = replace(sp, endpoints=prev.endpoints, cluster_endpoints=prev.cluster_endpoints,
                             local_endpoints=prev.local_endpoints,
                             all_reachable_endpoints=prev.all_reachable_endpoints, has_endpoints=True)
            return orig(ctx, sp)
        return spr
    _wrap("service_port_rules", make)


def _ignore_target_port() -> None:
    def make(orig):
        def dnat(ctx, sp, ep):
            return orig(ctx, sp, replace(ep, port=sp.port)).replace(
                iptables.sep_chain(sp, replace(ep, port=sp.port)), iptables.sep_chain(sp, ep))
        return dnat
    _wrap("dnat_rule", make)


def _include_unready() -> None:
    def make(orig):
        def spr(ctx, sp):
            every = tuple(sp.endpoints)
            if every:
                sp = replace(sp, cluster_endpoints=every, all_reachable_endpoints=every, has_endpoints=True)
            return orig(ctx, sp)
        return spr
    _wrap("service_port_rules", make)


def _clusterip_any_port() -> None:
    # Matches the ClusterIP alone: every port of the address is sent to the endpoints.
    iptables.cluster_ip_match = lambda sp: [
        *iptables.comment(f"{sp.port_name_string} cluster IP"), "-d", sp.cluster_ip]


def _nodeport_not_from_node() -> None:
    def make(orig):
        return lambda ctx: [r.replace("-j KUBE-NODEPORTS", "-m addrtype ! --src-type LOCAL -j KUBE-NODEPORTS")
                            for r in orig(ctx)]
    _wrap("nodeports_jump_rules", make)


CORE_FAULTS: list[Fault] = [
    Fault("probability-1-over-n", "every statistic rule uses 1/n instead of 1/(n-i)",
          _probability_one_over_n, ("service/loadbalancing/uniform-over-endpoints",)),
    Fault("probability-coarse", "probabilities printed with one decimal",
          _probability_coarse, ("service/loadbalancing/uniform-over-endpoints",)),
    Fault("missing-endpoint", "the last endpoint is left out of the load-balancing chain",
          _missing_endpoint, ("service/loadbalancing/uniform-over-endpoints",)),
    Fault("no-affinity", "sessionAffinity ClientIP is ignored",
          _no_affinity, ("service/affinity/clientip/sticky-within-timeout",
                         "service/affinity/clientip/shared-by-clusterip-and-nodeport",
                         "service/affinity/clientip/load-balancer-ip")),
    Fault("affinity-fixed-timeout", "affinity uses the 10800 s default instead of the Service's timeout",
          _affinity_fixed_timeout, ("service/affinity/clientip/expires-after-timeout",)),
    Fault("affinity-by-destination", "affinity remembered per Service address, not per client",
          _affinity_by_destination, ("service/affinity/clientip/spreads-clients",)),
    Fault("affinity-fixed-at-creation", "sessionAffinity changes on a live Service are ignored",
          _affinity_fixed_at_creation, ("service/affinity/clientip/follows-live-changes",)),
    Fault("affinity-tcp-only", "ClientIP affinity is applied to TCP Service ports only, not UDP",
          _affinity_tcp_only, ("service/affinity/clientip/udp",)),
    Fault("affinity-shared-across-ports", "affinity remembered per endpoint address: all ports of a Service follow the first",
          _affinity_shared_across_ports, ("service/affinity/clientip/ports-independent",)),
    Fault("affinity-skips-loopback", "ClientIP affinity ignores connections from 127.0.0.0/8 (localhost nodePorts)",
          _affinity_skips_loopback, ("service/affinity/clientip/localhost-nodeport",)),
    Fault("no-masquerade-external", "external and node traffic to services is not masqueraded",
          _no_masquerade_external, ("service/masquerade/external-to-clusterip",
                                    "service/masquerade/external-to-nodeport-cluster-policy",
                                    "service/masquerade/mark-on-exactly-masqueraded-flows")),
    Fault("masquerade-pod-traffic", "pod-to-ClusterIP traffic is masqueraded too",
          _masquerade_pod_traffic, ("service/masquerade/pod-to-clusterip-keeps-source",
                                    "service/masquerade/mark-on-exactly-masqueraded-flows")),
    Fault("no-hairpin-masquerade", "a pod reaching itself through its Service is not masqueraded",
          _no_hairpin_masquerade, ("service/masquerade/hairpin",)),
    Fault("nodeport-local-only", "NodePort rules only on nodes with a local endpoint",
          _nodeport_local_only, ("service/nodeport/remote-client-every-node",
                                 "service/nodeport/from-pods-and-other-nodes")),
    Fault("no-localhost-nodeport", "NodePorts do not answer on 127.0.0.1",
          _no_localhost_nodeport, ("service/nodeport/localhost",)),
    Fault("drop-no-endpoints", "Services without endpoints are dropped (silence), not rejected",
          _drop_no_endpoints, ("service/no-endpoints/clusterip-refused-icmp",
                               "service/no-endpoints/refusal-follows-endpoints",
                               "service/nodeport/no-endpoints-refused",
                               "service/ipv6/no-endpoints-refused")),
    Fault("stale-endpoint", "keeps forwarding to the last endpoints after a Service loses them",
          _stale_endpoint, ("service/no-endpoints/refusal-follows-endpoints",)),
    Fault("ignore-target-port", "DNAT to the Service port instead of the targetPort",
          _ignore_target_port, ("service/clusterip/dnat/target-port",
                                "service/clusterip/dnat/multi-port")),
    Fault("clusterip-any-port", "the ClusterIP rule ignores the port: every port is translated",
          _clusterip_any_port, ("service/clusterip/dnat/unexposed-ports-untouched",)),
    Fault("nodeport-not-from-node", "NodePorts are not translated for the node's own traffic",
          _nodeport_not_from_node, ("service/nodeport/from-node-itself",)),
    Fault("include-unready", "endpoints that are not ready are used too",
          _include_unready, ("service/clusterip/dnat/ready-endpoints-only",
                             "service/no-endpoints/clusterip-refused-icmp")),
]

# Faults for other feature areas live in sibling modules (tests/faulty/faults_*.py), each
# defining ``FAULTS_LIST``; they are gathered here so the self-test sees one registry.
EXTENSION_MODULES = ("faults_external", "faults_dataplane", "faults_nftables", "faults_scenarios", "faults_policies", "faults_dualstack",
                     "faults_topology", "faults_lbhealth", "faults_clusterip_space",
                     "faults_node_endpoints", "faults_lifecycle", "faults_daemon")


def _gather() -> dict[str, Fault]:
    import importlib

    out = {f.name: f for f in CORE_FAULTS}
    for mod in EXTENSION_MODULES:
        try:
            extra = importlib.import_module(f"tests.faulty.{mod}").FAULTS_LIST
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.faulty.{mod}":
                raise
            continue
        for f in extra:
            if f.name in out:
                raise ValueError(f"fault {f.name!r} defined twice (tests/faulty/{mod}.py)")
            out[f.name] = f
    return out


FAULTS: dict[str, Fault] = _gather()
