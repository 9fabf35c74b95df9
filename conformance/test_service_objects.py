"""Service objects as kube-proxy reads them: endpoints split over several EndpointSlices,
Services another proxy owns (``service.kubernetes.io/service-proxy-name``) or marked
headless (``service.kubernetes.io/headless``), and Services whose type or ports change.

kube-proxy merges every EndpointSlice labelled ``kubernetes.io/service-name`` for a Service
(pkg/proxy/endpointslicecache.go); its informers select only Services (and slices)
*without* the two labels above (cmd/kube-proxy/app/server.go), so a labelled Service is
left alone, and proxied again once the label is removed. A Service's rules follow its spec:
after a type or port change the old nodePort, LB IP and port stop working.
"""

import pytest

from harness.model import EndpointSpec, PortSpec, SliceSpec
from harness.traffic.probe import Outcome, probe
from harness.verdicts import probe_table, reached_only

pytestmark = pytest.mark.slices

REF_SLICES = "https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/"
REF_LABELS = ("https://kubernetes.io/docs/reference/labels-annotations-taints/"
              "#servicekubernetesioservice-proxy-name")
REF_HEADLESS = "https://kubernetes.io/docs/reference/labels-annotations-taints/#service-kubernetes-io-headless"
REF_TYPES = "https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"


def unanswered(obs, what):
    """Assert that no endpoint answered any probe (refused, dropped or unroutable)."""
    answered = [o for o in obs if o.outcome is Outcome.REPLY]
    assert not answered, (
        f"{what}: expected no endpoint to answer, observed {len(answered)}/{len(obs)} replies from "
        f"{sorted({o.pod for o in answered})}\n" + probe_table(obs)
    )


@pytest.mark.behavior(
    "service/slices/multiple-slices-merged",
    must="A Service whose endpoints are split over several EndpointSlices MUST send traffic to "
         "the endpoints of every slice.",
    ref=REF_SLICES,
)
def test_endpoints_of_every_slice_are_reached(cluster):
    pods = [cluster.add_pod(cluster.nodes[i % 2]) for i in range(3)]
    svc = cluster.create_service([], ports=[PortSpec(80, 8080, "TCP")])
    ports = [("", 8080, "TCP")]
    slices = [SliceSpec(name=f"{svc.name}-part{i}", ports=ports, address_type=cluster.family,
                        endpoints=[EndpointSpec(ip=p.ip, node=p.node.name, pod=p.name)])
              for i, p in enumerate(pods)]
    svc.set_slices(slices)
    src = cluster.add_pod(cluster.nodes[0])

    obs = probe(src, svc.cluster_ip, 80, "tcp", count=36)

    v = reached_only(obs, {p.name for p in pods})
    assert v.passed, f"3 slices of one endpoint each, {src.name} → ClusterIP:\n" + v.explain()
    seen = {o.pod for o in obs}
    missing = sorted({p.name for p in pods} - seen)
    # Uniform over 3 endpoints, 36 probes: an endpoint is missed by chance with p = (2/3)^36 < 1e-6.
    assert not missing, (f"endpoints of slices {[s.name for s in slices]}: expected replies from all of "
                         f"{sorted(p.name for p in pods)} in 36 probes, never saw {missing}\n" + probe_table(obs))


