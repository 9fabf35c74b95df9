"""Service objects as kube-proxy reads them: endpoints split over several EndpointSlices,
Services another proxy owns (``service.kubernetes.io/service-proxy-name``) or marked
headless (``service.kubernetes.io/headless``), and Services whose type or ports change.

kube-proxy merges every EndpointSlice labelled ``kubernetes.io/service-name`` for a Service
(pkg/proxy/endpointslicecache.go); its informers select only Services (and slices)
*without* the two labels above (cmd/kube-proxy/app/server.go), so a labelled Service is
left alone, and proxied again once the label is removed. A Service's rules follow its spec:
after a type or port change the old nodePort, LB IP and port stop working.
"""

from dataclasses import replace

import pytest

from harness.api import (
    EndpointSpec,
    Outcome,
    PortSpec,
    SliceSpec,
    eras,
    expect,
    expect_reached,
    probe,
    probe_table,
    reached_only,
)

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
    expect(v, f"3 slices of one endpoint each, {src.name} → ClusterIP")
    seen = {o.pod for o in obs}
    missing = sorted({p.name for p in pods} - seen)
    # Uniform over 3 endpoints, 36 probes: an endpoint is missed by chance with p = (2/3)^36 < 1e-6.
    assert not missing, (f"endpoints of slices {[s.name for s in slices]}: expected replies from all of "
                         f"{sorted(p.name for p in pods)} in 36 probes, never saw {missing}\n" + probe_table(obs))


@pytest.mark.behavior(
    "service/labels/not-proxied-when-labelled",
    must="A Service labelled service.kubernetes.io/service-proxy-name MUST NOT be proxied, "
         "EndpointSlices labelled service.kubernetes.io/headless MUST be ignored, and both "
         "MUST be proxied once the label is removed.",
    ref=REF_LABELS,
)
@pytest.mark.parametrize("label", ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"])
def test_labelled_service_is_not_proxied(cluster, timing, label):
    # kube-proxy reads service-proxy-name on Services and headless on EndpointSlices (the
    # EndpointSlice controller puts it on a headless Service's slices); since v1.36
    # (kubernetes#134623) neither label means anything on the other kind.
    pods = cluster.add_pods(2, node=cluster.nodes[1])
    ports = [PortSpec(80, 8080, "TCP")]
    control = cluster.create_service(pods, ports=ports)
    on_slices = label == "service.kubernetes.io/headless"
    svc = cluster.create_service(pods, ports=ports,
                                 labels={} if on_slices else {label: "other-proxy"})
    if on_slices:
        svc.set_slices([replace(s, labels={label: ""}) for s in svc.slices])
    where = "its EndpointSlices" if on_slices else "the Service"
    src = cluster.add_pod(cluster.nodes[0])

    v = reached_only(probe(src, control.cluster_ip, 80, "tcp", count=2), {p.name for p in pods})
    expect(v, f"control: unlabelled Service {control.name} with the same endpoints")
    unanswered(probe(src, svc.cluster_ip, 80, "tcp", count=3, timeout=timing.silence_s),
               f"Service {svc.name}, {where} labelled {label}: {src.name} → ClusterIP {svc.cluster_ip}:80")

    if on_slices:
        svc.set_slices([replace(s, labels={}) for s in svc.slices])
    else:
        svc.update(labels={})
    v = reached_only(probe(src, svc.cluster_ip, 80, "tcp", count=4), {p.name for p in pods})
    expect(v, f"label {label} removed from {where} of {svc.name}: ClusterIP must now be "
              "proxied")


@pytest.mark.behavior(
    "service/labels/other-kind-by-release",
    must="A label kube-proxy reads on one kind only (service-proxy-name on Services, headless on "
         "EndpointSlices) MUST NOT change proxying when put on the other kind; releases before "
         "v1.36 read both labels on both kinds (era profile, harness/eras.py).",
    ref="https://github.com/kubernetes/kubernetes/pull/134623",
)
@pytest.mark.parametrize("label, behaviour", [
    ("service.kubernetes.io/headless", "service/labels/headless-on-service"),
    ("service.kubernetes.io/service-proxy-name", "service/labels/proxy-name-on-slices"),
])
def test_label_on_the_other_kind_follows_the_release(cluster, timing, proxier_spec, label, behaviour):
    """Each label on the kind kube-proxy no longer reads it on (since v1.36, kubernetes#134623):
    a Service labelled headless, EndpointSlices labelled service-proxy-name. What is expected
    depends on the release (harness.eras); today both are proxied."""
    want = eras.expectation(behaviour, proxier_spec.release)
    rule = eras.describe(behaviour, proxier_spec.release)
    pods = cluster.add_pods(2, node=cluster.nodes[1])
    ports = [PortSpec(80, 8080, "TCP")]
    on_service = behaviour.endswith("on-service")
    svc = cluster.create_service(pods, ports=ports, labels={label: ""} if on_service else {})
    if not on_service:
        svc.set_slices([replace(s, labels={label: "other-proxy"}) for s in svc.slices])
    src = cluster.add_pod(cluster.nodes[0])
    where = "the Service" if on_service else "its EndpointSlices"
    what = f"Service {svc.name}, {where} labelled {label}: {src.name} → ClusterIP {svc.cluster_ip}:80"
    if want in ("proxied", "used"):
        v = reached_only(probe(src, svc.cluster_ip, 80, "tcp", count=4), {p.name for p in pods})
        expect(v, f"{what} must be proxied ({rule})")
    else:
        unanswered(probe(src, svc.cluster_ip, 80, "tcp", count=3, timeout=timing.silence_s),
                   f"{what} (must not be proxied; {rule})")


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
        expect(v, f"{step}: client → {dst}:{port}")

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
    expect(v, "before the change")

    new_np = cluster.new_node_port()
    svc.update(ports=[PortSpec(81, 8080, "TCP", node_port=new_np)])
    svc.set_endpoints(pods)  # the slice's ports follow the Service's

    for dst, port, what in ((svc.cluster_ip, 81, "new port"), (node.ip, new_np, "new nodePort")):
        v = reached_only(probe(src, dst, port, "tcp", count=3), names)
        expect(v, f"after port 80→81, nodePort {old_np}→{new_np}: {what} {dst}:{port}")
    for dst, port, what in ((svc.cluster_ip, old_port, "old port"), (node.ip, old_np, "old nodePort")):
        unanswered(probe(src, dst, port, "tcp", count=3, timeout=timing.silence_s),
                   f"after port 80→81, nodePort {old_np}→{new_np}: {what} {dst}:{port}")


@pytest.mark.behavior(
    "service/lifecycle/deleted-silent-recreated-works",
    must="Once a Service is deleted, its ClusterIP, nodePort and LB IP MUST no longer reach its "
         "former endpoints, and the Service recreated with the same name and addresses MUST "
         "work again.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/test/e2e/network/service.go "
        "(Services should be able to up and down services)",
)
@pytest.mark.nodeport
@pytest.mark.loadbalancer
def test_deleted_service_goes_silent_and_recreated_one_works(cluster, timing):
    pods = cluster.add_pods(2)
    lb_ip = cluster.lb_ip(42)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="LoadBalancer",
                                 load_balancer_ips=[lb_ip])
    client, node = cluster.client, cluster.nodes[1]
    name, cluster_ip, node_port = svc.name, svc.cluster_ip, svc.node_port()
    addresses = ((cluster_ip, 80, "ClusterIP"), (node.ip, node_port, "nodePort"), (lb_ip, 80, "LB IP"))

    def reached(step):
        for dst, port, what in addresses:
            expect_reached(probe(client, dst, port, "tcp", count=3), pods,
                           f"{step}: client -> {what} {dst}:{port}")

    reached("Service created")
    svc.delete()
    for dst, port, what in addresses:
        unanswered(probe(client, dst, port, "tcp", count=3, timeout=timing.silence_s),
                   f"Service {name} deleted: client -> former {what} {dst}:{port}")
    cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP", node_port=node_port)],
                           type="LoadBalancer", load_balancer_ips=[lb_ip], name=name,
                           cluster_ip=cluster_ip)
    reached("Service recreated")


