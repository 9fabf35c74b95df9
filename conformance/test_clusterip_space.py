"""ClusterIP space: the ports and addresses of the service CIDRs that no Service uses.

kube-proxy's nftables mode checks every new connection after DNAT, in the forward and
output hooks (pkg/proxy/nftables/proxier.go, chain ``cluster-ips-check``): a packet still
addressed to an active ClusterIP was not translated, so its port or protocol is not one the
Service exposes, and it is rejected (ICMP port unreachable); a packet to any other address
inside a ServiceCIDR is for a ClusterIP nobody has, and it is dropped. The ServiceCIDRs are
the ``networking.k8s.io/v1`` ServiceCIDR objects (``OnServiceCIDRsChanged``); a CIDR
published later is covered from kube-proxy's next full sync, and a Service allocated from
it works at once, in either mode. iptables mode has neither rule: such packets are routed
like any other.

The probes start in pods: a node's own packet dropped in the output hook fails its
``send`` with EPERM instead of meeting silence.
"""

from __future__ import annotations

import ipaddress

import pytest

from harness.api import (
    PortSpec,
    expect_dropped,
    expect_reached,
    expect_refused,
    expect_true,
    ip_layer,
    probe,
    sniff_in,
)

pytestmark = pytest.mark.clusterip_space

PORT_UNREACHABLE = (3, 3)
EXTRA_CIDR_NAME = "svcconf-extra"


def unallocated(cidr: str) -> str:
    """An address of ``cidr`` the harness never allocates (it counts up from the start)."""
    net = ipaddress.ip_network(cidr)
    return str(net.broadcast_address - 5)


def expect_dropped_at_node(src, ip: str, port: int, proto: str, timing, story: str) -> None:
    """``src`` (a pod) gets no answer from ``ip``:``port``, and its node did not route the
    packet on: the lan router drops what is not for it silently too, so silence alone would
    not show that the node dropped it."""
    with sniff_in(src.node) as cap:  # the node's lan interface
        obs = probe(src, ip, port, proto, count=3, timeout=timing.silence_s)
        left = [p for p in cap.packets() if (layer := ip_layer(p)) is not None and layer.dst == ip]
    expect_dropped(obs, story)
    expect_true(not left, f"{story}: {src.node.name} routed {len(left)} of the packets on "
                          "instead of dropping them",
                "\n".join(p.summary() for p in left[:5]))


def extra_cidr(cidr: str) -> str:
    """A CIDR of the same size right after ``cidr``: outside every range of the topology."""
    net = ipaddress.ip_network(cidr)
    return str(ipaddress.ip_network(f"{net.broadcast_address + 1}/{net.prefixlen}"))


@pytest.mark.behavior(
    "service/clusterip-space/unexposed-port-refused",
    must="Traffic to a ClusterIP on a port or protocol its Service does not expose MUST be "
         "refused with ICMP port unreachable.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/nftables/proxier.go",
)
@pytest.mark.requires("clusterip-check")
def test_unexposed_port_of_a_clusterip_is_refused(cluster):
    pods = cluster.add_pods(2, node=cluster.nodes[0])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    src = cluster.add_pod(cluster.nodes[1])

    expect_reached(probe(src, svc.cluster_ip, 80, "tcp", count=3), pods,
                   f"control: {src.name} -> {svc.cluster_ip}:80/TCP, the exposed port")
    for port, proto in ((81, "tcp"), (80, "udp")):
        obs = probe(src, svc.cluster_ip, port, proto, count=3)
        expect_refused(obs, f"{src.name} -> {svc.cluster_ip}:{port}/{proto.upper()}, which the "
                            "Service (80/TCP only) does not expose", icmp=PORT_UNREACHABLE)


