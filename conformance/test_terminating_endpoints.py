"""Terminating endpoints (KEP-1669, ProxyTerminatingEndpoints, GA in v1.28): an endpoint that
is terminating but still serving is used only when no ready endpoint is available, and an
endpoint that is terminating and not serving is never used.

The fallback is decided separately for the cluster-wide endpoint set and the node-local one
(kube-proxy ``CategorizeEndpoints``): with a Local traffic policy, a node whose local
endpoints are all serving-and-terminating uses them, even while other nodes have ready
endpoints.
"""

import pytest

from harness.api import EndpointSpec, Outcome, PortSpec, expect, probe, probe_table, reached_only

pytestmark = pytest.mark.terminating

REF = "https://kubernetes.io/docs/reference/networking/virtual-ips/#traffic-to-terminating-endpoints"
REF_KEP = "https://github.com/kubernetes/enhancements/tree/master/keps/sig-network/1669-proxy-terminating-endpoints"


def ep(pod, state):
    """An endpoint for ``pod``: "ready", "serving-terminating" or "terminating" (not serving)."""
    ready, serving, terminating = {
        "ready": (True, True, False),
        "serving-terminating": (False, True, True),
        "terminating": (False, False, True),
    }[state]
    return EndpointSpec(ip=pod.ip, node=pod.node.name, ready=ready, serving=serving,
                        terminating=terminating, pod=pod.name)


def describe(eps):
    return ", ".join(f"{e.pod}@{e.node}(ready={e.ready},serving={e.serving},terminating={e.terminating})"
                     for e in eps)


@pytest.mark.behavior(
    "service/terminating/serving-used-only-without-ready",
    must="A serving terminating endpoint MUST NOT receive new connections while the Service has a "
         "ready endpoint, and MUST receive them when it has none.",
    ref=REF,
)
def test_serving_terminating_endpoint_is_a_fallback_only(cluster):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    a, b, c = cluster.add_pod(n1), cluster.add_pod(n2), cluster.add_pod(n1)
    src = cluster.add_pod(n2)
    steps = [
        ([ep(a, "ready"), ep(b, "serving-terminating"), ep(c, "terminating")], {a.name}),
        ([ep(b, "serving-terminating"), ep(c, "terminating")], {b.name}),
    ]
    svc = cluster.create_service(steps[0][0], ports=[PortSpec(80, 8080, "TCP")])
    for i, (eps, expected) in enumerate(steps):
        if i:
            svc.set_endpoints(eps)
        obs = probe(src, svc.cluster_ip, 80, "tcp", count=8)
        v = reached_only(obs, expected)
        expect(v, f"endpoints [{describe(eps)}]: pod {src.name} → ClusterIP {svc.cluster_ip}:80 "
                          f"must reach only {sorted(expected)}")


@pytest.mark.behavior(
    "service/terminating/local-policy-fallback",
    must="With a Local traffic policy, a node whose local endpoints are all serving and terminating "
         "MUST send the traffic to them, and never to ready endpoints on other nodes; a local ready "
         "endpoint MUST be preferred to them.",
    ref=REF_KEP,
)
@pytest.mark.traffic_policy
@pytest.mark.parametrize("policy", ["external", "internal"])
def test_local_policy_falls_back_to_local_serving_terminating(cluster, policy):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    a, b, remote = cluster.add_pod(n2), cluster.add_pod(n2), cluster.add_pod(n1)
    steps = [
        ([ep(a, "ready"), ep(b, "serving-terminating"), ep(remote, "ready")], {a.name}),
        ([ep(b, "serving-terminating"), ep(remote, "ready")], {b.name}),
    ]
    ports = [PortSpec(80, 8080, "TCP")]
    if policy == "external":
        svc = cluster.create_service(steps[0][0], ports=ports, type="NodePort", external_traffic_policy="Local")
        src, dst, port = cluster.client, n2.ip, svc.node_port()
    else:
        svc = cluster.create_service(steps[0][0], ports=ports, internal_traffic_policy="Local")
        src, dst, port = cluster.add_pod(n2), svc.cluster_ip, 80
    for i, (eps, expected) in enumerate(steps):
        if i:
            svc.set_endpoints(eps)
        obs = probe(src, dst, port, "tcp", count=8)
        v = reached_only(obs, expected)
        expect(v, f"{policy}TrafficPolicy Local, endpoints [{describe(eps)}]: {src.name} → "
                          f"{dst}:{port} via {n2.name} must reach only {sorted(expected)}")


@pytest.mark.behavior(
    "service/terminating/not-serving-never-used",
    must="A terminating endpoint that is not serving MUST NOT receive new connections, even when "
         "no other endpoint is usable.",
    ref=REF,
)
@pytest.mark.parametrize("policy", ["cluster", "local"])
def test_not_serving_terminating_endpoint_is_never_used(cluster, timing, policy):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    gone = cluster.add_pod(n2)
    if policy == "cluster":
        eps = [ep(gone, "terminating")]
        svc = cluster.create_service(eps, ports=[PortSpec(80, 8080, "TCP")])
        src, dst, port = cluster.add_pod(n1), svc.cluster_ip, 80
    else:
        # node2's only local endpoint is not serving; node1 has a ready one.
        remote = cluster.add_pod(n1)
        eps = [ep(gone, "terminating"), ep(remote, "ready")]
        svc = cluster.create_service(eps, ports=[PortSpec(80, 8080, "TCP")], type="NodePort",
                                     external_traffic_policy="Local")
        src, dst, port = cluster.client, n2.ip, svc.node_port()

    obs = probe(src, dst, port, "tcp", count=4, timeout=timing.silence_s)

    answered = [o for o in obs if o.outcome is Outcome.REPLY]
    assert not answered, (
        f"{policy} policy, endpoints [{describe(eps)}]: {src.name} → {dst}:{port}: expected no "
        f"endpoint to answer (refused or dropped), observed {len(answered)}/{len(obs)} replies from "
        f"{sorted({o.pod for o in answered})}\n" + probe_table(obs)
    )
