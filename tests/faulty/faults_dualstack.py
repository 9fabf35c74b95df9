"""Faults of dual-stack proxying: the reference proxier serving only part of a dual-stack
node's Services. They declare kube-proxy iptables mode's capabilities (with ``ipv6`` and
``dual-stack``), so the dual-stack checks run.
"""

from __future__ import annotations

import ipaddress

from harness.proxiers import KUBE_PROXY_IPTABLES_CAPABILITIES
from refproxier import proxystate, runner
from tests.faulty.faults import Fault

CAPS = ",".join(sorted(KUBE_PROXY_IPTABLES_CAPABILITIES))
CAUGHT_BY = ("service/dual-stack/clusterip-both-families",
             "service/dual-stack/nodeport-both-families")


def _primary_family_only() -> None:
    # A proxier that runs one family per process and picks the first node IP's.
    runner.run_dual_stack = lambda configs, state_dir: runner.run(configs[0], state_dir)


def _v6_slices_ignored_on_dual_stack() -> None:
    # Both loops run, but on a dual-stack node the IPv6 loop never reads IPv6 slices: its
    # Services have no endpoints (single-stack IPv6 nodes are unaffected).
    orig = proxystate._slice_endpoints

    def slice_endpoints(b, sl, service_ports):
        versions = {ipaddress.ip_address(ip).version for ip in b.config.node_ips}
        if sl.addressType == "IPv6" and len(versions) > 1:
            return {}
        return orig(b, sl, service_ports)
    proxystate._slice_endpoints = slice_endpoints


FAULTS_LIST = [
    Fault("dual-stack-primary-family-only", "dual-stack node: only the first family is proxied "
          "(only the first clusterIP served)", _primary_family_only, CAUGHT_BY,
          capabilities=CAPS),
    Fault("dual-stack-v6-slices-ignored", "dual-stack node: IPv6 EndpointSlices ignored",
          _v6_slices_ignored_on_dual_stack, CAUGHT_BY, capabilities=CAPS),
]
