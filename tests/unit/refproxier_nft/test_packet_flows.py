"""kube-proxy's nftables packet-flow tests (proxier_test.go runPacketFlowTests), traced
through the rendered script with :func:`nftscript.trace`.

Each case is (name, source, protocol, destination, port, expected output, masquerade).
"""

from __future__ import annotations

import pytest

from refproxier.nftables import render_nft
from tests.unit.refproxier.builders import NODE, ep, eps_slice, port, proxy_state, service
from tests.unit.refproxier_nft.builders import (
    TEST_EXTERNAL_CLIENT,
    TEST_EXTERNAL_CLIENT_BLOCKED,
    TEST_NODE_IP,
    TEST_NODE_IP_ALT,
    TEST_NODE_IPS,
    TEST_NODE_IPV6,
    TEST_NODE_IPV6_ALT,
    nft_config,
)
from tests.unit.refproxier_nft.nftscript import load, trace

Flow = tuple[str, str, str, str, int, str, bool]


def run_flows(objs: list[dict], flows: list[Flow], **cfg: object) -> None:
    config = nft_config(**cfg)  # type: ignore[arg-type]
    state = proxy_state(*objs, config=config)
    assert state.problems == ()
    table = load(render_nft(state, config))
    failures = []
    for name, src, proto, dst, dport, want, masq in flows:
        matches, got, got_masq = trace(table, src, proto, dst, dport, TEST_NODE_IPS)
        if (got, got_masq) != (want, masq):
            failures.append(
                f"{name}: {src} -> {dst}:{dport}/{proto}: expected {want!r} masq={masq}, "
                f"got {got!r} masq={got_masq}\n  " + "\n  ".join(matches)
            )
    assert not failures, "\n".join(failures)


def test_no_endpoints_reject():
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer",
                external_ips=["192.168.99.11"], lb_ips=["1.2.3.4"]),
    ]
    run_flows(objs, [
        ("pod to cluster IP with no endpoints", "10.0.0.2", "tcp", "172.30.0.41", 80, "REJECT", False),
        ("external to external IP with no endpoints", TEST_EXTERNAL_CLIENT, "tcp", "192.168.99.11", 80, "REJECT", False),
        ("pod to NodePort with no endpoints", "10.0.0.2", "tcp", TEST_NODE_IP, 3001, "REJECT", False),
        ("external to NodePort with no endpoints", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP, 3001, "REJECT", False),
        ("pod to LoadBalancer IP with no endpoints", "10.0.0.2", "tcp", "1.2.3.4", 80, "REJECT", False),
        ("external to LoadBalancer IP with no endpoints", TEST_EXTERNAL_CLIENT, "tcp", "1.2.3.4", 80, "REJECT", False),
    ])


