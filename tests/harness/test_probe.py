"""Probe outcomes against rules in namespaces the test owns: silence is TIMEOUT, REJECT is
ICMP 3/3 (TCP and UDP), a closed TCP port is RESET; statistics probes use distinct source
ports. Needs root."""

from __future__ import annotations

from harness.topology.netns import Topology
from harness.traffic.probe import Outcome, by_pod, probe, send_crafted, sniff_in

from .conftest import needs_root

pytestmark = needs_root


def _rule(topo: Topology, *rule: str) -> None:
    topo.pods["target"].run(["iptables-nft", "-A", "INPUT", *rule], check=True)


def test_silent_destination_is_timeout(probe_topology: Topology) -> None:
    topo = probe_topology
    for proto in ("tcp", "udp"):
        _rule(topo, "-p", proto, "--dport", "8101", "-j", "DROP")
        [obs] = probe(topo.clients["client"], topo.pods["target"].ip, 8101, proto,
                      timeout=topo.timing.silence_s)
        assert obs.outcome is Outcome.TIMEOUT, str(obs)
        assert obs.icmp_type is None and obs.pod is None


def test_reject_is_icmp_port_unreachable(probe_topology: Topology) -> None:
    topo = probe_topology
    target = topo.pods["target"]
    for proto in ("tcp", "udp"):
        _rule(topo, "-p", proto, "--dport", "8102", "-j", "REJECT",
              "--reject-with", "icmp-port-unreachable")
        for obs in probe(topo.clients["client"], target.ip, 8102, proto, count=5):
            assert obs.outcome is Outcome.ICMP, str(obs)
            assert (obs.icmp_type, obs.icmp_code, obs.icmp_from) == (3, 3, target.ip)


def test_reject_with_tcp_reset_is_reset(probe_topology: Topology) -> None:
    topo = probe_topology
    _rule(topo, "-p", "tcp", "--dport", "8103", "-j", "REJECT", "--reject-with", "tcp-reset")
    [obs] = probe(topo.clients["client"], topo.pods["target"].ip, 8103)
    assert obs.outcome is Outcome.RESET, str(obs)


def test_closed_ports_without_rules(probe_topology: Topology) -> None:
    topo = probe_topology
    [tcp] = probe(topo.clients["client"], topo.pods["target"].ip, 8104, "tcp")
    assert tcp.outcome is Outcome.RESET and tcp.icmp_type is None, str(tcp)
    [udp] = probe(topo.clients["client"], topo.pods["target"].ip, 8104, "udp")
    assert udp.outcome is Outcome.ICMP and (udp.icmp_type, udp.icmp_code) == (3, 3), str(udp)


def test_parallel_probes_are_separate_connections(probe_topology: Topology) -> None:
    topo = probe_topology
    for proto in ("tcp", "udp"):
        obs = probe(topo.clients["client"], topo.pods["target"].ip, 8080, proto,
                    count=300, parallel=16)
        assert by_pod(obs) == {"target": 300}
        assert all(o.seen_sport == o.sport and o.seen_src == o.src for o in obs)
        # kernel-chosen ports; an RST-closed probe's port may come round again later
        assert len({o.sport for o in obs}) > 250
    # an orderly close leaves TIME_WAIT behind, so no port repeats within the batch
    obs = probe(topo.clients["client"], topo.pods["target"].ip, 8080, count=300,
                parallel=16, close="fin")
    assert len({o.sport for o in obs}) == 300


def test_fixed_source_port_and_address(probe_topology: Topology) -> None:
    topo = probe_topology
    client = topo.clients["client"]
    for proto in ("tcp", "udp"):
        obs = probe(client, topo.pods["target"].ip, 8080, proto, count=3, sport=40123,
                    source=client.addresses[2])
        assert [(o.outcome, o.seen_src, o.seen_sport) for o in obs] == \
            [(Outcome.REPLY, client.addresses[2], 40123)] * 3


def test_local_failure_is_error_not_timeout(probe_topology: Topology) -> None:
    [obs] = probe(probe_topology.clients["client"], "10.250.0.1", 80)  # no route at all
    assert obs.outcome is Outcome.ERROR and "ENETUNREACH" in (obs.error or ""), str(obs)


def test_crafted_packet_with_foreign_source_is_seen(probe_topology: Topology) -> None:
    from scapy.layers.inet import IP, UDP

    topo = probe_topology
    target = topo.pods["target"]
    with sniff_in(target, "eth0") as cap:
        send_crafted(topo.clients["client"],
                     IP(src="192.0.2.199", dst=target.ip) / UDP(sport=1234, dport=8105))
        seen = topo.timing.wait_for(
            lambda: [p for p in cap.packets() if UDP in p and p[UDP].dport == 8105],
            "the crafted packet in the pod")
    assert seen[0][IP].src == "192.0.2.199"


def test_rules_on_the_probing_host_itself(probe_topology: Topology) -> None:
    # a node probing through its own OUTPUT chain, as kube-proxy's REJECT for a service
    # without endpoints does: the kernel answers locally (ICMP) or the send fails (EPERM)
    node = probe_topology.nodes["node-a"]
    silence = probe_topology.timing.silence_s
    for proto in ("tcp", "udp"):
        node.run(["iptables-nft", "-A", "OUTPUT", "-d", "10.96.0.51", "-p", proto, "-j",
                  "REJECT"], check=True)
        node.run(["iptables-nft", "-A", "OUTPUT", "-d", "10.96.0.52", "-p", proto, "-j",
                  "DROP"], check=True)
        [rej] = probe(node, "10.96.0.51", 80, proto)
        assert rej.outcome is Outcome.ICMP and (rej.icmp_type, rej.icmp_code) == (3, 3), \
            str(rej)
        [drop] = probe(node, "10.96.0.52", 80, proto, timeout=silence)
        assert drop.outcome is Outcome.TIMEOUT, str(drop)
