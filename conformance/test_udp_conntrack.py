"""UDP flows and conntrack: a UDP "connection" is only a conntrack entry, so it outlives rules.

Once a datagram has been DNATed, every later datagram of the same flow (same source port)
follows the conntrack entry, not the rules; the nat table sees only a flow's first packet.
When a Service's endpoints change, kube-proxy therefore deletes the UDP entries for the
Service's addresses whose reply source is not a serving endpoint (pkg/proxy/conntrack,
``CleanStaleEntries``; before v1.31, per removed endpoint and on 0 -> N endpoints), so that
a client that keeps one source port (DNS resolvers, syslog, game and VoIP clients) moves to
a live endpoint on its next datagram instead of black-holing until the entry expires.

Every flow here starts in a pod on the other node than the endpoints, so its conntrack entry
(the DNAT) lives on the source pod's node; the removed endpoints keep running, so a stale
entry is visible as a reply from a pod that is no longer an endpoint.
"""

from __future__ import annotations

import pytest

from harness.api import (
    Host,
    Node,
    Outcome,
    Pod,
    PortSpec,
    ServiceHandle,
    Timing,
    conntrack_entries,
    entries_text,
    expect,
    expect_reached,
    expect_refused,
    expect_true,
    probe,
    reached_only,
    refused,
    wait_no_stale_udp,
)

pytestmark = pytest.mark.conntrack

PORT_UNREACHABLE = (3, 3)
SPORT = 41053  # the client's fixed source port: one flow, one conntrack entry


def udp_entries(node, cluster_ip, port):
    return conntrack_entries(node.netns, proto="udp", orig_dst=cluster_ip, orig_dport=port)


def wait_no_stale(timing, node, svc, port, serving_ips):
    """Bounded wait for the proxier's cleanup of ClusterIP:port's UDP entries on ``node``;
    returns what is still stale (empty = clean)."""
    return wait_no_stale_udp(timing, node.netns, serving_ips, f"{svc.cluster_ip}:{port}",
                             orig_dst=svc.cluster_ip, orig_dport=port)


def assert_flow_reaches(timing: Timing, svc: ServiceHandle, kept: Pod, src: Host, node: Node,
                        story: str, *, node_port: int | None = None) -> None:
    """Make ``kept`` the only endpoint of ``svc``, give the proxier its bounded wait to delete
    the flow's stale UDP entries on ``node`` (where its DNAT lives), and assert that the flow
    ``src``:SPORT -> ClusterIP:80 (or ``node``:``node_port``) now reaches only ``kept``.
    ``story`` opens the failure message: where the flow went before and why it must move."""
    svc.set_endpoints([kept])
    if node_port is None:
        dst, port = svc.cluster_ip, 80
        left = wait_no_stale(timing, node, svc, port, {kept.ip})
    else:
        # Matched by port alone: the flow's entries on whichever node address it used.
        dst, port = node.ip, node_port
        left = wait_no_stale_udp(timing, node.netns, {kept.ip}, f"NodePort {port}",
                                 orig_dport=port)
    after = probe(src, dst, port, "udp", sport=SPORT, count=3)
    stale = (f"stale conntrack entries on {node.name} (reply source not a serving endpoint) "
             f"{timing.positive_s:.1f}s after the proxier acknowledged:\n{entries_text(left)}")
    expect_reached(after, [kept], story, details=stale)
    expect_true(not left, f"{story}; it does, but {len(left)} stale conntrack entries remain "
                f"on {node.name}", stale)


@pytest.mark.behavior(
    "service/udp/conntrack/flow-follows-endpoint-removal",
    must="A UDP flow (fixed source port) whose endpoint is removed MUST reach a remaining "
         "endpoint on its next datagram, and its stale conntrack entry MUST be deleted.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/conntrack/cleanup.go",
)
@pytest.mark.requires("udp-conntrack-cleanup")
def test_udp_flow_moves_off_a_removed_endpoint(cluster, timing):
    pods = cluster.add_pods(2, node=cluster.nodes[0])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "UDP")])
    node = cluster.nodes[1]
    src = cluster.add_pod(node)

    (first,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT)
    assert first.outcome is Outcome.REPLY, f"the flow never started: {first}"
    removed = next(p for p in pods if p.name == first.pod)
    kept = next(p for p in pods if p.name != first.pod)

    assert_flow_reaches(
        timing, svc, kept, src, node,
        f"flow {src.ip}:{SPORT} reached {removed.name} ({removed.ip}) first; after it was "
        f"removed from the endpoints the flow must reach {kept.name}.",
    )


