"""Session affinity (ClientIP): connections from one client address stick to one endpoint.

With ``sessionAffinity: ClientIP``, every new connection from the same client address
within ``timeoutSeconds`` of the last one goes to the same endpoint (kube-proxy: the
`recent` match keyed by source address and endpoint chain). After the timeout passes
without new connections, the endpoint is chosen afresh. Stickiness is per Service port,
shared by its ClusterIP and NodePort.

Statistics: with n endpoints and k client addresses chosen independently, a correct
proxier puts all k on one endpoint with probability n^(1-k); a proxier without affinity
makes m connections from one address look sticky with probability n^(1-m). k and m below
keep both below 1e-6.
"""

import math
import time

import pytest

from harness.api import AffinityTimeline, PortSpec, expect_reached, expect_true, probe, probe_table

pytestmark = [pytest.mark.affinity, pytest.mark.requires("affinity")]

ALPHA = 1e-6
N_ENDPOINTS = 4
# n^(1-m) <= ALPHA  =>  m >= 1 + log(1/ALPHA)/log(n)
M_PER_CLIENT = 1 + math.ceil(math.log(1 / ALPHA) / math.log(N_ENDPOINTS))  # 11
SHORT_TIMEOUT = 2  # seconds: the Service's own timeout, far from the 10800 s default
EXPIRY_MARGIN = 1.0  # seconds past the timeout before probing again (recent's granularity is 1 s)


def endpoints_by_source(obs):
    seen = {}
    for o in obs:
        seen.setdefault(o.src, []).append(o.pod)
    return seen


@pytest.mark.behavior(
    "service/affinity/clientip/sticky-within-timeout",
    must="Every new connection from one client address within timeoutSeconds MUST reach the same endpoint.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/#session-affinity",
)
def test_connections_from_one_client_stick_to_one_endpoint(cluster, record_property):
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], affinity_timeout=60)
    client = cluster.client
    sources = client.addresses[:3]
    timeline = AffinityTimeline([p.name for p in pods], x="connection", timeout_s=60)

    try:
        for source in sources:
            obs = probe(client, svc.cluster_ip, 80, "tcp", count=M_PER_CLIENT, source=source, parallel=1)
            timeline.add(obs)
            answered = {o.pod for o in obs}
            assert None not in answered, f"probes from {source} got no reply: {obs}"
            assert len(answered) == 1, (
                f"{M_PER_CLIENT} connections from {source} reached {len(answered)} endpoints "
                f"{sorted(answered)}; with ClientIP affinity they must all reach one"
            )
    finally:
        record_property("affinity_timeline", timeline.to_dict())


@pytest.mark.behavior(
    "service/affinity/clientip/spreads-clients",
    must="Different client addresses MUST be spread over the endpoints, not pinned to one.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/#session-affinity",
)
def test_different_clients_spread_over_endpoints(cluster, record_property):
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], affinity_timeout=60)
    client = cluster.client
    k = M_PER_CLIENT
    sources = client.addresses[:k]
    assert len(sources) >= k, f"client has {len(sources)} addresses, the check needs {k}"
    timeline = AffinityTimeline([p.name for p in pods], x="connection", timeout_s=60)

    chosen = {}
    for source in sources:
        (o,) = probe(client, svc.cluster_ip, 80, "tcp", count=1, source=source)
        timeline.add(o)
        chosen[source] = o.pod
    record_property("affinity_timeline", timeline.to_dict())
    assert None not in chosen.values(), f"some probes got no reply: {chosen}"
    assert len(set(chosen.values())) > 1, (
        f"all {k} client addresses reached {set(chosen.values())}; a correct proxier does "
        f"that with probability {N_ENDPOINTS ** (1 - k):.1e}"
    )


@pytest.mark.behavior(
    "service/affinity/clientip/expires-after-timeout",
    must="After timeoutSeconds without new connections, the endpoint MUST be chosen afresh.",
    ref="https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/",
)
def test_affinity_expires_after_the_services_timeout(cluster, timing, record_property):
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], affinity_timeout=SHORT_TIMEOUT)
    client = cluster.client
    sources = client.addresses[:M_PER_CLIENT]
    timeline = AffinityTimeline([p.name for p in pods], x="s", timeout_s=SHORT_TIMEOUT)

    before = {}
    for source in sources:
        t = time.monotonic()
        (o,) = probe(client, svc.cluster_ip, 80, "tcp", count=1, source=source)
        timeline.add(o, t)
        before[source] = o.pod
    idle_from = time.monotonic()
    # Waiting is the behaviour under test: the timeout plus a margin for recent's 1 s clock.
    timing.wait_idle(SHORT_TIMEOUT + EXPIRY_MARGIN)
    timeline.mark(idle_from + SHORT_TIMEOUT, f"timeoutSeconds ({SHORT_TIMEOUT} s) after the last connection")
    after = {}
    for source in sources:
        t = time.monotonic()
        (o,) = probe(client, svc.cluster_ip, 80, "tcp", count=1, source=source)
        timeline.add(o, t)
        after[source] = o.pod
    record_property("affinity_timeline", timeline.to_dict())

    same = [s for s in sources if before[s] == after[s]]
    assert None not in before.values() and None not in after.values(), (before, after)
    # A correct proxier re-chooses each address independently: all k unchanged with
    # probability N^-k (4^-11 ~ 2e-7).
    assert len(same) < len(sources), (
        f"after {SHORT_TIMEOUT}s + {EXPIRY_MARGIN}s idle, all {len(sources)} client addresses "
        f"still reached their first endpoint {before}: the affinity did not expire with the "
        "Service's timeoutSeconds"
    )


