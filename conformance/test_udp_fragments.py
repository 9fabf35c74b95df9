"""A UDP datagram larger than the path MTU, through a ClusterIP.

A 2,000-byte datagram leaves its sender as two IP fragments (MTU 1500); only the first
carries the UDP header. Netfilter reassembles fragments before conntrack and NAT
(nf_defrag), so kube-proxy's rules see, and translate, the whole datagram, and the
endpoint receives it complete: DNS over UDP with EDNS0, QUIC probes and syslog depend on
it. The echo server answers only a datagram that arrived whole (a lost fragment means no
reassembly, so no answer).
"""

from __future__ import annotations

import pytest

from harness.api import PortSpec, expect_reached, expect_true, probe, sniff_in

pytestmark = pytest.mark.dnat

SIZE = 2000


def is_fragment(packet) -> bool:
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6ExtHdrFragment

    if IPv6ExtHdrFragment in packet:
        return True
    return IP in packet and (bool(packet[IP].flags.MF) or packet[IP].frag > 0)


@pytest.mark.behavior(
    "service/udp/fragmented-datagram",
    must="A UDP datagram larger than the MTU (sent as IP fragments) to ClusterIP:port MUST "
         "reach an endpoint whole.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/",
)
@pytest.mark.parametrize("where", ["pod", "node"])
def test_fragmented_udp_datagram_reaches_an_endpoint(cluster, where):
    pods = cluster.add_pods(2, node=cluster.nodes[0], ports=[(8080, "udp")])
    svc = cluster.create_service(pods, ports=[PortSpec(53, 8080, "UDP", "dns")])
    src = cluster.add_pod(cluster.nodes[1]) if where == "pod" else cluster.nodes[1]

    expect_reached(probe(src, svc.cluster_ip, 53, "udp", count=2), pods,
                   f"control: {src.name} -> {svc.cluster_ip}:53/UDP, a small datagram")
    with sniff_in(src) as cap:  # the sender's own interface: proof that it fragmented
        obs = probe(src, svc.cluster_ip, 53, "udp", count=4, payload=b"f" * SIZE)
        sent = cap.packets()
    expect_true(any(is_fragment(pk) for pk in sent),
                f"{src.name} sent its {SIZE}-byte datagrams unfragmented: the check proves "
                "nothing here", "\n".join(pk.summary() for pk in sent[:8]))
    expect_reached(obs, pods, f"{src.name} -> {svc.cluster_ip}:53/UDP, {SIZE}-byte datagrams "
                              "(two IP fragments each)")
