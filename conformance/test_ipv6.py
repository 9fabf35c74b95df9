"""IPv6 Services: a single-stack IPv6 cluster, with the same semantics as IPv4.

kube-proxy runs one proxier per family (ip6tables for IPv6). These checks run on an IPv6
cluster of their own (one per module and pytest-xdist worker), so that the default IPv4 run
covers IPv6 too: ClusterIP DNAT to ``[ip]:port``, the refusal of a Service without
endpoints (ICMPv6 port unreachable), and UDP conntrack cleanup over the IPv6 table. They
need a proxier that declares ``ipv6``. ``--ip-family ipv6`` runs every other check over
IPv6 as well.
"""

import pytest

from harness.api import (
    IPV6_PLAN,
    ClientSpec,
    EndpointSpec,
    NodeSpec,
    Outcome,
    PortSpec,
    TopologySpec,
    entries_text,
    expect,
    expect_reached,
    expect_true,
    probe,
    reached_only,
    refused,
    scoped_cluster,
    wait_no_stale_udp,
)

pytestmark = [pytest.mark.ipv6, pytest.mark.requires("ipv6")]

SPORT = 41066


# An IPv6 single-stack cluster: two nodes, one client, the proxier on each.
cluster6_env, cluster6 = scoped_cluster(
    TopologySpec(
        **IPV6_PLAN,
        nodes=[NodeSpec(name="node1"), NodeSpec(name="node2")],
        clients=[ClientSpec(name="client1")],
    ),
    "cluster6",
)


def v6_service(cluster, pods, ports):
    """A Service with an IPv6 ClusterIP and an IPv6 EndpointSlice for ``pods``."""
    return cluster.create_service(pods, ports=ports)


@pytest.mark.behavior(
    "service/ipv6/clusterip-dnat",
    must="A connection to an IPv6 ClusterIP:port MUST reach one of the Service's ready "
         "endpoints and no other pod.",
    ref="https://kubernetes.io/docs/concepts/services-networking/dual-stack/",
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_ipv6_clusterip_reaches_only_ready_endpoints(cluster6, proto):
    node = cluster6.nodes[0]
    ready = cluster6.add_pods(2, node=node)
    unready = cluster6.add_pod(node)
    bystander = cluster6.add_pod(node)
    svc = v6_service(cluster6, [*ready, EndpointSpec(ip=unready.ip, node=node.name, ready=False,
                                                     serving=False, pod=unready.name)],
                     [PortSpec(80, 8080, proto)])
    assert ":" in svc.cluster_ip and ":" in ready[0].ip, (svc.cluster_ip, ready[0].ip)
    src = cluster6.add_pod(cluster6.nodes[1])

    obs = probe(src, svc.cluster_ip, 80, proto.lower(), count=12)

    v = reached_only(obs, {p.name for p in ready})
    expect(v)
    assert bystander.name not in {o.pod for o in obs}


@pytest.mark.behavior(
    "service/ipv6/no-endpoints-refused",
    must="An IPv6 ClusterIP of a Service without endpoints MUST be refused with ICMPv6 port "
         "unreachable (type 1, code 4).",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
@pytest.mark.requires("reject-no-endpoints")
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_ipv6_clusterip_without_endpoints_is_refused(cluster6, proto):
    svc = v6_service(cluster6, [], [PortSpec(80, 8080, proto)])
    src = cluster6.add_pod(cluster6.nodes[1])

    obs = probe(src, svc.cluster_ip, 80, proto.lower(), count=2)

    v = refused(obs)  # ICMP port unreachable, i.e. ICMPv6 type 1 code 4 for an IPv6 probe
    expect(v)


@pytest.mark.behavior(
    "service/ipv6/udp-flow-follows-endpoint-removal",
    must="An IPv6 UDP flow (fixed source port) whose endpoint is removed MUST reach a remaining "
         "endpoint on its next datagram; its stale conntrack entry MUST be deleted.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/conntrack/cleanup.go",
)
@pytest.mark.conntrack
@pytest.mark.requires("udp-conntrack-cleanup")
def test_ipv6_udp_flow_moves_off_a_removed_endpoint(cluster6, timing):
    pods = cluster6.add_pods(2, node=cluster6.nodes[0])
    svc = v6_service(cluster6, pods, [PortSpec(80, 8080, "UDP")])
    node = cluster6.nodes[1]
    src = cluster6.add_pod(node)

    (first,) = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT)
    assert first.outcome is Outcome.REPLY, f"the flow never started: {first}"
    kept = next(p for p in pods if p.name != first.pod)
    svc.set_endpoints([kept])

    left = wait_no_stale_udp(timing, node.netns, {kept.ip}, f"[{svc.cluster_ip}]:80",
                             family="ipv6", orig_dst=svc.cluster_ip, orig_dport=80)
    after = probe(src, svc.cluster_ip, 80, "udp", sport=SPORT, count=3)
    story = (f"flow [{src.ip}]:{SPORT} reached {first.pod} first; after it was removed the "
             f"flow must reach {kept.name}")
    stale = f"stale entries on {node.name}:\n{entries_text(left)}"
    expect_reached(after, [kept], story, details=stale)
    expect_true(not left, f"{story}; it does, but {len(left)} stale conntrack entries remain "
                f"on {node.name}", stale)
