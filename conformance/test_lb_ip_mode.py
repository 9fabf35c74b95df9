"""LoadBalancer ipMode (KEP-1860): ``VIP`` (or unset) means the load balancer delivers
packets with the LB IP as destination, so the node proxies that address itself and traffic
from its pods and from the node to the LB IP is short-circuited to the Service; ``Proxy``
means the load balancer proxies (it rewrites the destination to a node), so the node MUST
NOT claim the address: traffic from pods and nodes to it leaves the node untranslated, to
the load balancer.

kube-proxy leaves an ingress IP with ipMode Proxy out of the Service's load-balancer IPs
(pkg/proxy/serviceport.go), so no rule matches it and no conntrack entry translates it.
The test bed routes the lan's unknown destinations to the lan router, where they die: a
packet for an LB IP that left a node is seen on the node's eth0 and never answered.
"""

import pytest

from harness.api import (
    Outcome,
    PortSpec,
    conntrack_entries,
    entries_text,
    expect,
    expect_true,
    ip_layer,
    probe,
    probe_table,
    reached_only,
    sniff_in,
)

pytestmark = pytest.mark.loadbalancer

REF = "https://kubernetes.io/docs/concepts/services-networking/service/#load-balancer-ip-mode"
REF_KEP = ("https://github.com/kubernetes/enhancements/tree/master/keps/sig-network/"
           "1860-kube-proxy-IP-node-binding")


def lb_service(cluster, pods, lb_ip, ip_mode):
    return cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="LoadBalancer",
                                  load_balancer_ips=[lb_ip], lb_ip_mode=ip_mode)


def left_the_node(packets, lb_ip):
    """Captured packets that carry the LB IP and port 80 as their destination."""
    out = []
    for p in packets:
        ip = ip_layer(p)
        if ip is not None and ip.dst == lb_ip and getattr(ip.payload, "dport", None) == 80:
            out.append(p)
    return out


def translated_entries(node, lb_ip):
    """The node's conntrack entries for the LB IP whose destination was translated."""
    return [e for e in conntrack_entries(node.netns, orig_dst=lb_ip) if e.dnat]


@pytest.mark.behavior(
    "service/loadbalancer/ip-mode-proxy/not-short-circuited",
    must="Traffic from a pod or a node to a LoadBalancer ingress IP with ipMode Proxy MUST leave "
         "the node untranslated, towards the load balancer, with no conntrack entry translating it.",
    ref=REF_KEP,
)
@pytest.mark.requires("lb-ip-mode")
@pytest.mark.parametrize("where", ["pod", "node"])
def test_ip_mode_proxy_is_left_to_the_load_balancer(cluster, timing, where):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.add_pods(2, node=n1)
    lb_ip = cluster.lb_ip(61 if where == "pod" else 62)
    svc = lb_service(cluster, pods, lb_ip, "Proxy")
    src = cluster.add_pod(n2) if where == "pod" else n2

    # Control: the Service itself works from the same source.
    expect(reached_only(probe(src, svc.cluster_ip, 80, "tcp", count=2), {p.name for p in pods}),
           f"control: {where} {src.name} → ClusterIP {svc.cluster_ip}:80")

    with sniff_in(n2, "eth0") as cap:
        obs = probe(src, lb_ip, 80, "tcp", count=3, timeout=timing.silence_s)
        left = left_the_node(cap.packets(), lb_ip)
    what = f"{where} {src.name} on {n2.name} → LB IP {lb_ip}:80 (ipMode Proxy)"
    expect_true(not any(o.outcome is Outcome.REPLY for o in obs),
                f"{what}: the node must not answer for the load balancer's address",
                probe_table(obs))
    expect_true(left, f"{what}: the packets must leave {n2.name}'s eth0 addressed to {lb_ip}:80",
                f"none of the {len(obs)} probes left untranslated; probes:\n{probe_table(obs)}")
    bad = translated_entries(n2, lb_ip)
    expect_true(not bad, f"{what}: no conntrack entry on {n2.name} may translate {lb_ip}",
                entries_text(bad))


@pytest.mark.behavior(
    "service/loadbalancer/ip-mode-vip/short-circuited",
    must="Traffic from a pod or a node to a LoadBalancer ingress IP with ipMode VIP, or without "
         "ipMode, MUST be proxied on the node itself to the Service's endpoints, never leaving "
         "it for the load balancer.",
    ref=REF,
)
@pytest.mark.parametrize("mode", ["VIP", "unset"])
@pytest.mark.parametrize("where", ["pod", "node"])
def test_ip_mode_vip_is_short_circuited(cluster, where, mode):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.add_pods(2, node=n1)
    lb_ip = cluster.lb_ip({"VIP": 63, "unset": 65}[mode] + (where == "node"))
    lb_service(cluster, pods, lb_ip, "" if mode == "unset" else mode)
    src = cluster.add_pod(n2) if where == "pod" else n2

    with sniff_in(n2, "eth0") as cap:
        obs = probe(src, lb_ip, 80, "tcp", count=6)
        left = left_the_node(cap.packets(), lb_ip)
    what = f"{where} {src.name} on {n2.name} → LB IP {lb_ip}:80 (ipMode {mode})"
    expect(reached_only(obs, {p.name for p in pods}), what)
    expect_true(not left, f"{what}: no packet may leave {n2.name} still addressed to {lb_ip}",
                "\n".join(p.summary() for p in left[:5]))