@pytest.mark.behavior(
    "service/udp/conntrack/zero-to-n-endpoints",
    must="A UDP flow that started before its Service was programmed MUST be refused while the "
         "Service has no endpoints, and reach an endpoint on its next datagram once it has some.",
    ref="https://github.com/kubernetes/kubernetes/issues/48370",
)
@pytest.mark.requires("udp-conntrack-cleanup", "reject-no-endpoints")
def test_udp_flow_stops_black_holing_when_endpoints_appear(cluster, timing, record_property):
    node = cluster.nodes[1]
    src = cluster.add_pod(node)
    # Published later: until then no proxier knows the ClusterIP, so the flow's first
    # datagram leaves the node un-NATed (default route) and conntrack confirms an entry
    # whose reply source is the ClusterIP itself, as for a client that starts sending
    # before the proxier has synced a new Service.
    svc = cluster.create_service([], ports=[PortSpec(80, 8080, "UDP")], sync=False)
    (early,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT, timeout=timing.silence_s)
    unnated = [e for e in udp_entries(node, svc.cluster_ip, 80) if not e.dnat]
    assert early.outcome is not Outcome.REPLY, f"an unpublished ClusterIP answered: {early}"
    # A proxier that drops traffic to unallocated ClusterIPs (kube-proxy's nftables mode)
    # never lets the un-NATed entry form; the rest of the check still applies to it.
    record_property("unnated_entry_formed", bool(unnated))

    svc.update()  # published, still without endpoints
    v = refused(probe(src, svc.cluster_ip, 80, "udp", sport=SPORT, count=2), icmp=PORT_UNREACHABLE)
    expect(v, "with the Service published and no endpoints")

    pod = cluster.add_pod(cluster.nodes[0])
    assert_flow_reaches(
        timing, svc, pod, src, node,
        f"after the Service got endpoint {pod.name} ({pod.ip}), flow {src.ip}:{SPORT} must "
        "reach it.",
    )


@pytest.mark.behavior(
    "service/udp/conntrack/scaled-to-zero-and-back",
    must="When a UDP Service is scaled to zero, new flows and a flow that was reaching the "
         "removed pod MUST be refused; when it gets endpoints again, a flow that kept its "
         "source port MUST reach a new endpoint.",
    ref="https://github.com/kubernetes/kubernetes/issues/139628",
)
@pytest.mark.requires("udp-conntrack-cleanup", "reject-no-endpoints")
def test_udp_service_scaled_to_zero_and_back(cluster, timing, record_property):
    old = cluster.add_pod(cluster.nodes[0])
    svc = cluster.create_service([old], ports=[PortSpec(80, 8080, "UDP")])
    node = cluster.nodes[1]
    src = cluster.add_pod(node)
    (first,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT)
    assert first.pod == old.name, f"the flow never started: {first}"

    svc.set_endpoints([])
    v = refused(probe(src, svc.cluster_ip, 80, "udp", count=3), icmp=PORT_UNREACHABLE)
    expect(v, "new flows to the Service scaled to zero")
    # The old flow too: its entry still DNATs to the removed pod and the REJECT rule only
    # sees new flows, so kube-proxy deletes the entries of a UDP Service left without
    # endpoints (kubernetes#139628, fixed by #139629).
    left = wait_no_stale(timing, node, svc, 80, set())
    (at_zero,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT)
    record_property("old_flow_at_zero_endpoints", str(at_zero))
    story = (f"flow {src.ip}:{SPORT}, which reached {old.name}, must be refused once the "
             "Service has no endpoints")
    stale = f"stale entries on {node.name}:\n{entries_text(left)}"
    expect_refused([at_zero], story, icmp=PORT_UNREACHABLE, details=stale)
    expect_true(not left, f"{story}; it is, but {len(left)} stale conntrack entries remain "
                f"on {node.name}", stale)

    new = cluster.add_pod(cluster.nodes[0])
    assert_flow_reaches(
        timing, svc, new, src, node,
        f"flow {src.ip}:{SPORT} reached {old.name} before the scale to zero ({at_zero} at "
        f"zero); with {new.name} the only endpoint it must reach {new.name}.",
    )


@pytest.mark.behavior(
    "service/udp/conntrack/same-port-tcp-and-udp",
    must="One Service port number exposed on both TCP and UDP MUST translate each protocol "
         "to its own targetPort.",
    ref="https://kubernetes.io/docs/concepts/services-networking/service/#multi-port-services",
)
def test_same_port_number_on_tcp_and_udp(cluster):
    # The pods listen on 8080/TCP and 9090/UDP only: a datagram translated with the TCP
    # port's rules (or not at all) gets no echo reply.
    pods = cluster.add_pods(2, node=cluster.nodes[0], ports=[(8080, "tcp"), (9090, "udp")])
    svc = cluster.create_service(pods, ports=[PortSpec(53, 8080, "TCP", "dns-tcp"),
                                              PortSpec(53, 9090, "UDP", "dns")])
    src = cluster.add_pod(cluster.nodes[1])

    names = {p.name for p in pods}
    for proto in ("tcp", "udp"):
        v = reached_only(probe(src, svc.cluster_ip, 53, proto, count=8), names)
        expect(v, f"{proto.upper()} to {svc.cluster_ip}:53")