@pytest.mark.behavior(
    "service/type-change/externalname",
    must="A Service changed from ClusterIP to ExternalName MUST stop being proxied at its "
         "former ClusterIP, and changed back to ClusterIP MUST be proxied again.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/test/e2e/network/service.go "
        "(Services should be able to change the type from ExternalName to ClusterIP, "
        "and from ClusterIP to ExternalName)",
)
def test_externalname_type_changes_stop_and_start_proxying(cluster, timing):
    # The EndpointSlice controller writes nothing for an ExternalName Service and leaves
    # its slices as they were (kubernetes#105986): the type alone must stop the proxying.
    pods = cluster.add_pods(2)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    src = cluster.add_pod(cluster.nodes[0])
    cluster_ip = svc.cluster_ip

    expect_reached(probe(src, cluster_ip, 80, "tcp", count=3), pods, "type ClusterIP")
    svc.update(type="ExternalName", external_name="svc.example.com", cluster_ip=None)
    unanswered(probe(src, cluster_ip, 80, "tcp", count=3, timeout=timing.silence_s),
               f"type changed to ExternalName: {src.name} -> former ClusterIP {cluster_ip}:80")
    svc.update(type="ClusterIP", external_name=None, cluster_ip=cluster_ip)
    expect_reached(probe(src, cluster_ip, 80, "tcp", count=3), pods,
                   f"type changed back to ClusterIP: {src.name} -> ClusterIP {cluster_ip}:80")


@pytest.mark.behavior(
    "service/port-change/add-and-remove-port",
    must="A port added to a live multi-port Service MUST work without disturbing the others, "
         "and a port removed from it MUST stop working while the others keep working.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#multi-port-services",
)
def test_port_added_to_and_removed_from_a_live_service(cluster, timing):
    pods = cluster.add_pods(2)
    a, b, c = (PortSpec(80, 8080, "TCP", "a"), PortSpec(81, 9090, "TCP", "b"),
               PortSpec(82, 8080, "UDP", "c"))
    svc = cluster.create_service(pods, ports=[a, b])
    src = cluster.add_pod(cluster.nodes[0])

    def reached(step, *ports):
        for p in ports:
            expect_reached(probe(src, svc.cluster_ip, p.port, p.proto, count=3), pods,
                           f"{step}: {src.name} -> ClusterIP {svc.cluster_ip}:{p.port}/{p.protocol}")

    reached("ports a, b", a, b)
    svc.update(ports=[a, b, c])
    svc.set_endpoints(pods)  # the slice's ports follow the Service's
    reached("port c added", a, b, c)
    svc.update(ports=[a, c])
    svc.set_endpoints(pods)
    reached("port b removed", a, c)
    unanswered(probe(src, svc.cluster_ip, b.port, "tcp", count=3, timeout=timing.silence_s),
               f"port b removed: {src.name} -> ClusterIP {svc.cluster_ip}:{b.port}")
