"""Faults in the reference proxier's nftables mode (refproxier.nftables fault points).

They run the reference proxier with ``--proxy-mode nftables`` and declare kube-proxy
nftables mode's capabilities, so the self-test also proves the suite catches defects in a
second, independently structured rule set.
"""

from __future__ import annotations

from harness.proxiers import KUBE_PROXY_NFTABLES_CAPABILITIES
from refproxier import nftables
from tests.faulty.faults import Fault

NFT_ARGS = ("--proxy-mode", "nftables", "--service-cidr", "{service_cidr}")
NFT_CAPS = ",".join(sorted(KUBE_PROXY_NFTABLES_CAPABILITIES))


def _wrap(name, make):
    setattr(nftables, name, make(getattr(nftables, name)))


def _numgen_missing_endpoint() -> None:
    def make(orig):
        return lambda ctx, sp, chain, eps: orig(ctx, sp, chain, eps[:-1] if len(eps) > 1 else eps)
    _wrap("loadbalancing_rule", make)


def _no_affinity() -> None:
    nftables.affinity_rules = lambda ctx, sp, chain, endpoints: []
    nftables.affinity_update_rule = lambda ctx, sp, ep: None


def _drop_no_endpoints() -> None:
    nftables.no_endpoints_verdict = lambda ctx, sp: "drop"


def _no_hairpin_masquerade() -> None:
    # A rule that matches nothing keeps the chain's shape without the masquerade jump.
    nftables.hairpin_masquerade_rule = lambda ctx, sp, ep: f"{ctx.ipx} saddr {ep.ip} counter"


def _endpoint_check_before_dnat() -> None:
    # kube-proxy's nftables mode before kubernetes#132456 (v1.31 to v1.33.5): the node's own
    # traffic met service-endpoints-check in an output chain at dstnat-10, before DNAT, so
    # an eTP Local external IP without local endpoints was dropped even when nat-output
    # would have short-circuited it to the Service's endpoints elsewhere (kubernetes#131765).
    nftables.JUMP_CHAINS = tuple(
        (dst, "filter-output-pre-dnat" if (dst, src) == (nftables.SERVICE_ENDPOINTS_CHECK,
                                                         "filter-output") else src, extra)
        for dst, src, extra in nftables.JUMP_CHAINS)


FAULTS_LIST = [
    Fault("nft-numgen-missing-endpoint", "nftables: numgen vmap leaves the last endpoint out",
          _numgen_missing_endpoint, ("service/loadbalancing/uniform-over-endpoints",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("nft-no-affinity", "nftables: no affinity sets or lookups",
          _no_affinity, ("service/affinity/clientip/sticky-within-timeout",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("nft-drop-no-endpoints", "nftables: no-endpoint services dropped instead of rejected",
          _drop_no_endpoints, ("service/no-endpoints/clusterip-refused-icmp",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("nft-endpoint-check-before-dnat", "nftables: the node's own traffic is checked for "
          "(local) endpoints before DNAT, so an eTP Local LB IP it should short-circuit is dropped",
          _endpoint_check_before_dnat, ("service/etp-local/pods-and-node-short-circuit",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("nft-no-hairpin-masquerade", "nftables: a pod reaching itself is not masqueraded",
          _no_hairpin_masquerade, ("service/masquerade/hairpin",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
]
