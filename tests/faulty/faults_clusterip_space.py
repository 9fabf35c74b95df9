"""Faulty proxiers for the ClusterIP space: unexposed ports, unallocated addresses and
ServiceCIDRs (conformance/test_clusterip_space.py).

Each changes one decision of the reference proxier: the nftables ``cluster-ips-check``
chain (``refproxier.nftables.cluster_ips_check_rules``), or which ServiceCIDRs and
Services ``refproxier.proxystate`` hands on.
"""

from __future__ import annotations

import ipaddress

from refproxier import nftables, proxystate
from tests.faulty.faults import Fault
from tests.faulty.faults_nftables import NFT_ARGS, NFT_CAPS


def _no_cluster_ips_check() -> None:
    # No reject of unexposed ports, no drop of unallocated addresses: routed like any packet.
    nftables.cluster_ips_check_rules = lambda ctx: []


def _unallocated_rejected() -> None:
    # Unallocated addresses of the ServiceCIDRs refused like unexposed ports, not dropped.
    def rules(ctx):
        return [r.replace(" drop comment", " reject comment") for r in orig(ctx)]
    orig = nftables.cluster_ips_check_rules
    nftables.cluster_ips_check_rules = rules


def _service_cidr_objects_ignored() -> None:
    # Only the --service-cidr given at start counts; ServiceCIDR objects are not read.
    proxystate._family_service_cidrs = lambda cluster, family: ()


def _clusterip_outside_startup_cidr_ignored() -> None:
    # A proxier that proxies only ClusterIPs of the service CIDR it was started with.
    orig = proxystate._service_ports

    def ports(b, svc):
        out = orig(b, svc)
        nets = [ipaddress.ip_network(c) for c in b.config.family_service_cidrs]
        if out and nets and not any(ipaddress.ip_address(out[0].cluster_ip) in n for n in nets):
            return None
        return out
    proxystate._service_ports = ports


FAULTS_LIST: list[Fault] = [
    Fault("nft-no-cluster-ips-check", "nftables: no cluster-ips-check (unexposed ports and "
          "unallocated ClusterIPs are routed on)", _no_cluster_ips_check,
          ("service/clusterip-space/unexposed-port-refused",
           "service/clusterip-space/unallocated-address-dropped",
           "service/clusterip-space/new-service-cidr-unallocated-dropped"),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("nft-unallocated-rejected", "nftables: unallocated ClusterIPs are rejected, not dropped",
          _unallocated_rejected, ("service/clusterip-space/unallocated-address-dropped",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("nft-service-cidr-objects-ignored", "nftables: ServiceCIDR objects are ignored (only "
          "--service-cidr is dropped)", _service_cidr_objects_ignored,
          ("service/clusterip-space/new-service-cidr-unallocated-dropped",),
          proxier_args=NFT_ARGS, capabilities=NFT_CAPS),
    Fault("clusterip-outside-startup-cidr-ignored", "Services whose ClusterIP is outside the "
          "service CIDR given at start are not proxied", _clusterip_outside_startup_cidr_ignored,
          ("service/clusterip-space/new-service-cidr-works",),
          proxier_args=("--service-cidr", "{service_cidr}")),
]
