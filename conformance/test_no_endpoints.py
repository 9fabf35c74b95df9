"""Services without endpoints: clients are actively refused, not left to time out.

kube-proxy installs a filter-table REJECT (ICMP port unreachable) for the ClusterIP of a
Service that has no ready or serving endpoints (kubernetes/kubernetes#43969, #72534).
"""

import pytest

from harness.api import EndpointSpec, PortSpec, expect, expect_refused, probe, reached_only, refused

pytestmark = [pytest.mark.no_endpoints, pytest.mark.requires("reject-no-endpoints")]

PORT_UNREACHABLE = (3, 3)


@pytest.mark.behavior(
    "service/no-endpoints/clusterip-refused-icmp",
    must="A Service with no ready or serving endpoints MUST refuse its ClusterIP with ICMP port unreachable.",
    ref="https://github.com/kubernetes/kubernetes/issues/43969",
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
@pytest.mark.parametrize("where", ["pod", "node", "client"])
def test_clusterip_without_endpoints_is_refused_with_icmp(cluster, proto, where):
    unready = cluster.add_pod(cluster.nodes[0])
    endpoints = [EndpointSpec(ip=unready.ip, node=cluster.nodes[0].name, ready=False, serving=False)]
    svc = cluster.create_service(endpoints, ports=[PortSpec(80, 8080, proto)])
    src = {"pod": lambda: cluster.add_pod(cluster.nodes[1]), "node": lambda: cluster.nodes[1],
           "client": lambda: cluster.client}[where]()

    obs = probe(src, svc.cluster_ip, 80, proto.lower(), count=3)

    verdict = refused(obs, icmp=PORT_UNREACHABLE)
    expect(verdict)


@pytest.mark.behavior(
    "service/no-endpoints/refusal-follows-endpoints",
    must="Adding an endpoint MUST make the Service work; removing it MUST bring the refusal back.",
    ref="https://github.com/kubernetes/kubernetes/issues/72534",
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_refusal_comes_and_goes_with_endpoints(cluster, proto):
    svc = cluster.create_service([], ports=[PortSpec(80, 8080, proto)])
    src = cluster.add_pod(cluster.nodes[1])
    p = proto.lower()

    v = refused(probe(src, svc.cluster_ip, 80, p, count=2), icmp=PORT_UNREACHABLE)
    expect(v, "before any endpoint")

    pod = cluster.add_pod(cluster.nodes[0])
    svc.set_endpoints([pod])
    v = reached_only(probe(src, svc.cluster_ip, 80, p, count=4), {pod.name})
    expect(v, "after adding an endpoint")

    svc.set_endpoints([])
    v = refused(probe(src, svc.cluster_ip, 80, p, count=2), icmp=PORT_UNREACHABLE)
    expect(v, "after removing the endpoint")


@pytest.mark.behavior(
    "service/no-endpoints/external-addresses-refused-icmp",
    must="A Service with no endpoints MUST refuse TCP and UDP traffic to its LoadBalancer "
         "ingress IP and to its external IPs with ICMP port unreachable.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
@pytest.mark.loadbalancer
@pytest.mark.externalips
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
@pytest.mark.parametrize("address", ["lb-ip", "external-ip"])
def test_external_addresses_without_endpoints_are_refused(cluster, proto, address):
    # kube-proxy: filter KUBE-EXTERNAL-SERVICES REJECT per external IP and LB IP (iptables),
    # the no-endpoint-services map (nftables). The test bed routes both ranges to nodes[0].
    ports = [PortSpec(80, 8080, proto)]
    if address == "lb-ip":
        ip = cluster.lb_ip(52)
        cluster.create_service([], ports=ports, type="LoadBalancer", load_balancer_ips=[ip])
    else:
        ip = cluster.external_ip(52)
        cluster.create_service([], ports=ports, external_ips=[ip])

    obs = probe(cluster.client, ip, 80, proto.lower(), count=3)

    expect_refused(obs, f"client {cluster.client.ip} -> {address} {ip}:80/{proto} of a Service "
                        "without endpoints", icmp=PORT_UNREACHABLE)
