"""Faulty proxiers for endpoints that are node addresses (hostNetwork pods;
conformance/test_node_endpoints.py).

Each changes one decision of the reference proxier: which endpoints ``refproxier.proxystate``
hands on, or the per-endpoint masquerade rule of ``refproxier.iptables``.
"""

from __future__ import annotations

import ipaddress

from refproxier import proxystate
from tests.faulty.faults import Fault, _wrap


def _in_cluster_cidr(config, ip: str) -> bool:
    nets = [ipaddress.ip_network(c) for c in config.family_cluster_cidrs]
    return not nets or any(ipaddress.ip_address(ip) in n for n in nets)


def _node_address_endpoints_ignored() -> None:
    # A proxier that only knows pod endpoints: addresses outside the cluster CIDR are skipped.
    orig = proxystate._slice_endpoints

    def eps(b, sl, ports):
        return {k: [e for e in v if _in_cluster_cidr(b.config, e.ip)]
                for k, v in orig(b, sl, ports).items()}
    proxystate._slice_endpoints = eps


def _node_address_endpoints_masqueraded() -> None:
    # Traffic to an endpoint outside the cluster CIDR is always masqueraded, pods' too.
    def make(orig):
        def hp(ctx, sp, ep):
            r = orig(ctx, sp, ep)
            return r if _in_cluster_cidr(ctx.config, ep.ip) else r.replace(f" -s {ep.ip}", "", 1)
        return hp
    _wrap("hairpin_masquerade_rule", make)


FAULTS_LIST: list[Fault] = [
    Fault("node-address-endpoints-ignored", "endpoints outside the cluster CIDR (hostNetwork "
          "pods) are ignored", _node_address_endpoints_ignored,
          ("service/node-endpoints/clusterip", "service/node-endpoints/nodeport")),
    Fault("node-address-endpoints-masqueraded", "all traffic to endpoints outside the cluster "
          "CIDR is masqueraded, pods' too", _node_address_endpoints_masqueraded,
          ("service/node-endpoints/clusterip",)),
]
