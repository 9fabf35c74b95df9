"""NodePort: a Service of type NodePort is reachable on every node's address at its nodePort.

Kubernetes docs, "Type NodePort": every node proxies the nodePort to the Service, whether or
not it runs an endpoint (with externalTrafficPolicy Cluster, the default).
"""

import pytest

from harness.api import PortSpec, expect_reached, expect_refused, probe

pytestmark = pytest.mark.nodeport


def nodeport_service(cluster, pods, proto="TCP"):
    return cluster.create_service(pods, ports=[PortSpec(80, 8080, proto)], type="NodePort")


@pytest.mark.behavior(
    "service/nodeport/remote-client-every-node",
    must="A remote client MUST reach the Service on every node's address at the nodePort, "
         "with or without a local endpoint.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#type-nodeport",
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_remote_client_reaches_nodeport_on_every_node(cluster, proto):
    pods = cluster.add_pods(2, node=cluster.nodes[0])  # node2 has no local endpoint
    svc = nodeport_service(cluster, pods, proto)

    for node in cluster.nodes:
        obs = probe(cluster.client, node.ip, svc.node_port(), proto.lower(), count=6)
        expect_reached(obs, pods, f"via {node.name} ({node.ip})")


@pytest.mark.behavior(
    "service/nodeport/from-node-itself",
    must="A node MUST reach a NodePort Service on its own address.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#type-nodeport",
)
def test_node_reaches_nodeport_on_its_own_address(cluster):
    pods = cluster.add_pods(2)
    svc = nodeport_service(cluster, pods)
    for node in cluster.nodes:
        obs = probe(node, node.ip, svc.node_port(), "tcp", count=6)
        expect_reached(obs, pods, f"from {node.name} to itself")


@pytest.mark.behavior(
    "service/nodeport/localhost",
    must="A proxier with localhost nodePorts MUST answer a NodePort on 127.0.0.1 from the node itself.",
    ref="https://github.com/kubernetes/kubernetes/issues/90259",
)
@pytest.mark.requires("localhost-nodeports")
def test_node_reaches_nodeport_on_localhost(cluster):
    if cluster.family == "IPv6":
        pytest.skip("kube-proxy answers localhost nodePorts on IPv4 only (127.0.0.1 with "
                    "route_localnet); IPv6 has no ::1 counterpart")
    pods = cluster.add_pods(2)
    svc = nodeport_service(cluster, pods)
    node = cluster.nodes[1]
    obs = probe(node, "127.0.0.1", svc.node_port(), "tcp", count=6)
    expect_reached(obs, pods, f"from {node.name} to 127.0.0.1")


@pytest.mark.behavior(
    "service/nodeport/from-pods-and-other-nodes",
    must="Pods and other nodes MUST reach a NodePort Service on any node's address.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#type-nodeport",
)
def test_pods_and_other_nodes_reach_nodeport(cluster):
    pods = cluster.add_pods(2, node=cluster.nodes[0])
    svc = nodeport_service(cluster, pods)
    target = cluster.nodes[1]
    for src in (cluster.add_pod(cluster.nodes[0]), cluster.add_pod(target), cluster.nodes[0]):
        obs = probe(src, target.ip, svc.node_port(), "tcp", count=6)
        expect_reached(obs, pods, f"from {src.name} to {target.name}:{svc.node_port()}")


@pytest.mark.behavior(
    "service/nodeport/no-endpoints-refused",
    must="The nodePort of a Service without endpoints MUST be actively refused.",
    ref="https://github.com/kubernetes/kubernetes/issues/43969",
)
@pytest.mark.no_endpoints
@pytest.mark.requires("reject-no-endpoints")
def test_nodeport_without_endpoints_is_refused(cluster):
    svc = nodeport_service(cluster, [])
    for node in cluster.nodes:
        obs = probe(cluster.client, node.ip, svc.node_port(), "tcp", count=3)
        expect_refused(obs, f"via {node.name}")
