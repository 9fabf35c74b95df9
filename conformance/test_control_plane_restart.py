"""The control plane restarts: the data plane outlives the API server, and the proxier
catches up once it is back.

kube-proxy reads Services, EndpointSlices and its Node through client-go informers. When
the API server goes away (an upgrade, a crash) the rules it wrote stay as they are: the
Services keep working. Its reflectors retry (connection refused: back-off from 0.8 s,
doubling, capped at 30 s, jittered) and, once the server answers, resume their watches from the last
resourceVersion or list again (410 Gone); the next change is then applied as any other.
Upstream's e2e ("should work after restarting apiserver [Disruptive]", service.go) restarts
the apiserver, checks an existing Service still answers, then creates a new one.

Needs a control plane with an API server: ``--control-plane api`` (the suite's own, which
keeps its objects, resourceVersions and watch history across the restart) or
``--control-plane kube-apiserver`` (kube-apiserver restarted on the same running etcd).
"""

import time

import pytest

from harness.api import PortSpec, SyncTimeout, expect_reached, probe

pytestmark = [pytest.mark.restart, pytest.mark.slow]

# How long the API server stays down: past client-go's first reconnection attempt (0.8-1.6 s
# after the cut), so the proxier has met a refused connection, not only a cut stream. The
# downtime is the behaviour under test.
DOWN_S = 3.0
# client-go's reflector backs off from 0.8 s, doubling, capped at 30 s, with jitter up to as
# much again: its longest wait between two attempts is under 60 s (reflector.go,
# defaultBackoffMax and defaultBackoffJitter). Within that after the server is back, plus one
# sync, a proxier whose watches resume has applied a change (kube-proxy v1.37.2 over
# kube-apiserver took about 10 s, over the suite's API server about 1.5 s).
RECONNECT_BOUND_S = 60.0


@pytest.mark.behavior(
    "service/restart/control-plane-restart",
    must="While the control plane's API server is down, existing Services MUST keep working "
         "(the proxier keeps its rules); once it is back, the proxier MUST resume its watches "
         "and apply later changes (a new Service, an endpoint change).",
    ref="https://github.com/kubernetes/kubernetes/blob/master/test/e2e/network/service.go",
)
def test_services_work_while_the_api_server_is_down_and_changes_apply_once_it_is_back(
        cluster, timing, record_property):
    if not cluster.can_restart_control_plane:
        pytest.skip(f"--control-plane {cluster.env.control_plane} has no API server to restart; "
                    "run with --control-plane api or --control-plane kube-apiserver")
    before = cluster.add_pods(2, node=cluster.nodes[0])
    svc = cluster.create_service(before, ports=[PortSpec(80, 8080, "TCP")], type="NodePort")
    src = cluster.add_pod(cluster.nodes[1])
    expect_reached(probe(src, svc.cluster_ip, 80, "tcp", count=4), before,
                   f"control: {src.name} -> {svc.cluster_ip}:80 with the API server up")

    with cluster.control_plane_down():
        timing.wait_idle(DOWN_S)
        expect_reached(probe(src, svc.cluster_ip, 80, "tcp", count=4), before,
                       f"API server down for {DOWN_S:.0f}s: {src.name} -> {svc.cluster_ip}:80 "
                       "(the proxier must keep its rules)")
        for node in cluster.nodes:
            expect_reached(probe(cluster.client, node.ip, svc.node_port(), "tcp", count=4), before,
                           f"API server down: {cluster.client.name} -> {node.name} "
                           f"({node.ip}):{svc.node_port()}")

    # The API server is back: one generation with a new Service and an endpoint change.
    after = cluster.add_pods(2, node=cluster.nodes[0])
    new = cluster.create_service(after, ports=[PortSpec(80, 8080, "TCP")], sync=False)
    svc.set_endpoints(after[:1], sync=False)
    bound = RECONNECT_BOUND_S * timing.scale + timing.sync_s
    back = time.monotonic()
    try:
        cluster.env.sync(timeout=bound)
    except SyncTimeout as exc:
        # The rest of the run must not inherit proxiers that stopped watching.
        for node in cluster.nodes:
            cluster.env.restart_proxier(node.name)
        pytest.fail(
            f"after the API server came back, the proxier did not apply a change (new Service "
            f"{new.namespace}/{new.name}, endpoints of {svc.namespace}/{svc.name}) within "
            f"{bound:.0f}s: its watches did not resume\n{exc}", pytrace=False)
    record_property("applied_after_restart_s", round(time.monotonic() - back, 3))
    expect_reached(probe(src, new.cluster_ip, 80, "tcp", count=4), after,
                   f"API server back: {src.name} -> new Service {new.cluster_ip}:80")
    expect_reached(probe(src, svc.cluster_ip, 80, "tcp", count=4), after[:1],
                   f"API server back: {src.name} -> {svc.cluster_ip}:80 after its endpoints "
                   f"changed to {after[0].name}")
