"""Load balancing: new connections to a Service spread uniformly over its endpoints.

kube-proxy's iptables mode picks endpoint i of n with probability 1/(n-i) in a cascade of
`statistic` rules, so each endpoint gets 1/n of new connections. The goodness-of-fit check
fails a correct proxier with probability at most ``ALPHA`` per check; the sample size is
computed (``harness.verdicts.required_samples``) so that each classic defect (every rule
with probability 1/n, probabilities rounded too coarsely, one endpoint missing from the
chain) is caught with probability at least ``POWER``.
"""

import pytest

from harness.api import PortSpec, expect, probe, required_samples, uniformity_verdict

pytestmark = pytest.mark.distribution

ALPHA = 1e-6
POWER = 0.999


@pytest.mark.behavior(
    "service/loadbalancing/uniform-over-endpoints",
    must="New connections to a Service MUST be spread uniformly over its ready endpoints.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/#proxy-mode-iptables",
)
@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_new_connections_spread_uniformly(cluster, n, record_property):
    pods = cluster.add_pods(n)
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    samples = required_samples(n, alpha=ALPHA, power=POWER)
    source = cluster.add_pod(cluster.nodes[0])

    obs = probe(source, svc.cluster_ip, 80, "tcp", count=samples)

    counts = {p.name: 0 for p in pods}
    for o in obs:
        if o.pod is not None:
            counts[o.pod] = counts.get(o.pod, 0) + 1
    verdict = uniformity_verdict(counts, [p.name for p in pods], alpha=ALPHA)
    record_property("statistics", verdict.to_dict())
    unanswered = [o for o in obs if o.pod is None]
    assert not unanswered, f"{len(unanswered)} of {len(obs)} probes got no reply: {unanswered[:5]}"
    expect(verdict)
