"""Faulty proxiers for external destinations and Service objects (issue 5, first half):
externalIPs, LoadBalancer IPs and source ranges, traffic policies, hairpin, terminating
endpoints, EndpointSlices and proxy labels.

Each fault changes one decision of the reference proxier. Most wrap a fault-injection point
of ``refproxier.iptables`` (its module docstring lists them); the few about which objects
are proxied at all patch the matching function of ``refproxier.proxystate`` (labels,
slices, endpoint categories), and one patches the health check server's answer.
"""

from __future__ import annotations

from dataclasses import replace

from refproxier import iptables
from tests.faulty.faults import Fault, _wrap


def _with_nat_rules(transform):
    """Wrap ``service_port_rules`` and rewrite the top-level nat rules of each port."""
    def make(orig):
        def spr(ctx, sp):
            out = orig(ctx, sp)
            return replace(out, nat_rules=[transform(ctx, sp, r) for r in out.nat_rules if transform(ctx, sp, r)])
        return spr
    _wrap("service_port_rules", make)


# --- externalIPs -------------------------------------------------------------------------

def _externalip_ignored() -> None:
    _with_nat_rules(lambda ctx, sp, r: None if 'external IP"' in r else r)


def _externalip_external_clients_only() -> None:
    # Only traffic arriving from outside is proxied: nothing for the node's own or its pods'.
    def t(ctx, sp, r):
        if 'external IP"' not in r:
            return r
        return r.replace(" -j ", f" -m addrtype ! --src-type LOCAL ! -s {ctx.local_cidr} -j ", 1)
    _with_nat_rules(t)


def _externalip_no_masquerade() -> None:
    def make(orig):
        return lambda ctx, sp: [] if sp.external_ips else orig(ctx, sp)
    _wrap("external_masquerade_rules", make)


# --- LoadBalancer ------------------------------------------------------------------------

def _lb_ip_ignored() -> None:
    _with_nat_rules(lambda ctx, sp, r: None if 'loadbalancer IP"' in r else r)


def _lb_ip_not_from_nodes() -> None:
    # The LB IP rules only see forwarded traffic (as if written for PREROUTING alone).
    def t(ctx, sp, r):
        return r.replace(" -j ", " -m addrtype ! --src-type LOCAL -j ", 1) if 'loadbalancer IP"' in r else r
    _with_nat_rules(t)


def _lb_ip_needs_node_port() -> None:
    # LB IP rules are written only for Service ports that have a nodePort.
    _with_nat_rules(lambda ctx, sp, r: None if 'loadbalancer IP"' in r and not sp.node_port else r)


def _drop_no_endpoints_external() -> None:
    # Without endpoints, external IPs and LB IPs are dropped (the ClusterIP and nodePort
    # are still rejected).
    def make(orig):
        return lambda ctx, sp: [
            r.replace("-j REJECT", "-j DROP")
            if r.startswith(f"-A {iptables.KUBE_EXTERNAL_SERVICES} ") and "--dst-type LOCAL" not in r else r
            for r in orig(ctx, sp)]
    _wrap("no_endpoints_rules", make)


def _source_ranges_ignored() -> None:
    def make(orig):
        return lambda ctx, sp: [iptables.rule(iptables.Chains.of(sp).fw, ["-j", iptables.Chains.of(sp).ext])]
    _wrap("firewall_chain_rules", make)


def _source_ranges_deny_all() -> None:
    def make(orig):
        return lambda ctx, sp: [r for r in orig(ctx, sp) if " -j " not in r]
    _wrap("firewall_chain_rules", make)


def _source_ranges_refused() -> None:
    def make(orig):
        return lambda ctx, sp: [r.replace("-j DROP", "-j REJECT") for r in orig(ctx, sp)]
    _wrap("proxy_firewall_rules", make)


def _source_ranges_on_nodeport() -> None:
    def make(orig):
        def np_rules(ctx, sp):
            rules = orig(ctx, sp)
            if not sp.load_balancer_source_ranges:
                return rules
            return [r.replace(" --dport ", f" -s {cidr} --dport ", 1)
                    for r in rules for cidr in sp.load_balancer_source_ranges]
        return np_rules
    _wrap("nodeport_rules", make)


FAULTS_LIST: list[Fault] = [
    Fault("externalip-ignored", "spec.externalIPs are not proxied at all",
          _externalip_ignored, ("service/externalips/external-client-reaches",
                                "service/externalips/from-pods-and-nodes")),
    Fault("externalip-external-clients-only", "externalIPs proxied only for traffic from outside the node and its pods",
          _externalip_external_clients_only, ("service/externalips/from-pods-and-nodes",)),
    Fault("externalip-no-masquerade", "external-IP traffic is not masqueraded (eTP Cluster)",
          _externalip_no_masquerade, ("service/externalips/external-client-masqueraded",)),
    Fault("lb-ip-ignored", "LoadBalancer ingress IPs are not proxied",
          _lb_ip_ignored, ("service/loadbalancer/ingress-ip-reachable",
                           "service/loadbalancer/from-node-itself")),
    Fault("lb-ip-not-from-nodes", "LoadBalancer ingress IPs proxied only for forwarded traffic, not the node's own",
          _lb_ip_not_from_nodes, ("service/loadbalancer/from-node-itself",)),
    Fault("lb-ip-needs-node-port", "LoadBalancer ingress IPs are proxied only for Service ports with a nodePort",
          _lb_ip_needs_node_port, ("service/loadbalancer/without-node-ports",)),
    Fault("drop-no-endpoints-external", "external IPs and LB IPs of Services without endpoints are dropped, not rejected",
          _drop_no_endpoints_external, ("service/no-endpoints/external-addresses-refused-icmp",)),
    Fault("source-ranges-ignored", "loadBalancerSourceRanges ignored: every source reaches the LB IP",
          _source_ranges_ignored, ("service/loadbalancer/source-ranges/denied-source-dropped",)),
    Fault("source-ranges-deny-all", "with loadBalancerSourceRanges, even allowed sources are dropped",
          _source_ranges_deny_all, ("service/loadbalancer/source-ranges/allowed-source-reaches",)),
    Fault("source-ranges-refused", "denied sources get ICMP port unreachable instead of silence",
          _source_ranges_refused, ("service/loadbalancer/source-ranges/denied-source-dropped",)),
    Fault("source-ranges-on-nodeport", "loadBalancerSourceRanges applied to the nodePort too",
          _source_ranges_on_nodeport, ("service/loadbalancer/source-ranges/nodeport-ignores-ranges",)),
]
