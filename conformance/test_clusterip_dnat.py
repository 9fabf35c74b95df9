"""ClusterIP: traffic to a Service's ClusterIP:port is DNATed to its ready endpoints only.

Kubernetes docs, "Service" (virtual IPs and service proxies): a connection to the
ClusterIP and port of a Service is delivered to one of its ready endpoints, on the
Service port's targetPort.
"""

import pytest

from harness.api import (
    EndpointSpec,
    Outcome,
    PortSpec,
    attach_trace,
    expect,
    flow_match,
    probe,
    reached_only,
)

pytestmark = pytest.mark.dnat

SOURCES = ["pod-same-node", "pod-other-node", "node", "client"]


def source_host(cluster, where, endpoint_node):
    """The host a probe starts from, relative to the node that holds the endpoints."""
    other = next(n for n in cluster.nodes if n.name != endpoint_node.name)
    if where == "pod-same-node":
        return cluster.add_pod(endpoint_node)
    if where == "pod-other-node":
        return cluster.add_pod(other)
    if where == "node":
        return other
    return cluster.client


@pytest.mark.behavior(
    "service/clusterip/dnat/ready-endpoints-only",
    must="A connection to ClusterIP:port MUST reach one of the Service's ready endpoints and no other pod.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/",
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
@pytest.mark.parametrize("where", SOURCES)
def test_clusterip_reaches_only_ready_endpoints(cluster, where, proto, request):
    node = cluster.nodes[0]
    ready = cluster.add_pods(2, node=node)
    unready = cluster.add_pod(node)
    bystander = cluster.add_pod(node)  # listens on the same ports, in no Service
    endpoints = [*ready, EndpointSpec(ip=unready.ip, node=node.name, ready=False, serving=False, pod=unready.name)]
    svc = cluster.create_service(endpoints, ports=[PortSpec(80, 8080, proto)])
    src = source_host(cluster, where, node)

    obs = probe(src, svc.cluster_ip, 80, proto.lower(), count=12)

    verdict = reached_only(obs, {p.name for p in ready})
    if not verdict.passed:
        # Show the reader which rule sent one such packet where, on the node that NATs it.
        natting = getattr(src, "node", None) or (src if where == "node" else cluster.nodes[0])
        attach_trace(request, natting.netns,
                     flow_match(daddr=svc.cluster_ip, dport=80, proto=proto.lower()),
                     send=lambda: probe(src, svc.cluster_ip, 80, proto.lower(), count=1))
    expect(verdict)
    assert bystander.name not in {o.pod for o in obs}


@pytest.mark.behavior(
    "service/clusterip/dnat/target-port",
    must="Traffic to a Service port MUST be delivered on that port's targetPort, numeric or named.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#defining-a-service",
)
@pytest.mark.parametrize("target", [9090, "alt"], ids=["numeric", "named"])
def test_clusterip_delivers_on_target_port(cluster, target):
    # The pods listen on 9090 only, so a DNAT to any other port is refused by the pod.
    pods = cluster.add_pods(2, ports=[(9090, "tcp")])
    svc = cluster.create_service(pods, ports=[PortSpec(80, target, "TCP", "web")])

    obs = probe(cluster.add_pod(cluster.nodes[1]), svc.cluster_ip, 80, "tcp", count=8)

    verdict = reached_only(obs, {p.name for p in pods})
    expect(verdict)


@pytest.mark.behavior(
    "service/clusterip/dnat/multi-port",
    must="Each port of a multi-port Service MUST be translated to its own targetPort and protocol.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#multi-port-services",
)
def test_multi_port_service_translates_each_port(cluster):
    # Pods listen on exactly the two target ports (8080/TCP, 9090/UDP): a probe translated
    # to the wrong port or protocol is refused by the pod instead of answered.
    pods = cluster.add_pods(3, ports=[(8080, "tcp"), (9090, "udp")])
    ports = [PortSpec(80, 8080, "TCP", "http"), PortSpec(53, 9090, "UDP", "dns")]
    svc = cluster.create_service(pods, ports=ports)
    client = cluster.add_pod(cluster.nodes[0])

    tcp = probe(client, svc.cluster_ip, 80, "tcp", count=12)
    udp = probe(client, svc.cluster_ip, 53, "udp", count=12)

    for verdict in (reached_only(tcp, {p.name for p in pods}), reached_only(udp, {p.name for p in pods})):
        expect(verdict)


@pytest.mark.behavior(
    "service/clusterip/dnat/unexposed-ports-untouched",
    must="Ports and protocols a Service does not expose MUST NOT be translated to its endpoints.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/",
)
def test_unexposed_port_and_protocol_are_not_translated(cluster, timing):
    pods = cluster.add_pods(2)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    client = cluster.add_pod(cluster.nodes[1])

    wrong_port = probe(client, svc.cluster_ip, 81, "tcp", count=3, timeout=timing.silence_s)
    wrong_proto = probe(client, svc.cluster_ip, 80, "udp", count=3, timeout=timing.silence_s)

    for obs in (wrong_port, wrong_proto):
        replies = [o for o in obs if o.outcome is Outcome.REPLY]
        assert not replies, f"a port/protocol the Service does not expose reached a pod: {replies}"
