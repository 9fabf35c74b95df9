"""Topology-aware routing: EndpointSlice hints keep traffic in its zone, or on its node.

Kubernetes docs, "Topology Aware Routing" and "Traffic distribution": kube-proxy reads the
hints of each ready endpoint (``hints.forZones``, ``hints.forNodes``) and its own Node's
``topology.kubernetes.io/zone`` label, never ``spec.trafficDistribution`` itself
(pkg/proxy/topology.go, ``topologyModeFromHints``): when every ready endpoint has node
hints and one is hinted for this node, only those are used; otherwise, when every ready
endpoint has zone hints and one is hinted for this node's zone, only those; otherwise all
of them. Hints narrow only the cluster-wide endpoints: Local traffic policies ignore them.

The test bed: a cluster of its own with three nodes, each labelled with a zone by the
test. The harness plays the EndpointSlice controller: it writes endpoint zones from the
nodes' labels and, for ``trafficDistribution``, the hints the controller writes
(``harness/trafficdist.py``, controller behaviour of v1.35-v1.37); the hints of the
``forZones`` checks are written directly, as the controller's topology cache would.
"""

import pytest

from harness.api import (
    ClientSpec,
    EndpointSpec,
    NodeMeta,
    NodeSpec,
    PortSpec,
    TopologySpec,
    expect,
    probe,
    reach_samples,
    reached_all,
    reached_only,
    scoped_cluster,
)

pytestmark = pytest.mark.topology

REF_HINTS = "https://kubernetes.io/docs/concepts/services-networking/topology-aware-routing/"
REF_TD = "https://kubernetes.io/docs/reference/networking/virtual-ips/#traffic-distribution"
REF_KEP_3015 = ("https://github.com/kubernetes/enhancements/tree/master/keps/sig-network/"
                "3015-prefer-same-node")
REF_CODE = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/topology.go"
ZONE_LABEL = "topology.kubernetes.io/zone"

cluster3_env, cluster3 = scoped_cluster(
    TopologySpec(nodes=[NodeSpec(name=f"node{i}") for i in (1, 2, 3)],
                 clients=[ClientSpec(name="client1")]),
    "cluster3",
)


def zone_nodes(cluster, zones=("zone-a", "zone-b", "zone-c")):
    """Label node i with ``zones[i]`` (restored when the test ends); one sync."""
    for i, (node, zone) in enumerate(zip(cluster.nodes, zones, strict=True)):
        cluster.set_node_meta(node, NodeMeta(labels={ZONE_LABEL: zone}),
                              sync=i == len(zones) - 1)
    return dict(zip((n.name for n in cluster.nodes), zones, strict=True))


def hinted(pod, zone, for_zones):
    """A ready endpoint for ``pod`` in ``zone``, hinted for ``for_zones`` (None: no hints)."""
    return EndpointSpec(ip=pod.ip, node=pod.node.name, pod=pod.name, zone=zone,
                        for_zones=tuple(for_zones) if for_zones is not None else None)


def one_pod_per_node(cluster):
    return [cluster.add_pod(n) for n in cluster.nodes]


@pytest.mark.behavior(
    "service/topology/zone-hints/same-zone-only",
    must="When every ready endpoint has zone hints, traffic to the ClusterIP from a pod or a node "
         "in a zone MUST reach only the endpoints hinted for that zone.",
    ref=REF_HINTS,
)
@pytest.mark.requires("topology-hints")
@pytest.mark.parametrize("where", ["pod", "node"])
def test_zone_hints_keep_traffic_in_its_zone(cluster3, where):
    zones = zone_nodes(cluster3)
    pods = one_pod_per_node(cluster3) + [cluster3.add_pod(cluster3.nodes[0])]  # two in zone-a
    eps = [hinted(p, zones[p.node.name], [zones[p.node.name]]) for p in pods]
    svc = cluster3.create_service(eps, ports=[PortSpec(80, 8080, "TCP")])

    for node in cluster3.nodes:
        zone = zones[node.name]
        src = cluster3.add_pod(node) if where == "pod" else node
        same = {p.name for p in pods if zones[p.node.name] == zone}
        obs = probe(src, svc.cluster_ip, 80, "tcp", count=8)
        expect(reached_only(obs, same),
               f"{where} {src.name} in {zone} → ClusterIP {svc.cluster_ip}:80: only {sorted(same)} "
               f"(hinted for {zone}) may answer")


@pytest.mark.behavior(
    "service/topology/zone-hints/fallback-to-all",
    must="When a ready endpoint has no zone hint, or no endpoint is hinted for the client's zone, "
         "traffic to the ClusterIP MUST be spread over all ready endpoints.",
    ref=REF_CODE,
)
@pytest.mark.requires("topology-hints")
@pytest.mark.parametrize("case", ["endpoint-without-hint", "zone-without-hint"])
def test_zone_hints_fall_back_to_all_endpoints(cluster3, case):
    zones = zone_nodes(cluster3)
    pods = one_pod_per_node(cluster3)
    if case == "endpoint-without-hint":
        # node3's endpoint has no hints: the hints of the others are ignored everywhere
        for_zones = {p.name: ([zones[p.node.name]] if p.node.name != "node3" else None) for p in pods}
        src_node = cluster3.nodes[0]
    else:
        # node3's endpoint is hinted for zone-a: nothing is hinted for zone-c
        for_zones = {p.name: [zones[p.node.name] if p.node.name != "node3" else "zone-a"] for p in pods}
        src_node = cluster3.nodes[2]
    eps = [hinted(p, zones[p.node.name], for_zones[p.name]) for p in pods]
    svc = cluster3.create_service(eps, ports=[PortSpec(80, 8080, "TCP")])
    src = cluster3.add_pod(src_node)

    # n=3 endpoints: reach_samples(3) probes leave one unreached on a correct proxier with
    # probability <= 1e-6; a proxier keeping to the hints never reaches the others.
    obs = probe(src, svc.cluster_ip, 80, "tcp", count=reach_samples(len(pods)))
    what = (f"pod {src.name} in {zones[src_node.name]} → ClusterIP {svc.cluster_ip}:80, hints "
            f"{ {p.name: for_zones[p.name] for p in pods} }")
    expect(reached_only(obs, {p.name for p in pods}), what)
    expect(reached_all(obs, [(p.name, None) for p in pods]),
           f"{what}: every endpoint must be used ({case})")


