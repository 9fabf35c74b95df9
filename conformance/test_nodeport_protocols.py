"""NodePorts by protocol and by address: TCP and UDP on one nodePort, SCTP, and the node
addresses a NodePort is accepted on.

A Service may expose one port number on TCP and on UDP with the same nodePort (DNS is the
usual case); the two are separate service ports in kube-proxy (keyed by protocol), so
removing one leaves the other working, on the nodePort and on the LB IP alike. SCTP
nodePorts are translated like TCP's; this kernel has SCTP conntrack and NAT but no SCTP
sockets, so the check sends a crafted INIT (scapy) and captures at the endpoints, as
conformance/test_sctp.py does. And kube-proxy's nftables mode accepts NodePorts only on the
node's primary address unless told otherwise (``--nodeport-addresses`` defaults to
``primary`` there; iptables mode accepts them on every local address).
"""

from __future__ import annotations

import pytest

from harness.api import (
    Outcome,
    PortSpec,
    conntrack_entries,
    expect_reached,
    expect_true,
    ip_header,
    ip_layer,
    probe,
    probe_table,
    send_crafted,
    sniff_in,
)

pytestmark = pytest.mark.nodeport

SCTP_SPORT = 40445
FRESH_UDP_SPORT = 21530  # below the kernel's ephemeral port range
INIT_TAG = 0x1234ABCE


def expect_unanswered(obs, story: str) -> None:
    answered = [o for o in obs if o.outcome is Outcome.REPLY]
    expect_true(not answered, f"{story}: {len(answered)} of {len(obs)} probes were answered by "
                              f"{sorted({o.pod for o in answered})}", probe_table(obs))


@pytest.mark.behavior(
    "service/nodeport/tcp-and-udp-same-port-remove-one",
    must="A nodePort and LB IP port exposed on both TCP and UDP MUST work for both, and when "
         "one protocol is removed from the Service the other MUST keep working on both.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#multi-port-services",
)
@pytest.mark.loadbalancer
def test_tcp_and_udp_on_one_node_port_and_lb_ip_then_one_removed(cluster, timing):
    pods = cluster.add_pods(2, node=cluster.nodes[0], ports=[(8080, "tcp"), (8080, "udp")])
    np_, lb = cluster.new_node_port(), cluster.lb_ip(61)
    tcp = PortSpec(53, 8080, "TCP", "dns-tcp", node_port=np_)
    udp = PortSpec(53, 8080, "UDP", "dns", node_port=np_)
    svc = cluster.create_service(pods, ports=[tcp, udp], type="LoadBalancer",
                                 load_balancer_ips=[lb])
    via = cluster.nodes[1]
    ways = ((via.ip, np_, f"{via.name}:{np_}"), (lb, 53, f"LB IP {lb}:53"))

    for dst, port, what in ways:
        for p in ("tcp", "udp"):
            expect_reached(probe(cluster.client, dst, port, p, count=3), pods,
                           f"both protocols: client -> {what}/{p.upper()}")

    svc.update(ports=[tcp])
    svc.set_endpoints(pods)  # the slice's ports follow the Service's
    for i, (dst, port, what) in enumerate(ways):
        expect_reached(probe(cluster.client, dst, port, "tcp", count=3), pods,
                       f"UDP removed: client -> {what}/TCP, which the Service still exposes")
        # New flows only: kube-proxy keeps a removed port's UDP conntrack entries (existing
        # flows survive a Service change, as TCP connections do), so a probe that drew the
        # kernel-chosen source port of an earlier one would be answered through it. Ports
        # below the ephemeral range (32768-60999) cannot repeat an earlier 5-tuple.
        fresh = [o for k in range(3) for o in probe(
            cluster.client, dst, port, "udp", sport=FRESH_UDP_SPORT + 10 * i + k,
            timeout=timing.silence_s)]
        expect_unanswered(fresh, f"UDP removed: client -> {what}/UDP, new flows")


@pytest.mark.behavior(
    "service/nodeport/addresses-primary-only",
    must="With nodePortAddresses left at the nftables default (primary), a NodePort MUST NOT "
         "be translated on the node's other addresses.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/#nodeport-addresses",
)
@pytest.mark.requires("nodeport-primary-only")
def test_node_port_is_not_accepted_on_a_secondary_node_address(cluster, timing):
    pods = cluster.add_pods(2, node=cluster.nodes[1])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="NodePort")
    node = cluster.nodes[0]
    src = cluster.add_pod(node)
    secondary = node.pod_gateway
    np_ = svc.node_port()

    expect_reached(probe(src, node.ip, np_, "tcp", count=3), pods,
                   f"control: {src.name} -> {node.name}'s primary address {node.ip}:{np_}")
    expect_unanswered(probe(src, secondary, np_, "tcp", count=3, timeout=timing.silence_s),
                      f"{src.name} -> {node.name}'s secondary address {secondary}:{np_} (its "
                      "pod gateway)")


def sctp_init(src: str, dst: str, sport: int, dport: int):
    from scapy.layers.sctp import SCTP, SCTPChunkInit

    return (ip_header(src, dst) / SCTP(sport=sport, dport=dport, tag=0)
            / SCTPChunkInit(init_tag=INIT_TAG, a_rwnd=65535, n_out_streams=1,
                            n_in_streams=1, init_tsn=1))


@pytest.mark.behavior(
    "service/sctp/nodeport-dnat",
    must="An SCTP packet to a node's nodePort MUST be DNATed to exactly one endpoint, on the "
         "Service port's targetPort.",
    ref="https://kubernetes.io/docs/reference/networking/service-protocols/#protocol-sctp",
)
@pytest.mark.sctp
@pytest.mark.requires("sctp")
def test_sctp_init_to_node_port_reaches_one_endpoint(cluster, timing):
    from scapy.layers.sctp import SCTP, SCTPChunkInit

    pods = cluster.add_pods(2, node=cluster.nodes[0], ports=[(8080, "tcp")])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 9090, "SCTP", "sctp")], type="NodePort")
    node, client = cluster.nodes[1], cluster.client
    np_ = svc.node_port()

    caps = [sniff_in(p) for p in pods]
    try:
        send_crafted(client, sctp_init(client.ip, node.ip, SCTP_SPORT, np_))
        seen = {}
        for p, cap in zip(pods, caps, strict=True):
            pkts = cap.packets(wait=timing.silence_s)
            # ours by its tag (masquerading may change the source port); inbound only: the
            # pod's own answer (ICMP quoting the INIT) also carries it
            seen[p.name] = [ip_layer(pk) for pk in pkts if SCTPChunkInit in pk
                            and pk[SCTPChunkInit].init_tag == INIT_TAG and ip_layer(pk).src != p.ip]
    finally:
        for cap in caps:
            cap.close()
    entries = conntrack_entries(node.netns, proto="sctp", orig_dport=np_)
    got = {name: pk for name, pk in seen.items() if pk}
    wrong = [f"{name}: {pk.summary()}" for name, pks in got.items() for pk in pks
             if pk.dst != next(p.ip for p in pods if p.name == name) or pk[SCTP].dport != 9090]
    expect_true(len(got) == 1 and not wrong,
                f"SCTP INIT {client.ip}:{SCTP_SPORT} -> {node.name} {node.ip}:{np_}: expected at "
                f"exactly one of {sorted(seen)} as <pod ip>:9090, received at "
                f"{sorted(got) or 'none'}" + (f"; wrongly addressed: {wrong}" if wrong else ""),
                f"conntrack on {node.name}:\n  " + ("\n  ".join(map(str, entries)) or "(no SCTP entry)"))
