"""Endpoints that are node addresses: Services backed by hostNetwork pods.

A pod with ``hostNetwork: true`` has its node's address, so its Service's EndpointSlice
lists a node IP. kube-proxy treats it like any endpoint (upstream e2e tests for
hostNetwork backends, kubernetes#94812): the ClusterIP and the NodePort reach it from
pods, from other nodes and from outside, and who is masqueraded does not change: a pod
keeps its own address towards a ClusterIP, and traffic entering through a node other than
the endpoint's reaches it from that node's address (externalTrafficPolicy Cluster
masquerades). Here the echo server listens in ``nodes[0]``'s own namespace, bound to the
node's address: a UDP server on the wildcard address answers a pod on its own node from
the pod gateway (the route back), which conntrack cannot match to the translated flow;
kubernetes#95565 closed that as the application's to handle, by binding to one address.
"""

from __future__ import annotations

import pytest

from harness.api import PortSpec, expect_reached, expect_source, probe

pytestmark = pytest.mark.node_endpoints

REF = "https://kubernetes.io/docs/concepts/services-networking/service/#services-without-selectors"


@pytest.mark.behavior(
    "service/node-endpoints/clusterip",
    must="A ClusterIP whose endpoint is a node address (a hostNetwork pod) MUST reach it from "
         "pods on every node, from other nodes and from an external client; a pod MUST be "
         "seen with its own address, another node, and an external client (masqueraded), with "
         "the address of the node it came through.",
    ref=REF,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_clusterip_reaches_a_host_network_endpoint(cluster, proto):
    # The clients route the service CIDR through one node (the test bed's gateway); the
    # endpoint lives on another, so that their traffic is forwarded, and masqueraded, there.
    gateway = cluster.node(cluster.env.topology.resolved.gateway)
    home = next(n for n in cluster.nodes if n.name != gateway.name)
    hn = cluster.add_host_network_pod(home)
    svc = cluster.create_service([hn], ports=[PortSpec(80, 8080, proto)])
    p = proto.lower()

    sources = [(cluster.add_pod(gateway), None), (cluster.add_pod(home), None),
               (gateway, None), (cluster.client, gateway.ip)]
    for src, seen in sources:
        obs = probe(src, svc.cluster_ip, 80, p, count=4)
        story = (f"{src.name} ({src.ip}) -> ClusterIP {svc.cluster_ip}:80/{proto}, endpoint "
                 f"{hn.name} at {home.name}'s address {hn.ip}")
        expect_reached(obs, [hn], story)
        expect_source(obs, seen or src.ip, story)


@pytest.mark.behavior(
    "service/node-endpoints/nodeport",
    must="A NodePort whose endpoint is a node address (a hostNetwork pod) MUST reach it "
         "through every node from an external client, pods and other nodes; through a node "
         "other than the endpoint's, the endpoint MUST see that node's address.",
    ref=REF,
)
@pytest.mark.nodeport
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_nodeport_reaches_a_host_network_endpoint(cluster, proto):
    home, other = cluster.nodes[0], cluster.nodes[1]
    hn = cluster.add_host_network_pod(home)
    svc = cluster.create_service([hn], ports=[PortSpec(80, 8080, proto)], type="NodePort")
    np_, p = svc.node_port(), proto.lower()
    pod = cluster.add_pod(other)

    # Through the other node: DNATed and masqueraded there (eTP Cluster), then forwarded.
    for src in (cluster.client, pod):
        obs = probe(src, other.ip, np_, p, count=4)
        story = (f"{src.name} ({src.ip}) -> {other.name}:{np_}/{proto}, endpoint {hn.name} at "
                 f"{home.name}'s address {hn.ip}")
        expect_reached(obs, [hn], story)
        expect_source(obs, other.ip, story)
    # Through the endpoint's own node: delivered locally (there is no masquerading on the
    # way in), so only the reaching is required.
    for src in (cluster.client, pod, other):
        obs = probe(src, home.ip, np_, p, count=4)
        expect_reached(obs, [hn], f"{src.name} ({src.ip}) -> {home.name}:{np_}/{proto}, the "
                                  f"endpoint's own node")