@pytest.mark.behavior(
    "service/clusterip-space/unallocated-address-dropped",
    must="Traffic to an address inside a ServiceCIDR that no Service has MUST be dropped.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/nftables/proxier.go",
)
@pytest.mark.requires("clusterip-check")
def test_unallocated_address_of_the_service_cidr_is_dropped(cluster, timing):
    pods = cluster.add_pods(1, node=cluster.nodes[0])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])  # one active ClusterIP
    src = cluster.add_pod(cluster.nodes[1])
    ip = unallocated(cluster.service_cidr)

    for proto in ("tcp", "udp"):
        expect_dropped_at_node(src, ip, 80, proto, timing,
                               f"{src.name} -> {ip}:80/{proto.upper()}: inside ServiceCIDR "
                               f"{cluster.service_cidr}, allocated to no Service (one is "
                               f"{svc.cluster_ip})")


@pytest.mark.behavior(
    "service/clusterip-space/new-service-cidr-works",
    must="A Service whose ClusterIP comes from a ServiceCIDR published after the proxier "
         "started MUST be proxied to its endpoints.",
    ref="https://kubernetes.io/docs/tasks/network/extend-service-ip-ranges/",
)
def test_service_from_a_new_service_cidr_works(cluster):
    cidr = extra_cidr(cluster.service_cidr)
    cluster.add_service_cidr(EXTRA_CIDR_NAME, [cidr])
    pods = cluster.add_pods(2, node=cluster.nodes[0])
    ip = str(ipaddress.ip_network(cidr).network_address + 10)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP", "web"), PortSpec(53, 8080, "UDP", "dns")],
                                 cluster_ip=ip)

    for src in (cluster.add_pod(cluster.nodes[1]), cluster.nodes[1]):
        for port, proto in ((80, "tcp"), (53, "udp")):
            obs = probe(src, svc.cluster_ip, port, proto, count=6)
            expect_reached(obs, pods, f"{src.name} -> {ip}:{port}/{proto.upper()}, a ClusterIP "
                                      f"of the new ServiceCIDR {cidr}")


@pytest.mark.behavior(
    "service/clusterip-space/new-service-cidr-unallocated-dropped",
    must="Ports that the Services of a newly published ServiceCIDR do not expose MUST be "
         "refused at once; its addresses that no Service has MUST be dropped once the proxier "
         "has synced in full (at the latest after a restart).",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/config/config.go",
)
@pytest.mark.requires("clusterip-check")
def test_unallocated_address_of_a_new_service_cidr_is_dropped(cluster, timing):
    # kube-proxy writes the drop rule in setupNFTables, on full syncs only, and a new
    # ServiceCIDR (OnServiceCIDRsChanged) asks for none: seen with v1.37.2, whose partial
    # syncs after the CIDR was published left the rule as it was. The active ClusterIPs
    # (cluster-ips set) are updated on every sync.
    cidr = extra_cidr(cluster.service_cidr)
    src = cluster.add_pod(cluster.nodes[1])
    cluster.add_service_cidr(EXTRA_CIDR_NAME, [cidr])
    pods = cluster.add_pods(1, node=cluster.nodes[0])
    ip = str(ipaddress.ip_network(cidr).network_address + 10)
    cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], cluster_ip=ip)
    free = unallocated(cidr)

    expect_reached(probe(src, ip, 80, "tcp", count=3), pods,
                   f"control: {src.name} -> {ip}:80/TCP, a ClusterIP of the new ServiceCIDR")
    obs = probe(src, ip, 81, "tcp", count=3)
    expect_refused(obs, f"{src.name} -> {ip}:81/TCP, a port the Service of the new "
                        "ServiceCIDR does not expose", icmp=PORT_UNREACHABLE)

    cluster.env.restart_proxier(src.node.name)
    cluster.env.sync()  # the restarted proxier's first sync is a full one
    expect_dropped_at_node(src, free, 80, "tcp", timing,
                           f"{src.name} -> {free}:80/TCP: inside the new ServiceCIDR {cidr}, "
                           f"allocated to no Service, after the proxier on {src.node.name} "
                           "restarted")
