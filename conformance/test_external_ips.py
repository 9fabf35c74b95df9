"""spec.externalIPs: traffic that reaches a node for one of a Service's external IPs is
proxied like traffic to its ClusterIP.

Kubernetes docs, "External IPs": the cluster does not own these addresses; whatever routes
them to a node gets the Service. kube-proxy (iptables and nftables) sends external-IP
traffic through the Service's external-destination chain: with the default (Cluster)
external policy every such packet is masqueraded, since the endpoint may be on another
node. The test bed routes 198.51.100.0/24 from the clients to node1; pods and nodes use
their ordinary routes (to a black hole), so only the proxier can deliver them.
"""

import pytest

from harness.api import PortSpec, expect, probe, reached_only, source_seen

pytestmark = pytest.mark.externalips

REF = "https://kubernetes.io/docs/concepts/services-networking/service/#external-ips"


def node_addresses(cluster):
    """Every address a node may masquerade to: its lan addresses and its pod gateway."""
    return {a for n in cluster.nodes for a in (*n.addresses, n.pod_gateway) if a}


@pytest.mark.behavior(
    "service/externalips/external-client-reaches",
    must="A client outside the cluster whose traffic for an external IP is routed to a node "
         "MUST reach the Service's endpoints at externalIP:port.",
    ref=REF,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_external_client_reaches_external_ip(cluster, proto):
    pods = [cluster.add_pod(cluster.nodes[0]), cluster.add_pod(cluster.nodes[1])]
    ext_ip = cluster.external_ip(21)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, proto)], external_ips=[ext_ip])

    obs = probe(cluster.client, ext_ip, 80, proto.lower(), count=8)

    v = reached_only(obs, {p.name for p in pods})
    expect(v, f"client {cluster.client.ip} → externalIP {ext_ip}:80/{proto} of "
                      f"{svc.name} (routed via {cluster.nodes[0].name})")


@pytest.mark.behavior(
    "service/externalips/from-pods-and-nodes",
    must="Pods and nodes MUST reach a Service at externalIP:port, whichever node they are on.",
    ref=REF,
)
@pytest.mark.parametrize("where", ["pod-same-node", "pod-other-node", "node", "other-node"])
def test_pods_and_nodes_reach_external_ip(cluster, where):
    home, other = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.add_pods(2, node=home)
    ext_ip = cluster.external_ip(22)
    cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], external_ips=[ext_ip])
    src = {"pod-same-node": lambda: cluster.add_pod(home), "pod-other-node": lambda: cluster.add_pod(other),
           "node": lambda: home, "other-node": lambda: other}[where]()

    obs = probe(src, ext_ip, 80, "tcp", count=6)

    v = reached_only(obs, {p.name for p in pods})
    expect(v, f"{where} {src.name} ({src.ip}) → externalIP {ext_ip}:80")


@pytest.mark.behavior(
    "service/externalips/external-client-masqueraded",
    must="External traffic to an external IP of a Service with externalTrafficPolicy Cluster "
         "MUST be masqueraded to a node address.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
@pytest.mark.masquerade
def test_external_client_to_external_ip_is_masqueraded(cluster):
    # One endpoint on the gateway node, one behind it: masquerading is needed for the
    # second (its reply must come back through node1) and done for both.
    pods = [cluster.add_pod(cluster.nodes[0]), cluster.add_pod(cluster.nodes[1])]
    ext_ip = cluster.external_ip(23)
    cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], external_ips=[ext_ip])
    nodes = node_addresses(cluster)

    obs = probe(cluster.client, ext_ip, 80, "tcp", count=8)

    v = reached_only(obs, {p.name for p in pods})
    expect(v)
    v = source_seen(obs, lambda s: s in nodes, description=f"a node address (one of {sorted(nodes)})")
    expect(v, f"client {cluster.client.ip} → externalIP {ext_ip}: the client's address must "
                      "not reach the endpoint (eTP Cluster)")