def test_cluster_ip_general():
    p = [
        port("http", 80),
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443},
        port("dns-udp", 53, "UDP"),
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
        port("dns-sctp", 53, "SCTP"),
    ]
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port("http", 80)]),
        service("ns2", "svc2", "172.30.0.42", p),
        eps_slice("ns1", "svc1", [ep("10.180.0.1", NODE)], [{"name": "http", "port": 80, "protocol": "TCP"}]),
        eps_slice("ns2", "svc2", [ep("10.180.0.1", NODE), ep("10.180.2.1", "node2")], [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "https", "port": 8443, "protocol": "TCP"},
            {"name": "dns-udp", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
            {"name": "dns-sctp", "port": 53, "protocol": "SCTP"},
        ]),
    ]
    run_flows(objs, [
        ("simple clusterIP", "10.180.0.2", "tcp", "172.30.0.41", 80, "10.180.0.1:80", False),
        ("hairpin to cluster IP", "10.180.0.1", "tcp", "172.30.0.41", 80, "10.180.0.1:80", True),
        ("clusterIP with multiple endpoints", "10.180.0.2", "tcp", "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80", False),
        ("clusterIP with TargetPort", "10.180.0.2", "tcp", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443", False),
        ("TCP on a port shared with UDP and SCTP", "10.180.0.2", "tcp", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353", False),
        ("UDP on a port shared with TCP and SCTP", "10.180.0.2", "udp", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
        ("SCTP on a port shared with TCP and UDP", "10.180.0.2", "sctp", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
        ("TCP-only port does not match UDP traffic", "10.180.0.2", "udp", "172.30.0.42", 80, "REJECT", False),
        ("svc1 does not accept svc2's ports", "10.180.0.2", "tcp", "172.30.0.41", 443, "REJECT", False),
        ("packet to unallocated cluster ip", "10.180.0.2", "tcp", "172.30.0.50", 80, "DROP", False),
    ])


def test_unallocated_cluster_ips_pass_without_a_service_cidr():
    objs = [service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1")])]
    run_flows(objs, [
        ("unallocated address, no ServiceCIDR known", "10.180.0.2", "tcp", "172.30.0.50", 80, "", False),
        ("unknown port is still rejected", "10.180.0.2", "tcp", "172.30.0.41", 81, "REJECT", False),
    ], service_cidrs=())


def test_load_balancer():
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer",
                lb_ips=["1.2.3.4", "5.6.7.8"], source_ranges=["192.168.0.0/24", " 203.0.113.0/25"]),
        eps_slice("ns1", "svc1", [ep("10.180.0.1")]),
    ]
    e = "10.180.0.1:80"
    run_flows(objs, [
        ("pod to cluster IP", "10.0.0.2", "tcp", "172.30.0.41", 80, e, False),
        ("external to nodePort", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP, 3001, e, True),
        ("nodePort bypasses LoadBalancerSourceRanges", TEST_EXTERNAL_CLIENT_BLOCKED, "tcp", TEST_NODE_IP, 3001, e, True),
        ("accepted external to LB1", TEST_EXTERNAL_CLIENT, "tcp", "1.2.3.4", 80, e, True),
        ("accepted external to LB2", TEST_EXTERNAL_CLIENT, "tcp", "5.6.7.8", 80, e, True),
        ("blocked external to LB1", TEST_EXTERNAL_CLIENT_BLOCKED, "tcp", "1.2.3.4", 80, "DROP", False),
        ("blocked external to LB2", TEST_EXTERNAL_CLIENT_BLOCKED, "tcp", "5.6.7.8", 80, "DROP", False),
        ("pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "tcp", "1.2.3.4", 80, "DROP", False),
        ("pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "tcp", "5.6.7.8", 80, "DROP", False),
        ("node to LB1 (allowed by LoadBalancerSourceRanges)", TEST_NODE_IP, "tcp", "1.2.3.4", 80, e, True),
        ("node to LB2 (allowed by LoadBalancerSourceRanges)", TEST_NODE_IP, "tcp", "5.6.7.8", 80, e, True),
        ("same node to LB1, SNATted to LB1 (implicitly allowed)", "1.2.3.4", "tcp", "1.2.3.4", 80, e, True),
        ("same node to LB2, SNATted to LB2 (implicitly allowed)", "5.6.7.8", "tcp", "5.6.7.8", 80, e, True),
    ])


def test_firewall_applies_without_endpoints_too():
    # nftables only: firewall-check runs before the no-endpoints check, so a blocked
    # source sees DROP where iptables mode would REJECT.
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer",
                lb_ips=["1.2.3.4"], source_ranges=["203.0.113.0/25"]),
    ]
    run_flows(objs, [
        ("blocked source, no endpoints", TEST_EXTERNAL_CLIENT_BLOCKED, "tcp", "1.2.3.4", 80, "DROP", False),
        ("allowed source, no endpoints", TEST_EXTERNAL_CLIENT, "tcp", "1.2.3.4", 80, "REJECT", False),
    ])


@pytest.mark.parametrize(
    ("family", "nodeport_addresses", "allow_alt"),
    [
        (4, None, False),
        (4, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), True),
        (6, None, False),
        (6, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64", "2001:db8:1::2/128"), True),
    ],
    ids=["ipv4", "ipv4, multiple nodeport-addresses", "ipv6", "ipv6, multiple nodeport-addresses"],
)
def test_node_ports(family: int, nodeport_addresses: tuple[str, ...] | None, allow_alt: bool):
    v4 = family == 4
    svc_ip = "172.30.0.41" if v4 else "fd00:172:30::41"
    ep1, ep2 = ("10.180.0.1", "10.180.2.1") if v4 else ("fd00:10:180::1", "fd00:10:180::2:1")
    node_ip = TEST_NODE_IP if v4 else TEST_NODE_IPV6
    pod, client, alt = ("10.0.0.2", TEST_EXTERNAL_CLIENT, TEST_NODE_IP_ALT) if v4 else (
        "fd00:10::2", "2600:5200::1", TEST_NODE_IPV6_ALT)
    objs = [
        service("ns1", "svc1", svc_ip, [port(node_port=3001)], type="NodePort"),
        eps_slice("ns1", "svc1", [ep(ep1), ep(ep2, NODE)], address_type="IPv4" if v4 else "IPv6"),
    ]
    fmt = (lambda ip: f"{ip}:80") if v4 else (lambda ip: f"[{ip}]:80")
    out = f"{fmt(ep1)}, {fmt(ep2)}"
    flows: list[Flow] = [
        ("pod to cluster IP", pod, "tcp", svc_ip, 80, out, False),
        ("external to nodePort", client, "tcp", node_ip, 3001, out, True),
        ("node to nodePort", node_ip, "tcp", node_ip, 3001, out, True),
    ]
    if allow_alt:
        flows.append(("external to nodePort on secondary IP", client, "tcp", alt, 3001, out, True))
    else:
        flows.append(("secondary nodeIP ignores NodePorts", client, "tcp", alt, 3001, "", False))
    kw: dict[str, object] = {"ip_family": family}
    if nodeport_addresses is not None:
        kw["nodeport_addresses"] = nodeport_addresses
    run_flows(objs, flows, **kw)


def test_node_ports_default_to_the_primary_node_ip():
    # kube-proxy's nftables default for --nodeport-addresses is "primary".
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="NodePort"),
        eps_slice("ns1", "svc1", [ep("10.180.0.1")]),
    ]
    run_flows(objs, [
        ("primary node IP", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP, 3001, "10.180.0.1:80", True),
        ("secondary node IP", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP_ALT, 3001, "", False),
        ("localhost", "127.0.0.1", "tcp", "127.0.0.1", 3001, "", False),
    ], nodeport_addresses=())


def test_node_ports_match_all_never_accepts_localhost():
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="NodePort"),
        eps_slice("ns1", "svc1", [ep("10.180.0.1")]),
    ]
    run_flows(objs, [
        ("primary node IP", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP, 3001, "10.180.0.1:80", True),
        ("secondary node IP", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP_ALT, 3001, "10.180.0.1:80", True),
        ("localhost", "127.0.0.1", "tcp", "127.0.0.1", 3001, "", False),
    ], nodeport_addresses=("0.0.0.0/0",))


