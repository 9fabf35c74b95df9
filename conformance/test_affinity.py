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

from harness.model import PortSpec
from harness.report.timelines import AffinityTimeline
from harness.traffic.probe import probe

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
