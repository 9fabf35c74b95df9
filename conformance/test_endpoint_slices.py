"""EndpointSlices as kube-proxy merges them: port numbers per slice, endpoints both ready
and terminating, and endpoints shared by two Services.

kube-proxy reads each slice's own ports (pkg/proxy/endpointslicecache.go): the same
Service port name may map to a different number in each slice (pods of two versions
listening on different ports behind one named targetPort), so every endpoint is translated
to the number of its own slice. An endpoint's ``ready`` condition decides whether it is
used, whatever ``terminating`` says (``terminating`` only selects the fallback when no
endpoint is ready; pkg/proxy/topology.go). Two endpoints with one address (a pod stuck
terminating whose IP the network already gave to a new pod) resolve to the one that is not
terminating, whichever slice lists it first (kubernetes#135266, fixed in v1.36 by #135593).
And the rules of one Service do not depend on another's: two Services selecting the same
pods keep working apart when one is deleted.
"""

from __future__ import annotations

import pytest

from harness.api import (
    EndpointSpec,
    Outcome,
    PortSpec,
    SliceSpec,
    expect_reached,
    expect_true,
    expect_uniform,
    probe,
    probe_table,
    required_samples,
)

pytestmark = pytest.mark.slices

REF_SLICES = "https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/"
REF_CONDITIONS = ("https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/"
                  "#conditions")


def endpoint(pod, **conditions):
    return EndpointSpec(ip=pod.ip, node=pod.node.name, pod=pod.name, **conditions)


def expect_all_seen(obs, pods, story: str, n: int) -> None:
    """Every one of ``pods`` answered at least once (``n`` probes spread uniformly)."""
    missing = sorted({p.name for p in pods} - {o.pod for o in obs if o.outcome is Outcome.REPLY})
    expect_true(not missing, f"{story}: {missing} never answered in {n} probes", probe_table(obs))