def _etp_objs(policy: str) -> list[dict]:
    return [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer", etp=policy,
                external_ips=["192.168.99.11"], lb_ips=["1.2.3.4"], hcnp=30000 if policy == "Local" else None),
        eps_slice("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)]),
    ]


def test_external_traffic_policy_local():
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    run_flows(_etp_objs("Local"), [
        ("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", "172.30.0.41", 80, both, False),
        ("pod to external IP hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", "192.168.99.11", 80, both, False),
        ("external to external IP hits only local endpoint, unmasqueraded", TEST_EXTERNAL_CLIENT, "tcp", "192.168.99.11", 80, local, False),
        ("pod to LB IP hits only both endpoints, unmasqueraded", "10.0.0.2", "tcp", "1.2.3.4", 80, both, False),
        ("external to LB IP hits only local endpoint, unmasqueraded", TEST_EXTERNAL_CLIENT, "tcp", "1.2.3.4", 80, local, False),
        ("pod to NodePort hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", TEST_NODE_IP, 3001, both, False),
        ("external to NodePort hits only local endpoint, unmasqueraded", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP, 3001, local, False),
    ])


def test_external_traffic_policy_cluster():
    both = "10.180.0.1:80, 10.180.2.1:80"
    run_flows(_etp_objs("Cluster"), [
        ("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", "172.30.0.41", 80, both, False),
        ("pod to external IP hits both endpoints, masqueraded", "10.0.0.2", "tcp", "192.168.99.11", 80, both, True),
        ("external to external IP hits both endpoints, masqueraded", TEST_EXTERNAL_CLIENT, "tcp", "192.168.99.11", 80, both, True),
        ("pod to LB IP hits both endpoints, masqueraded", "10.0.0.2", "tcp", "1.2.3.4", 80, both, True),
        ("external to LB IP hits both endpoints, masqueraded", TEST_EXTERNAL_CLIENT, "tcp", "1.2.3.4", 80, both, True),
        ("pod to NodePort hits both endpoints, masqueraded", "10.0.0.2", "tcp", TEST_NODE_IP, 3001, both, True),
        ("external to NodePort hits both endpoints, masqueraded", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP, 3001, both, True),
    ])


