"""LoadBalancer: the ingress IPs in status.loadBalancer (ipMode VIP) are proxied on every
node, and loadBalancerSourceRanges restricts who may use them.

Kubernetes docs, "Type LoadBalancer" and "Restrict traffic to a load balancer": with
source ranges, traffic from other sources to the load balancer IP is dropped by the node
(kube-proxy: nat KUBE-FW-* lets allowed sources through, filter KUBE-PROXY-FIREWALL
DROPs the rest — silence, not a refusal). The Service's nodePort is not subject to the
source ranges. The test bed routes the LB range (203.0.113.0/24; 2001:db8:cb:71::/64 with
--ip-family ipv6) from the clients to node1; the client's secondary addresses serve as
allowed and denied sources.
"""

import pytest

from harness.api import PortSpec, dropped, expect, expect_reached, expect_true, probe, reached_only

pytestmark = pytest.mark.loadbalancer

REF = "https://kubernetes.io/docs/concepts/services-networking/service/#loadbalancer"
REF_RANGES = ("https://kubernetes.io/docs/tasks/access-application-cluster/"
              "configure-cloud-provider-firewall/#restrict-access-for-loadbalancer-service")


# a second range that contains no test host, so the rule set holds more than one source
OTHER_RANGE = {"IPv4": "198.18.0.0/15", "IPv6": "2001:db8:ff::/48"}


def lb_service(cluster, pods, lb_ip, proto="TCP", **kw):
    return cluster.create_service(pods, ports=[PortSpec(80, 8080, proto)], type="LoadBalancer",
                                  load_balancer_ips=[lb_ip], **kw)


def allowed_and_denied(cluster):
    """Two of the client's secondary addresses: one the Service allows, one it does not."""
    extra = cluster.client.addresses[1:]
    if len(extra) < 2:
        pytest.fail(f"client {cluster.client.name} needs 2 secondary addresses, has {extra}")
    return extra[0], extra[1]


@pytest.mark.behavior(
    "service/loadbalancer/ingress-ip-reachable",
    must="Traffic for a LoadBalancer ingress IP (ipMode VIP) routed to a node, from a client "
         "or a pod, MUST reach the Service's endpoints.",
    ref=REF,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
@pytest.mark.parametrize("where", ["client", "pod"])
def test_load_balancer_ip_is_reachable(cluster, where, proto):
    pods = [cluster.add_pod(cluster.nodes[0]), cluster.add_pod(cluster.nodes[1])]
    lb_ip = cluster.lb_ip(21)
    lb_service(cluster, pods, lb_ip, proto)
    src = cluster.client if where == "client" else cluster.add_pod(cluster.nodes[1])

    obs = probe(src, lb_ip, 80, proto.lower(), count=8)

    v = reached_only(obs, {p.name for p in pods})
    expect(v, f"{src.name} ({src.ip}) → LB IP {lb_ip}:80/{proto}")


@pytest.mark.behavior(
    "service/loadbalancer/from-node-itself",
    must="A node MUST reach a LoadBalancer Service at its ingress IP.",
    ref=REF,
)
def test_node_reaches_load_balancer_ip(cluster):
    pods = cluster.add_pods(2, node=cluster.nodes[0])
    lb_ip = cluster.lb_ip(22)
    lb_service(cluster, pods, lb_ip)
    for node in cluster.nodes:
        v = reached_only(probe(node, lb_ip, 80, "tcp", count=6), {p.name for p in pods})
        expect(v, f"from {node.name} ({node.ip}) → LB IP {lb_ip}:80")


@pytest.mark.behavior(
    "service/loadbalancer/source-ranges/allowed-source-reaches",
    must="A source inside loadBalancerSourceRanges MUST reach the endpoints through the LB IP.",
    ref=REF_RANGES,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_allowed_source_reaches_load_balancer_ip(cluster, proto):
    allowed, denied = allowed_and_denied(cluster)
    pods = cluster.add_pods(2)
    lb_ip = cluster.lb_ip(23)
    ranges = [cluster.host_cidr(allowed), OTHER_RANGE[cluster.family]]
    lb_service(cluster, pods, lb_ip, proto, source_ranges=ranges)

    obs = probe(cluster.client, lb_ip, 80, proto.lower(), count=6, source=allowed)

    v = reached_only(obs, {p.name for p in pods})
    expect(v, f"allowed source {allowed} (ranges {', '.join(ranges)}) → "
                      f"LB IP {lb_ip}:80/{proto}")


@pytest.mark.behavior(
    "service/loadbalancer/source-ranges/denied-source-dropped",
    must="Traffic to the LB IP from a source outside loadBalancerSourceRanges MUST be dropped "
         "(no reply, no reset, no ICMP error).",
    ref=REF_RANGES,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_denied_source_is_dropped(cluster, timing, proto):
    allowed, denied = allowed_and_denied(cluster)
    pods = cluster.add_pods(2)
    lb_ip = cluster.lb_ip(24)
    lb_service(cluster, pods, lb_ip, proto, source_ranges=[cluster.host_cidr(allowed)])

    # The allowed source first: the Service is in place, so silence below means "denied".
    v = reached_only(probe(cluster.client, lb_ip, 80, proto.lower(), count=2, source=allowed),
                     {p.name for p in pods})
    expect(v, f"allowed source {allowed} (control)")
    obs = probe(cluster.client, lb_ip, 80, proto.lower(), count=4, source=denied,
                timeout=timing.silence_s)

    v = dropped(obs)
    expect(v, f"denied source {denied} (ranges: {cluster.host_cidr(allowed)}) → LB IP {lb_ip}:80/{proto}")


@pytest.mark.behavior(
    "service/loadbalancer/source-ranges/nodeport-ignores-ranges",
    must="The nodePort of a LoadBalancer Service MUST NOT be restricted by loadBalancerSourceRanges.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
def test_nodeport_ignores_source_ranges(cluster):
    allowed, denied = allowed_and_denied(cluster)
    pods = cluster.add_pods(2)
    svc = lb_service(cluster, pods, cluster.lb_ip(25), source_ranges=[cluster.host_cidr(allowed)])

    for node in cluster.nodes:
        obs = probe(cluster.client, node.ip, svc.node_port(), "tcp", count=4, source=denied)
        v = reached_only(obs, {p.name for p in pods})
        expect(v, f"source {denied} (outside {cluster.host_cidr(allowed)}) → {node.name}:{svc.node_port()} "
                          "(nodePort)")


@pytest.mark.behavior(
    "service/loadbalancer/without-node-ports",
    must="A LoadBalancer Service with allocateLoadBalancerNodePorts false (no nodePorts) MUST "
         "still be reachable at its ingress IP, from clients and from pods.",
    ref="https://github.com/kubernetes/enhancements/tree/master/keps/sig-network/1864-disable-lb-node-ports",
)
def test_load_balancer_without_node_ports_answers_on_its_ip(cluster):
    pods = [cluster.add_pod(cluster.nodes[0]), cluster.add_pod(cluster.nodes[1])]
    lb_ip = cluster.lb_ip(26)
    svc = lb_service(cluster, pods, lb_ip, allocate_load_balancer_node_ports=False)
    expect_true(all(p.node_port is None for p in svc.ports),
                f"allocateLoadBalancerNodePorts false, yet the Service has nodePorts {svc.ports}")

    for src in (cluster.client, cluster.add_pod(cluster.nodes[1])):
        obs = probe(src, lb_ip, 80, "tcp", count=6)
        expect_reached(obs, pods, f"{src.name} ({src.ip}) -> LB IP {lb_ip}:80 of a LoadBalancer "
                                  "without nodePorts")