@pytest.mark.behavior(
    "service/slices/per-slice-port-mapping",
    must="When the slices of a Service map one port name to different numbers, each endpoint "
         "MUST be reached on the number of its own slice.",
    ref=REF_SLICES,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_each_slice_maps_the_port_name_to_its_own_number(cluster, proto):
    p = proto.lower()
    # Version 1 listens on 8080 only, version 2 on 9090 only: a DNAT to the other slice's
    # number is refused by the pod.
    v1 = cluster.add_pods(2, node=cluster.nodes[0], ports=[(8080, p)])
    v2 = cluster.add_pods(2, node=cluster.nodes[1], ports=[(9090, p)])
    svc = cluster.create_service([], ports=[PortSpec(80, "web", proto, "web")])
    svc.set_slices([
        SliceSpec(name=f"{svc.name}-v1", endpoints=[endpoint(x) for x in v1],
                  ports=[("web", 8080, proto)], address_type=cluster.family),
        SliceSpec(name=f"{svc.name}-v2", endpoints=[endpoint(x) for x in v2],
                  ports=[("web", 9090, proto)], address_type=cluster.family),
    ])
    src = cluster.add_pod(cluster.nodes[0])

    # Uniform over 4 endpoints, 40 probes: one is missed by chance with p <= 4 (3/4)^40 < 1e-4.
    obs = probe(src, svc.cluster_ip, 80, p, count=40)
    story = (f"{src.name} -> ClusterIP {svc.cluster_ip}:80/{proto}, port 'web' = 8080 in slice "
             f"v1 ({[x.name for x in v1]}), 9090 in slice v2 ({[x.name for x in v2]})")
    expect_reached(obs, [*v1, *v2], story)
    expect_all_seen(obs, [*v1, *v2], story, 40)


ALPHA, POWER = 1e-6, 0.999


@pytest.mark.behavior(
    "service/slices/duplicate-endpoint-counted-once",
    must="An endpoint listed in two slices of a Service (being moved between them) MUST be "
         "one endpoint: new connections spread uniformly over the distinct endpoints.",
    ref=REF_SLICES,
)
@pytest.mark.distribution
def test_endpoint_in_two_slices_counts_once(cluster, record_property):
    a, b, c = (cluster.add_pod(cluster.nodes[i % 2]) for i in range(3))
    svc = cluster.create_service([], ports=[PortSpec(80, 8080, "TCP")])
    ports = [("", 8080, "TCP")]
    svc.set_slices([
        SliceSpec(name=f"{svc.name}-a", endpoints=[endpoint(a), endpoint(b)], ports=ports,
                  address_type=cluster.family),
        SliceSpec(name=f"{svc.name}-b", endpoints=[endpoint(b), endpoint(c)], ports=ports,
                  address_type=cluster.family),
    ])
    src = cluster.add_pod(cluster.nodes[0])
    # Sized for the cascade-1/n bug (noncentrality 0.074 per probe): a duplicate counted
    # twice (1/4, 1/2, 1/4: 0.125 per probe) is caught with power >= 0.999 too; a correct
    # proxier fails with probability <= 1e-6 (docs/verdicts.md).
    n = required_samples(3, alpha=ALPHA, power=POWER, faults=["cascade-1/n"])
    record_property("samples", n)

    obs = probe(src, svc.cluster_ip, 80, "tcp", count=n)
    expect_uniform(obs, [a, b, c], f"{src.name} -> ClusterIP {svc.cluster_ip}:80, {b.name} "
                                   "listed in both slices", alpha=ALPHA)


@pytest.mark.behavior(
    "service/slices/duplicate-address-not-terminating-wins",
    must="When two endpoints of a Service share an address, one terminating (a pod being "
         "deleted) and one not (a new pod given the same IP), the one not terminating MUST "
         "be used, wherever the slices list them.",
    ref="https://github.com/kubernetes/kubernetes/issues/135266",
)
@pytest.mark.terminating
@pytest.mark.parametrize("layout", ["one-slice", "two-slices"])
def test_duplicate_address_resolves_to_the_endpoint_not_terminating(cluster, layout):
    pod = cluster.add_pod(cluster.nodes[1])
    # The deleted pod's endpoint: same address, another node, listed first.
    ghost = EndpointSpec(ip=pod.ip, node=cluster.nodes[0].name, ready=False, serving=False,
                         terminating=True, pod="ghost")
    svc = cluster.create_service([], ports=[PortSpec(80, 8080, "TCP")])
    ports = [("", 8080, "TCP")]
    if layout == "one-slice":
        slices = [SliceSpec(name=f"{svc.name}-a", endpoints=[ghost, endpoint(pod)], ports=ports,
                            address_type=cluster.family)]
    else:
        slices = [SliceSpec(name=f"{svc.name}-{n}", endpoints=[e], ports=ports,
                            address_type=cluster.family)
                  for n, e in (("a", ghost), ("b", endpoint(pod)))]
    svc.set_slices(slices)
    src = cluster.add_pod(cluster.nodes[0])

    expect_reached(probe(src, svc.cluster_ip, 80, "tcp", count=4), [pod],
                   f"{src.name} -> ClusterIP {svc.cluster_ip}:80, endpoints {pod.ip} ready "
                   f"({pod.name}, {pod.node.name}) and {pod.ip} terminating (a deleted pod on "
                   f"{cluster.nodes[0].name}, listed first), {layout}")


@pytest.mark.behavior(
    "service/slices/ready-and-terminating-used",
    must="An endpoint that is ready and terminating at once MUST receive traffic like any "
         "other ready endpoint.",
    ref=REF_CONDITIONS,
)
@pytest.mark.terminating
def test_endpoint_both_ready_and_terminating_is_used(cluster):
    a, b = cluster.add_pods(2, node=cluster.nodes[0])
    svc = cluster.create_service([endpoint(a), endpoint(b, ready=True, serving=True, terminating=True)],
                                 ports=[PortSpec(80, 8080, "TCP")])
    src = cluster.add_pod(cluster.nodes[1])

    # Uniform over 2 endpoints, 24 probes: one is missed by chance with p = 2 (1/2)^24 < 1e-6.
    obs = probe(src, svc.cluster_ip, 80, "tcp", count=24)
    story = (f"{src.name} -> ClusterIP {svc.cluster_ip}:80, endpoints {a.name} (ready) and "
             f"{b.name} (ready, serving and terminating)")
    expect_reached(obs, [a, b], story)
    expect_all_seen(obs, [a, b], story, 24)


@pytest.mark.behavior(
    "service/slices/shared-endpoints-other-deleted",
    must="When two Services share endpoints and one is deleted, the other MUST keep reaching "
         "all of them, and the deleted one's ClusterIP MUST stop answering.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/",
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_two_services_share_endpoints_and_one_is_deleted(cluster, timing, proto):
    p = proto.lower()
    pods = [cluster.add_pod(cluster.nodes[i % 2]) for i in range(2)]
    gone = cluster.create_service(pods, ports=[PortSpec(80, 8080, proto)])
    kept = cluster.create_service(pods, ports=[PortSpec(80, 8080, proto)])
    src = cluster.add_pod(cluster.nodes[0])
    for svc in (gone, kept):
        expect_reached(probe(src, svc.cluster_ip, 80, p, count=4), pods,
                       f"control: {src.name} -> {svc.name} {svc.cluster_ip}:80/{proto}")

    gone.delete()
    # Uniform over 2 endpoints, 24 probes: one is missed by chance with p = 2 (1/2)^24 < 1e-6.
    obs = probe(src, kept.cluster_ip, 80, p, count=24)
    story = (f"{src.name} -> {kept.name} {kept.cluster_ip}:80/{proto} after {gone.name}, which "
             f"shared its endpoints, was deleted")
    expect_reached(obs, pods, story)
    expect_all_seen(obs, pods, story, 24)
    left = probe(src, gone.cluster_ip, 80, p, count=3, timeout=timing.silence_s)
    answered = [o for o in left if o.outcome is Outcome.REPLY]
    expect_true(not answered, f"{src.name} -> deleted {gone.name} {gone.cluster_ip}:80/{proto}: "
                              f"{len(answered)} probes still answered", probe_table(left))
