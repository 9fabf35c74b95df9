"""SNAT / masquerade: which flows reach a pod with their source rewritten to a node's.

kube-proxy (iptables mode) masquerades traffic to a ClusterIP that does not come from the
cluster CIDR, all traffic to external destinations (NodePort, externalIPs, LB IPs) with
externalTrafficPolicy Cluster, and a pod reaching itself through its Service (hairpin); it
leaves pod-to-ClusterIP traffic alone so that pods see each other's addresses. The
decision is made with a mark (0x4000) set in nat and acted on at POSTROUTING.
"""

import pytest

from harness.api import MarkObserver, PortSpec, expect, probe, reached_only

pytestmark = pytest.mark.masquerade


def node_addresses(cluster):
    """Every address a node may masquerade to: its lan address and its pod-network gateway."""
    return {a for n in cluster.nodes for a in (*n.addresses, n.pod_gateway) if a}


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
    expect(v)
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
    expect(v)
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
        expect(v)
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
    expect(v)
    assert pod.ip not in seen_sources(obs), (
        f"hairpin: {pod.name} reached itself through {svc.cluster_ip} and saw its own address "
        f"{pod.ip}; the reply would bypass the node's conntrack (kubernetes#13375)"
    )


MARK_FLOWS = [
    # (flow class, where the probe starts, must the flow carry the mark?)
    ("pod-to-clusterip", "pod", False),
    ("node-to-clusterip", "node", True),
    ("external-to-clusterip", "client", True),
    ("external-to-nodeport", "client-nodeport", True),
]


@pytest.mark.behavior(
    "service/masquerade/mark-on-exactly-masqueraded-flows",
    must="The masquerade mark MUST be set on exactly the flows that are masqueraded, "
         "observed before NAT at POSTROUTING.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
@pytest.mark.requires("masquerade-mark")
@pytest.mark.parametrize("flow,where,marked", MARK_FLOWS, ids=[f[0] for f in MARK_FLOWS])
def test_masquerade_mark_is_set_on_exactly_the_masqueraded_flows(cluster, flow, where, marked):
    gateway = cluster.nodes[0]  # the client's route to Services, and the pod source's node
    endpoint = cluster.add_pod(gateway)
    svc = cluster.create_service([endpoint], ports=[PortSpec(80, 8080, "TCP")], type="NodePort")
    src, dst, port = {
        "pod": (cluster.add_pod(gateway), svc.cluster_ip, 80),
        "node": (gateway, svc.cluster_ip, 80),
        "client": (cluster.client, svc.cluster_ip, 80),
        "client-nodeport": (cluster.client, gateway.ip, svc.node_port()),
    }[where]
    count = 5

    with MarkObserver(gateway.netns, daddr=endpoint.ip, dport=8080) as observer:
        obs = probe(src, dst, port, "tcp", count=count)
        n_marked, n_unmarked = observer.read()

    v = reached_only(obs, {endpoint.name})
    expect(v)
    expected = (count, 0) if marked else (0, count)
    assert (n_marked, n_unmarked) == expected, (
        f"{flow}: {n_marked} new flows carried the mark 0x4000 and {n_unmarked} did not, at "
        f"{gateway.name}'s POSTROUTING before NAT; expected {expected[0]} marked, "
        f"{expected[1]} unmarked. Endpoints saw sources {seen_sources(obs)}."
    )
