"""SNAT / masquerade: which flows reach a pod with their source rewritten to a node's.

kube-proxy (iptables mode) masquerades traffic to a ClusterIP that does not come from the
cluster CIDR, all traffic to external destinations (NodePort, externalIPs, LB IPs) with
externalTrafficPolicy Cluster, and a pod reaching itself through its Service (hairpin); it
leaves pod-to-ClusterIP traffic alone so that pods see each other's addresses. The
decision is made with a mark (0x4000) set in nat and acted on at POSTROUTING.
"""

import pytest

from harness.model import PortSpec
from harness.traffic.probe import probe
from harness.verdicts import reached_only

pytestmark = pytest.mark.masquerade


def node_addresses(cluster):
    return {a for n in cluster.nodes for a in n.addresses}


def seen_sources(obs):
    return {o.seen_src for o in obs}


@pytest.mark.behavior(
    "service/masquerade/pod-to-clusterip-keeps-source",
    must="Traffic from a pod (inside the cluster CIDR) to a ClusterIP MUST NOT be masqueraded.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
@pytest.mark.parametrize("same_node", [True, False], ids=["same-node", "other-node"])
def test_pod_to_clusterip_is_not_masqueraded(cluster, same_node):
    pods = cluster.add_pods(2, node=cluster.nodes[0])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    src = cluster.add_pod(cluster.nodes[0] if same_node else cluster.nodes[1])

    obs = probe(src, svc.cluster_ip, 80, "tcp", count=6)

    v = reached_only(obs, {p.name for p in pods})
    assert v.passed, v.explain()
    assert seen_sources(obs) == {src.ip}, (
        f"pod {src.name} ({src.ip}) → ClusterIP: endpoints saw sources {seen_sources(obs)}; "
        "pod traffic must keep its own address"
    )


@pytest.mark.behavior(
    "service/masquerade/external-to-clusterip",
    must="Traffic from outside the cluster CIDR to a ClusterIP MUST be masqueraded to a node address.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
def test_external_client_to_clusterip_is_masqueraded(cluster):
    pods = cluster.add_pods(2, node=cluster.nodes[1])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])

    obs = probe(cluster.client, svc.cluster_ip, 80, "tcp", count=6)

    v = reached_only(obs, {p.name for p in pods})
    assert v.passed, v.explain()
    nodes = node_addresses(cluster)
    assert seen_sources(obs) <= nodes, (
        f"client {cluster.client.ip} → ClusterIP: endpoints saw {seen_sources(obs)}, expected "
        f"a node address (one of {sorted(nodes)})"
    )


@pytest.mark.behavior(
    "service/masquerade/external-to-nodeport-cluster-policy",
    must="External traffic to a NodePort with externalTrafficPolicy Cluster MUST be masqueraded to a node address.",
    ref="https://kubernetes.io/docs/tasks/access-application-cluster/create-external-load-balancer/#preserving-the-client-source-ip",
)
@pytest.mark.nodeport
def test_external_client_to_nodeport_is_masqueraded(cluster):
    pods = cluster.add_pods(2)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="NodePort")
    nodes = node_addresses(cluster)
    for node in cluster.nodes:
        obs = probe(cluster.client, node.ip, svc.node_port(), "tcp", count=6)
        v = reached_only(obs, {p.name for p in pods})
        assert v.passed, v.explain()
        assert seen_sources(obs) <= nodes, (
            f"client → {node.name}:{svc.node_port()}: endpoints saw {seen_sources(obs)}, "
            f"expected node addresses {sorted(nodes)}"
        )


@pytest.mark.behavior(
    "service/masquerade/hairpin",
    must="A pod reaching itself through its Service MUST see a node address, not its own.",
    ref="https://github.com/kubernetes/kubernetes/issues/13375",
)
def test_pod_reaching_itself_through_its_service_is_masqueraded(cluster):
    pod = cluster.add_pod(cluster.nodes[0])
    svc = cluster.create_service([pod], ports=[PortSpec(80, 8080, "TCP")])

    obs = probe(pod, svc.cluster_ip, 80, "tcp", count=4)

    v = reached_only(obs, {pod.name})
    assert v.passed, v.explain()
    assert pod.ip not in seen_sources(obs), (
        f"hairpin: {pod.name} reached itself through {svc.cluster_ip} and saw its own address "
        f"{pod.ip}; the reply would bypass the node's conntrack (kubernetes#13375)"
    )
