"""SCTP Services: an SCTP association to ClusterIP:port is DNATed like TCP and UDP.

Kubernetes Services support ``protocol: SCTP`` (GA in v1.20); kube-proxy's iptables mode
writes the same rules with ``-m sctp -p sctp``. This kernel may have SCTP conntrack and NAT
without SCTP sockets, so the check sends a crafted INIT chunk (scapy) from a client pod and
captures at the endpoints: exactly one endpoint must receive it, addressed to itself on the
targetPort, and the node's conntrack table must show the translation.
"""

import pytest

from harness.api import PortSpec, conntrack_entries, ip_header, ip_layer, send_crafted, sniff_in

pytestmark = [pytest.mark.sctp, pytest.mark.requires("sctp")]

SPORT = 40444


def sctp_init(src, dst, sport, dport):
    from scapy.layers.sctp import SCTP, SCTPChunkInit

    return (ip_header(src, dst) / SCTP(sport=sport, dport=dport, tag=0)
            / SCTPChunkInit(init_tag=0x1234ABCD, a_rwnd=65535, n_out_streams=1,
                            n_in_streams=1, init_tsn=1))


@pytest.mark.behavior(
    "service/sctp/clusterip-dnat",
    must="An SCTP packet to ClusterIP:port MUST be DNATed to exactly one endpoint, on the "
         "Service port's targetPort.",
    ref="https://kubernetes.io/docs/reference/networking/service-protocols/#protocol-sctp",
)
def test_sctp_init_to_clusterip_reaches_one_endpoint(cluster, timing):
    from scapy.layers.sctp import SCTP

    pods = cluster.add_pods(2, node=cluster.nodes[0], ports=[(8080, "tcp")])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 9090, "SCTP", "sctp")])
    node = cluster.nodes[1]
    client = cluster.add_pod(node, ports=[(8080, "tcp")])

    caps = [sniff_in(p) for p in pods]
    try:
        send_crafted(client, sctp_init(client.ip, svc.cluster_ip, SPORT, 80))
        seen = {}
        for p, cap in zip(pods, caps, strict=True):
            pkts = cap.packets(wait=timing.silence_s)
            # inbound only: the pod's own answer (ICMP(v6) quoting the INIT) also carries it
            seen[p.name] = [ip_layer(pk) for pk in pkts if SCTP in pk and pk[SCTP].sport == SPORT
                            and ip_layer(pk).src != p.ip]
    finally:
        for cap in caps:
            cap.close()
    entries = conntrack_entries(node.netns, proto="sctp", orig_dst=svc.cluster_ip)
    got = {name: pk for name, pk in seen.items() if pk}
    wrong = [f"{name}: {pk.summary()}" for name, pks in got.items() for pk in pks
             if pk.dst != next(p.ip for p in pods if p.name == name) or pk[SCTP].dport != 9090]
    assert len(got) == 1 and not wrong, (
        f"SCTP INIT {client.ip}:{SPORT} -> {svc.cluster_ip}:80 from {client.name}; expected at "
        f"exactly one of {sorted(seen)} as <pod ip>:9090.\nreceived: "
        + (", ".join(f"{n}: {[pk.summary() for pk in pks]}" for n, pks in got.items()) or "nowhere")
        + (f"\nwrongly addressed: {wrong}" if wrong else "")
        + f"\nconntrack on {node.name}:\n  " + ("\n  ".join(map(str, entries)) or "(no SCTP entry)")
    )