def test_external_traffic_policy_local_without_local_endpoints_drops_external_traffic():
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer", etp="Local",
                external_ips=["192.168.99.11"], lb_ips=["1.2.3.4"], hcnp=30000),
        eps_slice("ns1", "svc1", [ep("10.180.0.1")]),
    ]
    run_flows(objs, [
        ("pod to LB IP short-circuits", "10.0.0.2", "tcp", "1.2.3.4", 80, "10.180.0.1:80", False),
        ("external to LB IP dropped", TEST_EXTERNAL_CLIENT, "tcp", "1.2.3.4", 80, "DROP", False),
        ("external to NodePort dropped", TEST_EXTERNAL_CLIENT, "tcp", TEST_NODE_IP, 3001, "DROP", False),
        ("external to external IP dropped", TEST_EXTERNAL_CLIENT, "tcp", "192.168.99.11", 80, "DROP", False),
    ])


def test_internal_traffic_policy_local():
    objs = [
        service("ns1", "svc1", "172.30.0.41", itp="Local"),
        eps_slice("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)]),
        service("ns2", "svc2", "172.30.0.42", itp="Local"),
        eps_slice("ns2", "svc2", [ep("10.180.0.2")]),
    ]
    run_flows(objs, [
        ("only the local endpoint", "10.0.0.2", "tcp", "172.30.0.41", 80, "10.180.2.1:80", False),
        ("no local endpoint: dropped", "10.0.0.2", "tcp", "172.30.0.42", 80, "DROP", False),
    ])


def test_masquerade_all():
    objs = [service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1")])]
    run_flows(objs, [
        ("pod to cluster IP is masqueraded", "10.0.0.2", "tcp", "172.30.0.41", 80, "10.180.0.1:80", True),
    ], masquerade_all=True)


def test_terminating_endpoints_are_used_when_nothing_is_ready():
    objs = [
        service("ns1", "svc1", "172.30.0.41"),
        eps_slice("ns1", "svc1", [
            ep("10.180.0.1", ready=False, serving=True, terminating=True),
            ep("10.180.0.2", ready=False, serving=False, terminating=True),
        ]),
    ]
    run_flows(objs, [
        ("serving terminating endpoint only", "10.0.0.2", "tcp", "172.30.0.41", 80, "10.180.0.1:80", False),
    ])