@pytest.mark.behavior(
    "service/affinity/clientip/shared-by-clusterip-and-nodeport",
    must="Affinity MUST hold across the ClusterIP and the NodePort of the same Service port.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
@pytest.mark.nodeport
def test_affinity_holds_across_clusterip_and_nodeport(cluster, record_property):
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="NodePort",
                                 affinity_timeout=60)
    client = cluster.client
    gateway = cluster.nodes[0]
    timeline = AffinityTimeline([p.name for p in pods], x="connection", timeout_s=60)
    try:
        for source in client.addresses[:M_PER_CLIENT]:
            (first,) = probe(client, svc.cluster_ip, 80, "tcp", count=1, source=source)
            timeline.add(first, via="ClusterIP")
            (second,) = probe(client, gateway.ip, svc.node_port(), "tcp", count=1, source=source)
            timeline.add(second, via="NodePort")
            assert first.pod is not None and first.pod == second.pod, (
                f"from {source}: ClusterIP reached {first.pod}, NodePort {gateway.ip}:"
                f"{svc.node_port()} reached {second.pod}; affinity must be shared"
            )
    finally:
        record_property("affinity_timeline", timeline.to_dict())


def endpoints_seen(obs):
    return sorted({o.pod for o in obs})


@pytest.mark.behavior(
    "service/affinity/clientip/follows-live-changes",
    must="Switching sessionAffinity of a live Service from None to ClientIP MUST make new "
         "connections from one client address stick to one endpoint, and switching it back "
         "to None MUST spread them again.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/#session-affinity",
)
def test_affinity_follows_switches_on_a_live_service(cluster):
    # Without affinity, M connections from one address all reach one of N endpoints with
    # probability N^(1-M) (4^-10 ~ 1e-6): seeing more than one is the "spread" verdict.
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    client, source = cluster.client, cluster.client.addresses[0]

    def connections(step):
        obs = probe(client, svc.cluster_ip, 80, "tcp", count=M_PER_CLIENT, source=source, parallel=1)
        expect_reached(obs, pods, f"{step}: {source} -> ClusterIP {svc.cluster_ip}:80")
        return obs

    obs = connections("sessionAffinity None")
    expect_true(len(endpoints_seen(obs)) > 1,
                f"sessionAffinity None: {M_PER_CLIENT} connections from {source} all reached "
                f"{endpoints_seen(obs)}; without affinity they must spread", probe_table(obs))
    svc.update(affinity_timeout=60)
    obs = connections("switched to ClientIP")
    expect_true(len(endpoints_seen(obs)) == 1,
                f"switched None -> ClientIP: {M_PER_CLIENT} connections from {source} reached "
                f"{endpoints_seen(obs)}; they must all reach one endpoint", probe_table(obs))
    svc.update(affinity_timeout=None)
    obs = connections("switched back to None")
    expect_true(len(endpoints_seen(obs)) > 1,
                f"switched ClientIP -> None: {M_PER_CLIENT} connections from {source} all reached "
                f"{endpoints_seen(obs)}; the affinity must be gone", probe_table(obs))


@pytest.mark.behavior(
    "service/affinity/clientip/udp",
    must="With ClientIP affinity, every new UDP flow from one client address within "
         "timeoutSeconds MUST reach the same endpoint.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/#session-affinity",
)
@pytest.mark.parametrize("where", ["client", "pod"])
def test_udp_flows_from_one_client_stick_to_one_endpoint(cluster, where):
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(53, 8080, "UDP")], affinity_timeout=60)
    src = cluster.client if where == "client" else cluster.add_pod(cluster.nodes[1])
    sources = src.addresses[:2] if where == "client" else [None]

    for source in sources:
        # Sequential datagrams, each from a new socket (a new source port: a new flow).
        obs = probe(src, svc.cluster_ip, 53, "udp", count=M_PER_CLIENT, source=source, parallel=1)
        where_from = f"{src.name} ({source or src.ip}) -> ClusterIP {svc.cluster_ip}:53/UDP"
        expect_reached(obs, pods, where_from)
        expect_true(len(endpoints_seen(obs)) == 1,
                    f"{where_from}: {M_PER_CLIENT} UDP flows reached {endpoints_seen(obs)}; with "
                    "ClientIP affinity they must all reach one endpoint", probe_table(obs))


