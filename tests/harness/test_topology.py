"""Smoke test of the netns topology, the echo server and the probe: 2 nodes, 1 client and
3 pods, every pod reached directly from the client, from a node and from a pod on the other
node, over TCP and UDP, in both pod-network modes. Needs root."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from harness.topology.netns import Topology
from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec
from harness.traffic.probe import Outcome, probe

from .conftest import needs_root

pytestmark = needs_root


@pytest.fixture(scope="module", params=["routed", "bridge"])
def smoke(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """2 nodes + 1 client + 3 pods (pod-a1 on node-a, pod-b1/pod-b2 on node-b), once per
    pod-network mode (module scope, parametrized; depends on: root). Bridge mode has
    hairpin on and asks for bridge-nf-call-iptables when the kernel has it per namespace.
    Example: ``probe(smoke.clients["client"], smoke.pods["pod-b1"].ip, 8080)``."""
    mode = request.param
    spec = TopologySpec(nodes=[NodeSpec("node-a"), NodeSpec("node-b")],
                        clients=[ClientSpec("client", extra_addresses=1)],
                        pod_network=mode, hairpin_mode=mode == "bridge")
    with Topology(spec) as topo:
        topo.add_pod("pod-a1", "node-a")
        topo.add_pod("pod-b1", "node-b")
        topo.add_pod("pod-b2", "node-b", ports=[(8080, "tcp"), (8080, "udp"), (9000, "tcp")])
        yield topo


SOURCES = ["client", "node-a", "pod-b1"]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("source", SOURCES)
def test_every_pod_answers_directly_with_its_name_and_the_real_source(
        smoke: Topology, source: str, proto: str) -> None:
    host = smoke.hosts[source]
    for pod in smoke.pods.values():
        [obs] = probe(host, pod.ip, 8080, proto)
        assert obs.outcome is Outcome.REPLY, f"{source} -> {pod.name}: {obs}"
        assert obs.pod == pod.name, f"wrong pod answered: {obs}"
        # no NAT on a direct path: the pod sees exactly the probe's own address and port
        assert (obs.seen_src, obs.seen_sport) == (obs.src, obs.sport), str(obs)
        assert obs.src in host.addresses, f"{obs.src} is not one of {host.addresses}"


def test_addressing_plan(smoke: Topology) -> None:
    a, b = smoke.nodes["node-a"], smoke.nodes["node-b"]
    assert (a.lan_ip, a.pod_cidr, b.lan_ip, b.pod_cidr) == (
        "192.0.2.11", "10.244.1.0/24", "192.0.2.12", "10.244.2.0/24")
    assert smoke.clients["client"].addresses == ["192.0.2.101", "192.0.2.150"]
    assert a.addresses == ["192.0.2.11", "10.244.1.1"]
    assert smoke.pods["pod-a1"].ip.startswith("10.244.1.")
    assert smoke.pods["pod-a1"].node is a
    for h in smoke.hosts.values():
        assert h.netns.startswith(smoke.prefix + "-")
    assert a.sysctl("net.ipv4.ip_forward") == "1"


def test_pods_reach_nodes_and_the_service_range_is_routed(smoke: Topology) -> None:
    pod = smoke.pods["pod-b1"]
    for node in smoke.nodes.values():
        # nothing listens on port 9 of a node: a RESET proves the round trip
        [obs] = probe(pod, node.lan_ip, 9)
        assert obs.outcome is Outcome.RESET, f"pod -> node {node.name}: {obs}"
    # no proxier yet, so a service IP goes nowhere; but it is routed (not ENETUNREACH)
    for host in (pod, smoke.clients["client"], smoke.nodes["node-a"]):
        [obs] = probe(host, "10.96.0.10", 80, timeout=smoke.timing.silence_s)
        assert obs.outcome is Outcome.TIMEOUT, f"{host.name} -> service range: {obs}"


def test_tcp_connection_is_echoed_until_closed(smoke: Topology) -> None:
    pod = smoke.pods["pod-b2"]
    s = smoke.clients["client"].socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(smoke.timing.positive_s)
        s.connect((pod.ip, 9000))
        f = s.makefile("rb")
        hello = json.loads(f.readline())
        assert hello == {"pod": "pod-b2", "src": "192.0.2.101",
                         "sport": s.getsockname()[1], "proto": "tcp", "port": 9000}
        for i in range(3):
            s.sendall(f"line {i}\n".encode())
            assert f.readline() == f"line {i}\n".encode()
        f.close()


def test_second_client_address_is_seen(smoke: Topology) -> None:
    client = smoke.clients["client"]
    [obs] = probe(client, smoke.pods["pod-a1"].ip, 8080, source=client.addresses[1])
    assert obs.outcome is Outcome.REPLY and obs.seen_src == "192.0.2.150", str(obs)


def test_pods_come_and_go_at_runtime(smoke: Topology) -> None:
    pod = smoke.add_pod("late", "node-a", ip="10.244.1.200", ports=[(7000, "udp")])
    [obs] = probe(smoke.clients["client"], "10.244.1.200", 7000, "udp")
    assert obs.outcome is Outcome.REPLY and obs.pod == "late", str(obs)
    smoke.remove_pod("late")
    assert "late" not in smoke.pods
    [obs] = probe(smoke.clients["client"], pod.ip, 7000, "udp", timeout=smoke.timing.silence_s)
    assert obs.outcome is not Outcome.REPLY, str(obs)
    # the name and the address can be used again
    smoke.add_pod("late", "node-a", ip="10.244.1.200", ports=[(7000, "udp")])
    smoke.remove_pod("late")


def test_bridge_options(smoke: Topology) -> None:
    if smoke.spec.pod_network != "bridge":
        pytest.skip("bridge mode only")
    assert smoke.hairpin("pod-a1") is True
    node = smoke.nodes["node-a"]
    value = node.sysctl("net.bridge.bridge-nf-call-iptables")
    assert node.br_netfilter == (None if value is None else value == "1")


def test_bridge_netfilter_is_settable_per_node() -> None:
    spec = TopologySpec(nodes=[NodeSpec("n")], clients=[], pod_network="bridge",
                        br_netfilter=False, hairpin_mode=False)
    with Topology(spec, echo=False) as topo:
        node = topo.nodes["n"]
        if node.br_netfilter is None:
            pytest.skip("kernel has no per-namespace bridge-nf-call-iptables")
        assert node.sysctl("net.bridge.bridge-nf-call-iptables") == "0"
        topo.add_pod("p", "n")
        assert topo.hairpin("p") is False


@pytest.mark.parametrize("hairpin,br_nf,self_ok,neighbour_ok", [
    (True, True, True, True),
    # the classic: without hairpin a pod cannot reach itself through a service
    (False, True, False, True),
    # without bridge-nf-call-iptables a same-bridge neighbour's reply skips the un-DNAT
    (True, False, True, False),
    (False, False, True, False),
])
def test_bridge_options_change_what_a_service_path_does(
        hairpin: bool, br_nf: bool, self_ok: bool, neighbour_ok: bool) -> None:
    spec = TopologySpec(nodes=[NodeSpec("n")], clients=[], pod_network="bridge",
                        hairpin_mode=hairpin, br_netfilter=br_nf)
    try:
        topo = Topology(spec)
        topo.start()
    except Exception as e:  # noqa: BLE001 - only the missing kernel feature is a skip
        if "br_netfilter" in str(e):
            pytest.skip(str(e))
        raise
    with topo:
        pod, neighbour = topo.add_pod("p", "n"), topo.add_pod("q", "n")
        node = topo.nodes["n"]
        # a one-rule "service" 10.96.0.1:80 -> p:8080, with SNAT for the hairpin case
        node.run(["iptables-nft", "-t", "nat", "-A", "PREROUTING", "-d", "10.96.0.1", "-p",
                  "tcp", "--dport", "80", "-j", "DNAT", "--to-destination",
                  f"{pod.ip}:8080"], check=True)
        node.run(["iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-s", pod.ip, "-d",
                  pod.ip, "-j", "MASQUERADE"], check=True)
        for src, ok in ((pod, self_ok), (neighbour, neighbour_ok)):
            [obs] = probe(src, "10.96.0.1", 80, timeout=topo.timing.silence_s)
            expected = Outcome.REPLY if ok else Outcome.TIMEOUT
            assert obs.outcome is expected, \
                f"hairpin={hairpin} br_netfilter={br_nf} from {src.name}: {obs}"
