"""IPv6 single-stack: the same topology, echo and probe code with IPv6 CIDRs (documentation
and ULA prefixes). Dual-stack is not built yet. Needs root."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.topology.netns import Topology
from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec
from harness.traffic.probe import Outcome, probe

from .conftest import needs_root

pytestmark = needs_root

V6 = dict(lan_cidr="2001:db8:2::/64", cluster_cidr="fd00:10:244::/56", node_cidr_prefixlen=64,
          service_cidr="fd00:10:96::/112", external_cidr="2001:db8:51::/64",
          lb_cidr="2001:db8:113::/64")


@pytest.fixture(scope="module", params=["routed", "bridge"])
def topo6(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """An IPv6 topology: nodes a/b, client c (one secondary), pods p-a on a and p-b on b
    (module scope, per pod-network mode; depends on: root). Example:
    ``probe(topo6.clients["c"], topo6.pods["p-b"].ip, 8080)``."""
    spec = TopologySpec(nodes=[NodeSpec("a"), NodeSpec("b")],
                        clients=[ClientSpec("c", extra_addresses=1)],
                        pod_network=request.param, **V6)
    with Topology(spec) as topo:
        topo.add_pod("p-a", "a")
        topo.add_pod("p-b", "b")
        yield topo


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_v6_pods_answer_from_client_node_and_pod(topo6: Topology, proto: str) -> None:
    target = topo6.pods["p-b"]
    for host in (topo6.clients["c"], topo6.nodes["a"], topo6.pods["p-a"]):
        [obs] = probe(host, target.ip, 8080, proto)
        assert obs.outcome is Outcome.REPLY and obs.pod == "p-b", f"{host.name}: {obs}"
        assert (obs.seen_src, obs.seen_sport) == (obs.src, obs.sport)
    # the primary address is the default source; the secondary only when asked for
    client = topo6.clients["c"]
    [obs] = probe(client, target.ip, 8080, proto)
    assert obs.src == client.ip
    [obs] = probe(client, target.ip, 8080, proto, source=client.addresses[1])
    assert obs.seen_src == client.addresses[1]


def test_v6_reject_reset_and_silence(topo6: Topology) -> None:
    target, client = topo6.pods["p-b"], topo6.clients["c"]
    for proto in ("tcp", "udp"):
        target.run(["ip6tables-nft", "-A", "INPUT", "-p", proto, "--dport", "8201", "-j",
                    "REJECT"], check=True)
        target.run(["ip6tables-nft", "-A", "INPUT", "-p", proto, "--dport", "8202", "-j",
                    "DROP"], check=True)
        [rej] = probe(client, target.ip, 8201, proto)
        assert rej.outcome is Outcome.ICMP and (rej.icmp_type, rej.icmp_code) == (1, 4), \
            str(rej)
        [drop] = probe(client, target.ip, 8202, proto, timeout=topo6.timing.silence_s)
        assert drop.outcome is Outcome.TIMEOUT, str(drop)
    [rst] = probe(client, target.ip, 8203, "tcp")
    assert rst.outcome is Outcome.RESET, str(rst)
