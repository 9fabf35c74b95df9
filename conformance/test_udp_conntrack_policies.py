"""UDP flows of a Service with internalTrafficPolicy Local, from the endpoint's own node.

kubernetes#126934 (regression test kubernetes#126935, upstream e2e "should be able to
preserve UDP traffic when server pod cycles for a ClusterIP service with
InternalTrafficPolicy set to Local"): a client on a node, or a pod beside it, keeps one
source port towards a UDP Service with internalTrafficPolicy Local whose only local
endpoint is replaced (deleted, then a new pod on the same node). The flow's conntrack entry
lives on that node; kube-proxy must delete it when the endpoint goes (its reply source is no
serving endpoint), or the flow keeps going to the dead address (black-holed in a real
cluster; here the old pod still runs, so a stale entry shows as its reply) instead of the
new local endpoint.
"""

from __future__ import annotations

import pytest

from harness.api import (
    Outcome,
    PortSpec,
    entries_text,
    expect_reached,
    expect_true,
    probe,
    wait_no_stale_udp,
)

pytestmark = pytest.mark.conntrack

SPORT = 41054  # the client's fixed source port: one flow, one conntrack entry


@pytest.mark.behavior(
    "service/udp/conntrack/itp-local-flow-follows-local-replacement",
    must="With internalTrafficPolicy Local, a UDP flow (fixed source port) from a node or a "
         "pod on it whose local endpoint is replaced MUST reach the new local endpoint, and no "
         "conntrack entry towards the removed endpoint may remain.",
    ref="https://github.com/kubernetes/kubernetes/issues/126934",
)
@pytest.mark.traffic_policy
@pytest.mark.requires("udp-conntrack-cleanup")
@pytest.mark.parametrize("where", ["node", "pod"])
def test_itp_local_udp_flow_follows_its_local_endpoint_replacement(cluster, timing, where):
    node, other = cluster.nodes[0], cluster.nodes[1]
    old = cluster.add_pod(node)
    far = cluster.add_pod(other)  # an endpoint elsewhere, never to be used from node
    svc = cluster.create_service([old, far], ports=[PortSpec(80, 8080, "UDP")],
                                 internal_traffic_policy="Local")
    src = node if where == "node" else cluster.add_pod(node)
    flow = f"flow {src.name} {src.ip}:{SPORT} -> {svc.cluster_ip}:80/UDP (iTP Local)"

    (first,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT)
    assert first.pod == old.name, f"{flow} never reached its local endpoint {old.name}: {first}"

    # The pod cycles: first deleted (no local endpoint left), then replaced on the same node.
    svc.set_endpoints([far])
    left = wait_no_stale_udp(timing, node.netns, {far.ip}, f"{svc.cluster_ip}:80",
                             orig_dst=svc.cluster_ip, orig_dport=80)
    (gap,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT, timeout=timing.silence_s)
    expect_true(gap.pod != old.name,
                f"{flow}: with {old.name} removed (no local endpoint), the flow still reached it",
                f"{gap}\nstale entries on {node.name}:\n{entries_text(left)}")
    expect_true(gap.outcome is not Outcome.REPLY,
                f"{flow}: with no local endpoint the flow must not be answered; it reached "
                f"{gap.pod}", str(gap))

    new = cluster.add_pod(node)
    svc.set_endpoints([new, far])
    left = wait_no_stale_udp(timing, node.netns, {new.ip, far.ip}, f"{svc.cluster_ip}:80",
                             orig_dst=svc.cluster_ip, orig_dport=80)
    after = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT, count=3)
    stale = (f"conntrack entries on {node.name} whose reply source is no serving endpoint, "
             f"{timing.positive_s:.1f}s after the proxier acknowledged:\n{entries_text(left)}")
    expect_reached(after, [new], f"{flow} reached {old.name} first; after {old.name} was "
                   f"replaced by {new.name} on the same node it must reach {new.name}",
                   details=stale)
    expect_true(not left, f"{flow} reaches {new.name}, but {len(left)} conntrack entries "
                "towards removed endpoints remain", stale)