@pytest.mark.behavior(
    "service/affinity/clientip/ports-independent",
    must="Each port of a multi-port Service with ClientIP affinity MUST keep its own "
         "stickiness: a client sticks per port, and the endpoint chosen for one port MUST NOT "
         "decide the endpoint of the other.",
    ref="https://github.com/kubernetes/kubernetes/issues/103000",
)
def test_ports_of_one_service_choose_independently(cluster):
    # kube-proxy remembers a client per endpoint chain (one per Service port), so the two
    # ports choose independently (kubernetes#103000; Cilium documents the same). All k
    # client addresses landing on the same endpoint for both ports by chance: N^-k.
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP", "a"), PortSpec(81, 9090, "TCP", "b")],
                                 affinity_timeout=60)
    client = cluster.client
    sources = client.addresses[:M_PER_CLIENT]
    pairs = {}
    for source in sources:
        obs = [o for port in (80, 81, 80, 81)
               for o in probe(client, svc.cluster_ip, port, "tcp", count=1, source=source)]
        expect_reached(obs, pods, f"{source} -> ClusterIP {svc.cluster_ip} ports 80, 81, 80, 81")
        expect_true(obs[0].pod == obs[2].pod and obs[1].pod == obs[3].pod,
                    f"from {source}: port 80 reached {obs[0].pod} then {obs[2].pod}, port 81 "
                    f"{obs[1].pod} then {obs[3].pod}; each port must stick", probe_table(obs))
        pairs[source] = (obs[0].pod, obs[1].pod)
    expect_true(any(a != b for a, b in pairs.values()),
                f"all {len(sources)} client addresses reached the same endpoint on ports 80 and 81 "
                f"({pairs}); independent choices do that with probability "
                f"{N_ENDPOINTS ** -len(sources):.1e}: the ports share one affinity")


@pytest.mark.behavior(
    "service/affinity/clientip/load-balancer-ip",
    must="ClientIP affinity MUST hold for connections to a LoadBalancer ingress IP, with "
         "externalTrafficPolicy Cluster and Local.",
    ref="https://github.com/kubernetes/kubernetes/issues/55429",
)
@pytest.mark.loadbalancer
@pytest.mark.parametrize("etp", ["Cluster", "Local"])
def test_affinity_on_a_load_balancer_ip(cluster, etp):
    # The LB range is routed to nodes[0]; every endpoint is there, so the Local policy has
    # all of them to choose from and the client's address is kept (the affinity key).
    gateway = cluster.nodes[0]
    pods = cluster.add_pods(N_ENDPOINTS, node=gateway)
    lb_ip = cluster.lb_ip(51)
    cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="LoadBalancer",
                           load_balancer_ips=[lb_ip], external_traffic_policy=etp, affinity_timeout=60)
    client = cluster.client
    for source in client.addresses[:3]:
        obs = probe(client, lb_ip, 80, "tcp", count=M_PER_CLIENT, source=source, parallel=1)
        where_from = f"{source} -> LB IP {lb_ip}:80 (externalTrafficPolicy {etp})"
        expect_reached(obs, pods, where_from)
        expect_true(len(endpoints_seen(obs)) == 1,
                    f"{where_from}: {M_PER_CLIENT} connections reached {endpoints_seen(obs)}; with "
                    "ClientIP affinity they must all reach one endpoint", probe_table(obs))


@pytest.mark.behavior(
    "service/affinity/clientip/localhost-nodeport",
    must="ClientIP affinity MUST hold for the node's own connections to a NodePort on 127.0.0.1.",
    ref="https://github.com/kubernetes/kubernetes/issues/90259",
)
@pytest.mark.nodeport
@pytest.mark.requires("localhost-nodeports")
def test_affinity_on_a_localhost_nodeport(cluster):
    if cluster.family == "IPv6":
        pytest.skip("kube-proxy answers localhost nodePorts on IPv4 only (127.0.0.1 with "
                    "route_localnet); IPv6 has no ::1 counterpart")
    # The affinity key is the source before masquerading: 127.0.0.1 for every connection.
    pods = cluster.add_pods(N_ENDPOINTS)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="NodePort",
                                 affinity_timeout=60)
    node = cluster.nodes[1]
    obs = probe(node, "127.0.0.1", svc.node_port(), "tcp", count=M_PER_CLIENT, parallel=1)
    where_from = f"{node.name} -> 127.0.0.1:{svc.node_port()}"
    expect_reached(obs, pods, where_from)
    expect_true(len(endpoints_seen(obs)) == 1,
                f"{where_from}: {M_PER_CLIENT} connections reached {endpoints_seen(obs)}; with "
                "ClientIP affinity they must all reach one endpoint", probe_table(obs))