@pytest.mark.behavior(
    "service/topology/local-policy-ignores-hints",
    must="With a Local traffic policy, traffic MUST go to the node's local endpoints whatever "
         "their zone hints say.",
    ref=REF_CODE,
)
@pytest.mark.requires("topology-hints")
@pytest.mark.traffic_policy
@pytest.mark.parametrize("policy", ["external", "internal"])
def test_local_traffic_policy_ignores_zone_hints(cluster3, policy):
    zones = zone_nodes(cluster3)
    n1 = cluster3.nodes[0]
    local, other = cluster3.add_pod(n1), cluster3.add_pod(cluster3.nodes[1])
    # node1's endpoint is hinted away from node1's zone, and the other one into it
    eps = [hinted(local, zones[n1.name], ["zone-b"]), hinted(other, "zone-b", ["zone-a"])]
    ports = [PortSpec(80, 8080, "TCP")]
    if policy == "external":
        svc = cluster3.create_service(eps, ports=ports, type="NodePort",
                                      external_traffic_policy="Local")
        src, dst, port = cluster3.client, n1.ip, svc.node_port()
    else:
        svc = cluster3.create_service(eps, ports=ports, internal_traffic_policy="Local")
        src, dst, port = cluster3.add_pod(n1), svc.cluster_ip, 80

    obs = probe(src, dst, port, "tcp", count=8)
    expect(reached_only(obs, {local.name}),
           f"{src.name} → {dst}:{port} ({policy}TrafficPolicy Local) via {n1.name}: its local "
           f"endpoint {local.name} (hinted for zone-b) must answer, not {other.name} (hinted for "
           f"{zones[n1.name]})")


@pytest.mark.behavior(
    "service/topology/traffic-distribution/prefer-close",
    must="For a Service with trafficDistribution PreferClose or PreferSameZone, traffic to the "
         "ClusterIP from a zone with ready endpoints MUST reach only that zone's endpoints.",
    ref=REF_TD,
)
@pytest.mark.requires("topology-hints")
@pytest.mark.parametrize("distribution", ["PreferClose", "PreferSameZone"])
def test_traffic_distribution_prefer_close_stays_in_zone(cluster3, distribution):
    zones = zone_nodes(cluster3, ("zone-a", "zone-a", "zone-b"))
    pods = one_pod_per_node(cluster3)
    svc = cluster3.create_service(pods, ports=[PortSpec(80, 8080, "TCP")],
                                  traffic_distribution=distribution)

    for node in cluster3.nodes:
        zone = zones[node.name]
        same = {p.name for p in pods if zones[p.node.name] == zone}
        src = cluster3.add_pod(node)
        obs = probe(src, svc.cluster_ip, 80, "tcp", count=8)
        expect(reached_only(obs, same),
               f"pod {src.name} on {node.name} ({zone}) → ClusterIP {svc.cluster_ip}:80 "
               f"(trafficDistribution {distribution}): only {sorted(same)} may answer")


@pytest.mark.behavior(
    "service/topology/traffic-distribution/prefer-same-node",
    must="For a Service with trafficDistribution PreferSameNode, a pod MUST reach only its own "
         "node's endpoint; when that endpoint goes, only its zone's endpoints; and only its own "
         "node's again when it comes back.",
    ref=REF_KEP_3015,
)
@pytest.mark.requires("node-hints")
def test_traffic_distribution_prefer_same_node_falls_back_to_zone(cluster3):
    zones = zone_nodes(cluster3, ("zone-a", "zone-a", "zone-b"))
    n1 = cluster3.nodes[0]
    mine, zone_peer, far = one_pod_per_node(cluster3)
    svc = cluster3.create_service([mine, zone_peer, far], ports=[PortSpec(80, 8080, "TCP")],
                                  traffic_distribution="PreferSameNode")
    src = cluster3.add_pod(n1)
    steps = [
        ([mine, zone_peer, far], {mine.name}, "its node's endpoint"),
        ([zone_peer, far], {zone_peer.name}, f"its node's endpoint gone: its zone ({zones[n1.name]})"),
        ([mine, zone_peer, far], {mine.name}, "its node's endpoint back"),
    ]
    for i, (eps, allowed, step) in enumerate(steps):
        if i:
            svc.set_endpoints(eps)
        obs = probe(src, svc.cluster_ip, 80, "tcp", count=8)
        expect(reached_only(obs, allowed),
               f"{step}: pod {src.name} on {n1.name} → ClusterIP {svc.cluster_ip}:80 "
               f"(PreferSameNode, endpoints {[p.name + '@' + p.node.name for p in eps]}) "
               f"must reach only {sorted(allowed)}")
