"""Faulty proxiers for traffic policies, hairpin, terminating endpoints and Service objects
(EndpointSlices, proxy labels, type and port changes).

Each fault changes one decision of the reference proxier: a fault-injection point of
``refproxier.iptables`` (its module docstring lists them), a function of
``refproxier.proxystate`` (which Services, slices and endpoints are proxied), or the
health check server's answer (``refproxier.healthcheck.response_for``).
"""

from __future__ import annotations

from dataclasses import replace

from refproxier import healthcheck, iptables, proxystate
from tests.faulty.faults import Fault, _wrap


def _wrap_state(name: str, make):
    setattr(proxystate, name, make(getattr(proxystate, name)))


# --- hairpin -----------------------------------------------------------------------------

def _hairpin_masquerade_tcp_only() -> None:
    def make(orig):
        def hp(ctx, sp, ep):
            if sp.protocol == "TCP":
                return orig(ctx, sp, ep)
            return iptables.rule(iptables.sep_chain(sp, ep), iptables.comment("hairpin: TCP only (fault)"))
        return hp
    _wrap("hairpin_masquerade_rule", make)


def _hairpin_masquerade_clusterip_only() -> None:
    # Masquerades a pod reaching itself only when it came through the ClusterIP.
    def make(orig):
        def hp(ctx, sp, ep):
            return orig(ctx, sp, ep).replace(" -j ", f" -m conntrack --ctorigdst {sp.cluster_ip} -j ", 1)
        return hp
    _wrap("hairpin_masquerade_rule", make)


FAULTS_LIST: list[Fault] = [
    Fault("hairpin-masquerade-tcp-only", "hairpin traffic is masqueraded for TCP Services only",
          _hairpin_masquerade_tcp_only, ("service/hairpin/clusterip-sees-node-address",)),
    Fault("hairpin-masquerade-clusterip-only", "hairpin traffic is masqueraded only when it came via the ClusterIP",
          _hairpin_masquerade_clusterip_only, ("service/hairpin/nodeport-sees-node-address",)),
]

_ = (healthcheck, replace)
