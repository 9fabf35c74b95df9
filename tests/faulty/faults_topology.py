"""Faulty proxiers for topology-aware routing (issue 20, item 1): each changes one decision
of kube-proxy's ``CategorizeEndpoints`` / ``topologyModeFromHints`` as the reference
proxier implements them (``refproxier.proxystate``: ``topology_mode``,
``available_for_topology``, ``categorize_endpoints``, all called through the module)."""

from __future__ import annotations

from dataclasses import replace

from tests.faulty.faults import Fault

# kube-proxy iptables mode's capabilities as the self-test declares them, plus the hints
CAPS = ("acks,localhost-nodeports,masquerade-mark,affinity,reject-no-endpoints,"
        "health-check-nodeport,udp-conntrack-cleanup,ipv6,topology-hints,node-hints")


def _hints_ignored() -> None:
    # Every ready endpoint is used, whatever the hints say (a proxier without the feature).
    from refproxier import proxystate

    proxystate.topology_mode = lambda endpoints, node, zone: ""


def _zone_hints_without_fallback() -> None:
    # Keeps to the zone's hinted endpoints as soon as any endpoint has a hint: no fallback
    # when one lacks hints, and nothing at all (refused) for a zone nobody is hinted for.
    from refproxier import proxystate

    orig = proxystate.topology_mode

    def mode(endpoints, node, zone):
        endpoints = list(endpoints)
        got = orig(endpoints, node, zone)
        if got:
            return got
        return "PreferSameZone" if any(e.zone_hints for e in endpoints if e.ready) else ""
    proxystate.topology_mode = mode


def _hints_on_local_policy() -> None:
    # Local traffic policies narrowed by the zone hints too.
    from refproxier import proxystate

    orig = proxystate.categorize_endpoints

    def categorize(sp, endpoints, zone="", node=""):
        c, loc, allr, has = orig(sp, endpoints, zone, node)
        if loc and all(e.zone_hints for e in endpoints if e.ready):
            loc = tuple(e for e in loc if zone in e.zone_hints)
            allr = loc if not sp.uses_cluster_endpoints else allr
        return c, loc, allr, has
    proxystate.categorize_endpoints = categorize


def _node_hints_ignored() -> None:
    # Same-node hints not read (the reference proxier before this change; kube-proxy with
    # PreferSameTrafficDistribution off): zone hints only.
    from refproxier import proxystate

    orig = proxystate.topology_mode

    def mode(endpoints, node, zone):
        return orig([replace(e, node_hints=frozenset()) for e in endpoints], node, zone)
    proxystate.topology_mode = mode


def _node_hints_no_zone_fallback() -> None:
    # Without an endpoint for its node, a node uses every endpoint instead of its zone's.
    from refproxier import proxystate

    orig = proxystate.topology_mode

    def mode(endpoints, node, zone):
        endpoints = list(endpoints)
        got = orig(endpoints, node, zone)
        if got == "PreferSameZone" and all(e.node_hints for e in endpoints if e.ready):
            return ""
        return got
    proxystate.topology_mode = mode


FAULTS_LIST = [
    Fault("topology-hints-ignored", "EndpointSlice zone and node hints are ignored",
          _hints_ignored,
          ("service/topology/zone-hints/same-zone-only",
           "service/topology/traffic-distribution/prefer-close",
           "service/topology/traffic-distribution/prefer-same-node"),
          capabilities=CAPS),
    Fault("topology-hints-no-fallback",
          "zone hints are obeyed even when an endpoint lacks them or the zone has none",
          _zone_hints_without_fallback, ("service/topology/zone-hints/fallback-to-all",),
          capabilities=CAPS),
    Fault("topology-hints-on-local-policy", "Local traffic policies are narrowed by zone hints",
          _hints_on_local_policy, ("service/topology/local-policy-ignores-hints",),
          capabilities=CAPS),
    Fault("node-hints-ignored", "hints.forNodes (PreferSameNode) is ignored; zone hints only",
          _node_hints_ignored, ("service/topology/traffic-distribution/prefer-same-node",),
          capabilities=CAPS),
    Fault("node-hints-no-zone-fallback",
          "a node with no endpoint hinted for it uses every endpoint, not its zone's",
          _node_hints_no_zone_fallback,
          ("service/topology/traffic-distribution/prefer-same-node",), capabilities=CAPS),
]