@pytest.mark.behavior(
    "service/labels/not-proxied-when-labelled",
    must="A Service labelled service.kubernetes.io/service-proxy-name or "
         "service.kubernetes.io/headless MUST NOT be proxied, and MUST be once the label is removed.",
    ref=REF_LABELS,
)
@pytest.mark.parametrize("label", ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"])
def test_labelled_service_is_not_proxied(cluster, timing, label):
    pods = cluster.add_pods(2, node=cluster.nodes[1])
    ports = [PortSpec(80, 8080, "TCP")]
    control = cluster.create_service(pods, ports=ports)
    svc = cluster.create_service(pods, ports=ports, labels={label: "other-proxy" if "proxy-name" in label else ""})
    src = cluster.add_pod(cluster.nodes[0])

    v = reached_only(probe(src, control.cluster_ip, 80, "tcp", count=2), {p.name for p in pods})
    assert v.passed, f"control: unlabelled Service {control.name} with the same endpoints:\n" + v.explain()
    unanswered(probe(src, svc.cluster_ip, 80, "tcp", count=3, timeout=timing.silence_s),
               f"Service {svc.name} labelled {label}: {src.name} → ClusterIP {svc.cluster_ip}:80")

    svc.update(labels={})
    v = reached_only(probe(src, svc.cluster_ip, 80, "tcp", count=4), {p.name for p in pods})
    assert v.passed, f"label {label} removed from {svc.name}: ClusterIP must now be proxied\n" + v.explain()


@pytest.mark.behavior(
    "service/type-change/follows-type",
    must="A Service changing type ClusterIP → NodePort → LoadBalancer → ClusterIP MUST be "
         "reachable exactly at the addresses its current type gives it: the nodePort and LB IP "
         "MUST stop working once the type no longer has them.",
    ref=REF_TYPES,
)
@pytest.mark.nodeport
@pytest.mark.loadbalancer
def test_service_follows_type_changes(cluster, timing):
    pods = cluster.add_pods(2)
    names = {p.name for p in pods}
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    client, node = cluster.client, cluster.nodes[1]
    lb_ip = cluster.lb_ip(41)

    def reaches(dst, port, step):
        v = reached_only(probe(client, dst, port, "tcp", count=3), names)
        assert v.passed, f"{step}: client → {dst}:{port}:\n" + v.explain()

    reaches(svc.cluster_ip, 80, "type ClusterIP")
    svc.update(type="NodePort")
    node_port = svc.node_port()
    reaches(node.ip, node_port, "type NodePort")
    svc.update(type="LoadBalancer", load_balancer_ips=[lb_ip])
    reaches(lb_ip, 80, "type LoadBalancer")
    reaches(node.ip, node_port, "type LoadBalancer")
    svc.update(type="ClusterIP", load_balancer_ips=[])
    reaches(svc.cluster_ip, 80, "back to type ClusterIP")
    unanswered(probe(client, node.ip, node_port, "tcp", count=3, timeout=timing.silence_s),
               f"back to type ClusterIP: former nodePort {node.name}:{node_port}")
    unanswered(probe(client, lb_ip, 80, "tcp", count=3, timeout=timing.silence_s),
               f"back to type ClusterIP: former LB IP {lb_ip}:80")


@pytest.mark.behavior(
    "service/port-change/old-port-stops",
    must="When a Service's port and nodePort change, the new ones MUST work and the old ones "
         "MUST stop working.",
    ref=REF_TYPES,
)
@pytest.mark.nodeport
def test_changed_port_replaces_the_old_one(cluster, timing):
    pods = cluster.add_pods(2)
    names = {p.name for p in pods}
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="NodePort")
    src, node = cluster.add_pod(cluster.nodes[0]), cluster.nodes[1]
    old_port, old_np = 80, svc.node_port()
    v = reached_only(probe(src, svc.cluster_ip, old_port, "tcp", count=2), names)
    assert v.passed, "before the change:\n" + v.explain()

    new_np = cluster.alloc.node_port()
    svc.update(ports=[PortSpec(81, 8080, "TCP", node_port=new_np)])
    svc.set_endpoints(pods)  # the slice's ports follow the Service's

    for dst, port, what in ((svc.cluster_ip, 81, "new port"), (node.ip, new_np, "new nodePort")):
        v = reached_only(probe(src, dst, port, "tcp", count=3), names)
        assert v.passed, f"after port 80→81, nodePort {old_np}→{new_np}: {what} {dst}:{port}:\n" + v.explain()
    for dst, port, what in ((svc.cluster_ip, old_port, "old port"), (node.ip, old_np, "old nodePort")):
        unanswered(probe(src, dst, port, "tcp", count=3, timeout=timing.silence_s),
                   f"after port 80→81, nodePort {old_np}→{new_np}: {what} {dst}:{port}")