@pytest.mark.behavior(
    "service/udp/conntrack/nodeport-flow-follows-endpoint-removal",
    must="A UDP flow to a NodePort whose endpoint is removed MUST reach a remaining endpoint "
         "on its next datagram, and its stale conntrack entry MUST be deleted.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/conntrack/cleanup.go",
)
@pytest.mark.nodeport
@pytest.mark.requires("udp-conntrack-cleanup")
def test_udp_nodeport_flow_moves_off_a_removed_endpoint(cluster, timing):
    pods = cluster.add_pods(2, node=cluster.nodes[1])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "UDP")], type="NodePort")
    node = cluster.nodes[0]  # the client's way in: its conntrack holds the flow's DNAT
    client = cluster.client
    np_ = svc.node_port()

    (first,) = probe(client, node.ip, np_, "udp", sport=SPORT)
    assert first.outcome is Outcome.REPLY, f"the flow never started: {first}"
    kept = next(p for p in pods if p.name != first.pod)
    assert_flow_reaches(
        timing, svc, kept, client, node,
        f"flow {client.ip}:{SPORT} -> {node.ip}:{np_} reached {first.pod} first; after it was "
        f"removed the flow must reach {kept.name}.",
        node_port=np_,
    )


@pytest.mark.behavior(
    "service/udp/conntrack/deleted-service-flow-stops",
    must="When a UDP Service is deleted, a flow that was reaching its endpoint MUST NOT keep "
         "reaching it through the deleted Service's address.",
    ref="https://github.com/kubernetes/kubernetes/pull/141371",
)
@pytest.mark.requires("udp-conntrack-cleanup")
def test_udp_flow_stops_when_its_service_is_deleted(cluster, timing):
    old = cluster.add_pod(cluster.nodes[0])
    svc = cluster.create_service([old], ports=[PortSpec(80, 8080, "UDP")])
    node = cluster.nodes[1]
    src = cluster.add_pod(node)
    (first,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT)
    assert first.pod == old.name, f"the flow never started: {first}"

    svc.delete()
    left = wait_no_stale(timing, node, svc, 80, set())
    (after,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT, timeout=timing.silence_s)
    assert after.pod is None and not left, (
        f"flow {src.ip}:{SPORT} still reached {after.pod} through deleted Service "
        f"{svc.cluster_ip}:80 ({after}); its conntrack entries must go with the Service.\n"
        f"stale entries on {node.name}:\n{entries_text(left)}"
    )


@pytest.mark.behavior(
    "service/udp/conntrack/removed-port-flow-stops",
    must="When a UDP port is removed from a Service that keeps others, a flow that was reaching "
         "an endpoint through it MUST NOT keep reaching it through the removed port.",
    ref="https://github.com/kubernetes/kubernetes/pull/141371",
)
@pytest.mark.requires("udp-conntrack-cleanup")
def test_udp_flow_stops_when_its_service_port_is_removed(cluster, timing):
    # The DNS shape: one number on TCP and UDP; the UDP one goes. kube-proxy keys service
    # ports by protocol, so the UDP port is a deleted service port of a Service that stays.
    old = cluster.add_pod(cluster.nodes[0], ports=[(8080, "tcp"), (8080, "udp")])
    tcp = PortSpec(80, 8080, "TCP", "dns-tcp")
    svc = cluster.create_service([old], ports=[tcp, PortSpec(80, 8080, "UDP", "dns")])
    node = cluster.nodes[1]
    src = cluster.add_pod(node)
    (first,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT)
    assert first.pod == old.name, f"the flow never started: {first}"

    svc.update(ports=[tcp])
    svc.set_endpoints([old])  # the slice's ports follow the Service's
    left = wait_no_stale(timing, node, svc, 80, set())
    (after,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT, timeout=timing.silence_s)
    assert after.pod is None and not left, (
        f"flow {src.ip}:{SPORT} still reached {after.pod} through {svc.cluster_ip}:80/UDP, a "
        f"port the Service no longer has ({after}); its conntrack entries must go with it.\n"
        f"stale entries on {node.name}:\n{entries_text(left)}"
    )
