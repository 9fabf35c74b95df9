"""internalTrafficPolicy: Local — traffic to the ClusterIP from pods and nodes goes only to
endpoints on the sender's node; with none there it is dropped.

Kubernetes docs, "Service Internal Traffic Policy"; kube-proxy (iptables) jumps from the
ClusterIP rule to the local chain (KUBE-SVL) and, when the node has no local endpoint,
DROPs the ClusterIP in filter KUBE-SERVICES ("has no local endpoints") rather than
rejecting it: the Service has endpoints, just none usable here.
"""

import pytest

from harness.api import PortSpec, dropped, expect, probe, reached_only

pytestmark = pytest.mark.traffic_policy

REF = "https://kubernetes.io/docs/concepts/services-networking/service-traffic-policy/"
REF_CODE = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go"


@pytest.mark.behavior(
    "service/itp-local/local-endpoints-only",
    must="With internalTrafficPolicy Local, traffic to the ClusterIP from a pod or a node MUST "
         "reach only endpoints on the sender's node.",
    ref=REF,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
@pytest.mark.parametrize("where", ["pod", "node"])
def test_internal_local_policy_reaches_only_local_endpoints(cluster, where, proto):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    on_n1, on_n2 = cluster.add_pods(2, node=n1), cluster.add_pods(2, node=n2)
    svc = cluster.create_service([*on_n1, *on_n2], ports=[PortSpec(80, 8080, proto)],
                                 internal_traffic_policy="Local")

    for node, local in ((n1, on_n1), (n2, on_n2)):
        src = cluster.add_pod(node) if where == "pod" else node
        obs = probe(src, svc.cluster_ip, 80, proto.lower(), count=8)
        v = reached_only(obs, {p.name for p in local})
        expect(v, f"{where} {src.name} ({src.ip}) on {node.name} → ClusterIP {svc.cluster_ip}:80/"
                          f"{proto} (iTP Local): only {node.name}'s endpoints may answer")


@pytest.mark.behavior(
    "service/itp-local/no-local-endpoint-dropped",
    must="With internalTrafficPolicy Local, traffic to the ClusterIP from a node without a local "
         "endpoint, or from a pod on it, MUST be dropped (no reply, no reset, no ICMP error).",
    ref=REF_CODE,
)
@pytest.mark.parametrize("where", ["pod", "node"])
def test_internal_local_policy_without_local_endpoint_is_dropped(cluster, timing, where):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.add_pods(2, node=n2)  # none on node1
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], internal_traffic_policy="Local")

    # Control: node2 has endpoints, so silence on node1 is the policy, not a missing Service.
    v = reached_only(probe(n2, svc.cluster_ip, 80, "tcp", count=2), {p.name for p in pods})
    expect(v, f"control: {n2.name} → ClusterIP (local endpoints)")
    src = cluster.add_pod(n1) if where == "pod" else n1
    obs = probe(src, svc.cluster_ip, 80, "tcp", count=4, timeout=timing.silence_s)

    v = dropped(obs)
    expect(v, f"{where} {src.name} ({src.ip}) on {n1.name} (no local endpoint; endpoints on "
                      f"{n2.name}) → ClusterIP {svc.cluster_ip}:80 (iTP Local)")
