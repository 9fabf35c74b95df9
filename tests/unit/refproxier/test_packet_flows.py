"""Packet flows through the rendered rules, ported from kube-proxy's packetFlowTest tables
(TestTracePacket, TestNoEndpointsReject, TestClusterIPGeneral, TestLoadBalancer,
TestNodePorts, TestHealthCheckNodePort, TestExternalTrafficPolicyLocal/Cluster)."""

from dataclasses import dataclass

import pytest

from refproxier.iptables import render
from tests.unit.refproxier.builders import (
    NODE,
    ep,
    eps_slice,
    fake_config,
    port,
    proxy_state,
    service,
)
from tests.unit.refproxier.test_overall_rules import overall_objects
from tests.unit.refproxier.tracer import trace

NODE_IP, NODE_IP_ALT = "192.168.0.2", "192.168.1.2"
EXTERNAL_CLIENT, EXTERNAL_CLIENT_BLOCKED = "203.0.113.2", "203.0.113.130"


@dataclass
class Flow:
    name: str
    src: str
    dst: str
    dport: int
    output: str
    masq: bool = False
    proto: str = "tcp"


def check(text: str, flows: list[Flow]) -> None:
    failures = []
    for f in flows:
        out, masq, matched = trace(text, f.src, f.dst, f.dport, f.proto)
        if (out, masq) != (f.output, f.masq):
            failures.append(
                f"{f.name}: {f.proto} {f.src} -> {f.dst}:{f.dport}: expected {f.output!r} masq={f.masq}, "
                f"got {out!r} masq={masq}; matched:\n  " + "\n  ".join(matched)
            )
    assert not failures, "\n".join(failures)


def test_trace_of_the_overall_rule_set():
    text = render(proxy_state(*overall_objects()), fake_config())
    check(text, [
        Flow("no match", "10.0.0.2", "10.0.0.3", 80, ""),
        Flow("single endpoint", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80"),
        Flow("multiple endpoints", "10.0.0.2", "172.30.0.44", 80, "10.180.0.4:80, 10.180.0.5:80"),
        Flow("LOCAL, KUBE-MARK-MASQ", NODE_IP, "192.168.99.22", 80, "10.180.0.2:80", masq=True),
        Flow("DROP", EXTERNAL_CLIENT, "192.168.99.22", 80, "DROP"),
        Flow("ACCEPT (NodePortHealthCheck)", NODE_IP, NODE_IP, 30000, "ACCEPT"),
        Flow("REJECT", "10.0.0.2", "172.30.0.46", 80, "REJECT"),
    ])


def test_no_endpoints_rejects_every_destination():
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer",
                  external_ips=["192.168.99.11"], lb_ips=["1.2.3.4"])
    text = render(proxy_state(svc), fake_config())
    check(text, [
        Flow("pod to cluster IP with no endpoints", "10.0.0.2", "172.30.0.41", 80, "REJECT"),
        Flow("external to external IP with no endpoints", EXTERNAL_CLIENT, "192.168.99.11", 80, "REJECT"),
        Flow("pod to NodePort with no endpoints", "10.0.0.2", NODE_IP, 3001, "REJECT"),
        Flow("external to NodePort with no endpoints", EXTERNAL_CLIENT, NODE_IP, 3001, "REJECT"),
        Flow("pod to LoadBalancer IP with no endpoints", "10.0.0.2", "1.2.3.4", 80, "REJECT"),
        Flow("external to LoadBalancer IP with no endpoints", EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT"),
    ])


def test_cluster_ip_general():
    svc1 = service("ns1", "svc1", "172.30.0.41", [port("http", 80)])
    svc2 = service("ns2", "svc2", "172.30.0.42", [
        port("http", 80), port("https", 443), port("dns-udp", 53, "UDP"), port("dns-tcp", 53, "TCP"),
        port("dns-sctp", 53, "SCTP"),
    ])
    eps1 = eps_slice("ns1", "svc1", [ep("10.180.0.1", NODE)], [{"name": "http", "port": 80, "protocol": "TCP"}])
    eps2 = eps_slice("ns2", "svc2", [ep("10.180.0.1", NODE), ep("10.180.2.1", "node2")], [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "https", "port": 8443, "protocol": "TCP"},
        {"name": "dns-udp", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
        {"name": "dns-sctp", "port": 53, "protocol": "SCTP"},
    ])
    text = render(proxy_state(svc1, svc2, eps1, eps2), fake_config())
    check(text, [
        Flow("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80"),
        Flow("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", masq=True),
        Flow("clusterIP with multiple endpoints", "10.180.0.2", "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80"),
        Flow("clusterIP with TargetPort", "10.180.0.2", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443"),
        Flow("same port (TCP)", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353"),
        Flow("same port (UDP)", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", proto="udp"),
        Flow("same port (SCTP)", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", proto="sctp"),
        Flow("TCP-only port does not match UDP traffic", "10.180.0.2", "172.30.0.42", 80, "", proto="udp"),
        Flow("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, ""),
    ])


def test_load_balancer_source_ranges():
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer",
                  lb_ips=["1.2.3.4", "5.6.7.8"], source_ranges=["192.168.0.0/24", " 203.0.113.0/25"])
    text = render(proxy_state(svc, eps_slice("ns1", "svc1", [ep("10.180.0.1")])), fake_config())
    ep1 = "10.180.0.1:80"
    check(text, [
        Flow("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, ep1),
        Flow("external to nodePort", EXTERNAL_CLIENT, NODE_IP, 3001, ep1, masq=True),
        Flow("nodePort bypasses LoadBalancerSourceRanges", EXTERNAL_CLIENT_BLOCKED, NODE_IP, 3001, ep1, masq=True),
        Flow("accepted external to LB1", EXTERNAL_CLIENT, "1.2.3.4", 80, ep1, masq=True),
        Flow("accepted external to LB2", EXTERNAL_CLIENT, "5.6.7.8", 80, ep1, masq=True),
        Flow("blocked external to LB1", EXTERNAL_CLIENT_BLOCKED, "1.2.3.4", 80, "DROP"),
        Flow("blocked external to LB2", EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP"),
        Flow("pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "1.2.3.4", 80, "DROP"),
        Flow("pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "5.6.7.8", 80, "DROP"),
        Flow("node to LB1 (allowed by LoadBalancerSourceRanges)", NODE_IP, "1.2.3.4", 80, ep1, masq=True),
        Flow("node to LB2 (allowed by LoadBalancerSourceRanges)", NODE_IP, "5.6.7.8", 80, ep1, masq=True),
        Flow("same node to LB1, SNATted to LB1", "1.2.3.4", "1.2.3.4", 80, ep1, masq=True),
        Flow("same node to LB2, SNATted to LB2", "5.6.7.8", "5.6.7.8", 80, ep1, masq=True),
    ])


NODEPORT_CASES = [
    # name, family, localhost nodeports, nodeport addresses, alt node IP allowed, KUBE-FIREWALL
    ("ipv4, localhost-nodeports enabled", 4, True, (), True, True),
    ("ipv4, localhost-nodeports disabled", 4, False, (), True, False),
    ("ipv4, localhost-nodeports disabled, localhost in nodeport-addresses", 4, False, ("192.168.0.0/24", "127.0.0.1/32"), False, False),
    ("ipv4, multiple nodeport-addresses", 4, False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), True, False),
    ("ipv6, localhost-nodeports enabled", 6, True, (), True, False),
    ("ipv6, localhost-nodeports disabled", 6, False, (), True, False),
    ("ipv6, multiple nodeport-addresses", 6, False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), False, False),
]


@pytest.mark.parametrize(("name", "family", "localhost", "npa", "allow_alt", "firewall"), NODEPORT_CASES, ids=[c[0] for c in NODEPORT_CASES])
def test_node_ports(name, family, localhost, npa, allow_alt, firewall):
    cfg = fake_config(ip_family=family, localhost_nodeports=localhost, nodeport_addresses=npa)
    if family == 4:
        svc_ip, ep1, ep2, pod, client, node, alt, lo = (
            "172.30.0.41", "10.180.0.1", "10.180.2.1", "10.0.0.2", EXTERNAL_CLIENT, NODE_IP, NODE_IP_ALT, "127.0.0.1")
        out = f"{ep1}:80, {ep2}:80"
    else:
        svc_ip, ep1, ep2, pod, client, node, alt, lo = (
            "fd00:172:30::41", "fd00:10:180::1", "fd00:10:180::2:1", "fd00:10::2", "2600:5200::1", "2001:db8::1",
            "2001:db8:1::2", "::1")
        out = f"[{ep1}]:80, [{ep2}]:80"
    objs = (
        service("ns1", "svc1", svc_ip, [port(node_port=3001)], type="NodePort"),
        eps_slice("ns1", "svc1", [ep(ep1), ep(ep2, NODE)], address_type=f"IPv{family}"),
    )
    text = render(proxy_state(*objs, config=cfg), cfg)
    flows = [
        Flow("pod to cluster IP", pod, svc_ip, 80, out),
        Flow("external to nodePort", client, node, 3001, out, masq=True),
        Flow("node to nodePort", node, node, 3001, out, masq=True),
    ]
    if family == 4 and localhost:
        flows.append(Flow("localhost to nodePort gets masqueraded", lo, lo, 3001, out, masq=True))
    else:
        flows.append(Flow("localhost to nodePort is ignored", lo, lo, 3001, ""))
    if allow_alt:
        flows.append(Flow("external to nodePort on secondary IP", client, alt, 3001, out, masq=True))
    else:
        flows.append(Flow("secondary nodeIP ignores NodePorts", client, alt, 3001, ""))
    check(text, flows)
    assert ("block incoming localnet connections" in text) == firewall


def test_health_check_node_port_accepted_until_the_service_goes():
    cfg = fake_config(nodeport_addresses=("127.0.0.0/8",))
    svc = service("ns1", "svc1", "172.30.0.42", [port(node_port=3001)], type="LoadBalancer", etp="Local", hcnp=30000)
    check(render(proxy_state(svc, config=cfg), cfg), [
        Flow("firewall accepts HealthCheckNodePort", "1.2.3.4", NODE_IP, 30000, "ACCEPT"),
    ])
    check(render(proxy_state(config=cfg), cfg), [
        Flow("HealthCheckNodePort no longer has any rule", "1.2.3.4", NODE_IP, 30000, ""),
    ])


def _etp_objects(etp: str) -> tuple[dict, dict]:
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer", etp=etp,
                  external_ips=["192.168.99.11"], lb_ips=["1.2.3.4"], hcnp=30000 if etp == "Local" else None)
    return svc, eps_slice("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)])


def test_external_traffic_policy_local_keeps_source_and_sends_outside_traffic_to_local_endpoints():
    text = render(proxy_state(*_etp_objects("Local")), fake_config())
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    check(text, [
        Flow("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, both),
        Flow("pod to external IP hits both endpoints, unmasqueraded", "10.0.0.2", "192.168.99.11", 80, both),
        Flow("external to external IP hits only local endpoint, unmasqueraded", EXTERNAL_CLIENT, "192.168.99.11", 80, local),
        Flow("pod to LB IP hits both endpoints, unmasqueraded", "10.0.0.2", "1.2.3.4", 80, both),
        Flow("external to LB IP hits only local endpoint, unmasqueraded", EXTERNAL_CLIENT, "1.2.3.4", 80, local),
        Flow("pod to NodePort hits both endpoints, unmasqueraded", "10.0.0.2", NODE_IP, 3001, both),
        Flow("external to NodePort hits only local endpoint, unmasqueraded", EXTERNAL_CLIENT, NODE_IP, 3001, local),
    ])


def test_external_traffic_policy_cluster_masquerades_external_destinations():
    text = render(proxy_state(*_etp_objects("Cluster")), fake_config())
    both = "10.180.0.1:80, 10.180.2.1:80"
    check(text, [
        Flow("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, both),
        Flow("pod to external IP hits both endpoints, masqueraded", "10.0.0.2", "192.168.99.11", 80, both, masq=True),
        Flow("external to external IP hits both endpoints, masqueraded", EXTERNAL_CLIENT, "192.168.99.11", 80, both, masq=True),
        Flow("pod to LB IP hits both endpoints, masqueraded", "10.0.0.2", "1.2.3.4", 80, both, masq=True),
        Flow("external to LB IP hits both endpoints, masqueraded", EXTERNAL_CLIENT, "1.2.3.4", 80, both, masq=True),
        Flow("pod to NodePort hits both endpoints, masqueraded", "10.0.0.2", NODE_IP, 3001, both, masq=True),
        Flow("external to NodePort hits both endpoints, masqueraded", EXTERNAL_CLIENT, NODE_IP, 3001, both, masq=True),
    ])


ITP_CASES = [
    ("internalTrafficPolicy is cluster", "Cluster", [("10.0.1.1", NODE), ("10.0.1.2", "node1"), ("10.0.1.3", "node2")],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"),
    ("internalTrafficPolicy is local and there is one local endpoint", "Local",
     [("10.0.1.1", NODE), ("10.0.1.2", "node1"), ("10.0.1.3", "node2")], "10.0.1.1:80"),
    ("internalTrafficPolicy is local and there are multiple local endpoints", "Local",
     [("10.0.1.1", NODE), ("10.0.1.2", NODE), ("10.0.1.3", "node2")], "10.0.1.1:80, 10.0.1.2:80"),
    ("internalTrafficPolicy is local and there are no local endpoints", "Local",
     [("10.0.1.1", "node0"), ("10.0.1.2", "node1"), ("10.0.1.3", "node2")], "DROP"),
]


@pytest.mark.parametrize(("name", "itp", "endpoints", "output"), ITP_CASES, ids=[c[0] for c in ITP_CASES])
def test_internal_traffic_policy(name, itp, endpoints, output):
    svc = service("ns1", "svc1", "172.30.1.1", [port("", 80)], itp=itp)
    sl = eps_slice("ns1", "svc1", [ep(ip, n, ready=True) for ip, n in endpoints], [{"name": "", "port": 80, "protocol": "TCP"}])
    check(render(proxy_state(svc, sl), fake_config()), [Flow("pod to ClusterIP", "10.0.0.2", "172.30.1.1", 80, output)])
    check(render(proxy_state(svc), fake_config()), [Flow("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT")])


READY = dict(ready=True, serving=True, terminating=False)
TERMINATING = dict(ready=False, serving=True, terminating=True)
GONE = dict(ready=False, serving=False, terminating=True)

TERMINATING_CASES = [
    # name, eTP, endpoints, pod -> clusterIP, external -> LB (masq for eTP=Cluster)
    ("Local: ready endpoints exist", "Local",
     [("10.0.1.1", NODE, READY), ("10.0.1.2", NODE, READY), ("10.0.1.3", NODE, TERMINATING), ("10.0.1.4", NODE, GONE),
      ("10.0.1.5", "node-1", READY)],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", "10.0.1.1:80, 10.0.1.2:80"),
    ("Local: only terminating endpoints exist", "Local",
     [("10.0.1.2", NODE, TERMINATING), ("10.0.1.3", NODE, TERMINATING), ("10.0.1.4", NODE, GONE), ("10.0.1.5", "node-1", READY)],
     "10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80"),
    ("Local: terminating endpoints on remote node", "Local", [("10.0.1.5", "node-1", TERMINATING)], "10.0.1.5:80", "DROP"),
    ("Local: no usable endpoints on any node", "Local", [("10.0.1.5", NODE, GONE), ("10.0.1.5", "node-1", GONE)], "REJECT", "REJECT"),
    ("Cluster: ready endpoints exist", "Cluster",
     [("10.0.1.1", NODE, READY), ("10.0.1.2", NODE, READY), ("10.0.1.3", "another-node", TERMINATING),
      ("10.0.1.4", "another-node", GONE), ("10.0.1.5", "another-node", READY)],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80"),
    ("Cluster: only terminating endpoints exist", "Cluster",
     [("10.0.1.2", NODE, TERMINATING), ("10.0.1.3", NODE, TERMINATING), ("10.0.1.4", "another-node", GONE),
      ("10.0.1.5", "another-node", TERMINATING)],
     "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80"),
    ("Cluster: terminating endpoints on remote node", "Cluster", [("10.0.1.5", "node-1", TERMINATING)], "10.0.1.5:80", "10.0.1.5:80"),
    ("Cluster: no usable endpoints on any node", "Cluster", [("10.0.1.5", NODE, GONE), ("10.0.1.5", "node-1", GONE)], "REJECT", "REJECT"),
]


@pytest.mark.parametrize(("name", "etp", "endpoints", "to_cluster_ip", "to_lb"), TERMINATING_CASES, ids=[c[0] for c in TERMINATING_CASES])
def test_terminating_endpoints(name, etp, endpoints, to_cluster_ip, to_lb):
    svc = service("ns1", "svc1", "172.30.1.1", [port("", 80)], type="LoadBalancer", etp=etp, lb_ips=["1.2.3.4"], hcnp=30000)
    sl = eps_slice("ns1", "svc1", [ep(ip, n, **cond) for ip, n, cond in endpoints], [{"name": "", "port": 80, "protocol": "TCP"}])
    masq = etp == "Cluster" and to_lb not in ("DROP", "REJECT")
    check(render(proxy_state(svc, sl), fake_config()), [
        Flow("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, to_cluster_ip),
        Flow("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, to_lb, masq=masq),
    ])
    check(render(proxy_state(svc), fake_config()), [
        Flow("pod to clusterIP after endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT"),
        Flow("external to LB after endpoints deleted", EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT"),
    ])


def _masquerade_matrix_state(cfg):
    objs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer", hcnp=30001, lb_ips=["1.2.3.4"]),
        service("ns2", "svc2", "172.30.0.42", [port(node_port=3002)], type="LoadBalancer", etp="Local", hcnp=30002,
                lb_ips=["5.6.7.8"]),
        service("ns3", "svc3", "172.30.0.43", [port(node_port=3003)], type="LoadBalancer", itp="Local", hcnp=30003,
                lb_ips=["9.10.11.12"]),
    ]
    for i in (1, 2, 3):
        objs.append(eps_slice(f"ns{i}", f"svc{i}", [ep(f"10.180.0.{i}", NODE), ep(f"10.180.1.{i}", "remote")]))
    return render(proxy_state(*objs, config=cfg), cfg)


S1, S2, S3 = "10.180.0.1:80, 10.180.1.1:80", "10.180.0.2:80, 10.180.1.2:80", "10.180.0.3:80, 10.180.1.3:80"
MASQ_MATRIX = [
    Flow("pod to ClusterIP", "10.0.0.2", "172.30.0.41", 80, S1, False),
    Flow("pod to NodePort", "10.0.0.2", NODE_IP, 3001, S1, True),
    Flow("pod to LB", "10.0.0.2", "1.2.3.4", 80, S1, True),
    Flow("node to ClusterIP", NODE_IP, "172.30.0.41", 80, S1, True),
    Flow("node to NodePort", NODE_IP, NODE_IP, 3001, S1, True),
    Flow("localhost to NodePort", "127.0.0.1", "127.0.0.1", 3001, S1, True),
    Flow("node to LB", NODE_IP, "1.2.3.4", 80, S1, True),
    Flow("external to ClusterIP", EXTERNAL_CLIENT, "172.30.0.41", 80, S1, True),
    Flow("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, S1, True),
    Flow("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, S1, True),
    Flow("pod to ClusterIP with eTP:Local", "10.0.0.2", "172.30.0.42", 80, S2, False),
    Flow("pod to NodePort with eTP:Local", "10.0.0.2", NODE_IP, 3002, S2, False),
    Flow("pod to LB with eTP:Local", "10.0.0.2", "5.6.7.8", 80, S2, False),
    Flow("node to ClusterIP with eTP:Local", NODE_IP, "172.30.0.42", 80, S2, True),
    Flow("node to NodePort with eTP:Local", NODE_IP, NODE_IP, 3001, S1, True),  # port 3001 as in kube-proxy's table
    Flow("localhost to NodePort with eTP:Local", "127.0.0.1", "127.0.0.1", 3002, S2, True),
    Flow("node to LB with eTP:Local", NODE_IP, "5.6.7.8", 80, S2, True),
    Flow("external to ClusterIP with eTP:Local", EXTERNAL_CLIENT, "172.30.0.42", 80, S2, True),
    Flow("external to NodePort with eTP:Local", EXTERNAL_CLIENT, NODE_IP, 3002, "10.180.0.2:80", False),
    Flow("external to LB with eTP:Local", EXTERNAL_CLIENT, "5.6.7.8", 80, "10.180.0.2:80", False),
    Flow("pod to ClusterIP with iTP:Local", "10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", False),
    Flow("pod to NodePort with iTP:Local", "10.0.0.2", NODE_IP, 3003, S3, True),
    Flow("pod to LB with iTP:Local", "10.0.0.2", "9.10.11.12", 80, S3, True),
    Flow("node to ClusterIP with iTP:Local", NODE_IP, "172.30.0.43", 80, "10.180.0.3:80", True),
    Flow("node to NodePort with iTP:Local", NODE_IP, NODE_IP, 3003, S3, True),
    Flow("localhost to NodePort with iTP:Local", "127.0.0.1", "127.0.0.1", 3003, S3, True),
    Flow("node to LB with iTP:Local", NODE_IP, "9.10.11.12", 80, S3, True),
    Flow("external to ClusterIP with iTP:Local", EXTERNAL_CLIENT, "172.30.0.43", 80, "10.180.0.3:80", True),
    Flow("external to NodePort with iTP:Local", EXTERNAL_CLIENT, NODE_IP, 3003, S3, True),
    Flow("external to LB with iTP:Local", EXTERNAL_CLIENT, "9.10.11.12", 80, S3, True),
]
NO_DETECTOR = {
    # Without a local-traffic detector every ClusterIP client is taken for a pod...
    "node to ClusterIP": {"masq": False}, "node to ClusterIP with eTP:Local": {"masq": False},
    "node to ClusterIP with iTP:Local": {"masq": False}, "external to ClusterIP": {"masq": False},
    "external to ClusterIP with eTP:Local": {"masq": False}, "external to ClusterIP with iTP:Local": {"masq": False},
    # ...and there is no eTP:Local short-circuit for pods.
    "pod to NodePort with eTP:Local": {"output": "10.180.0.2:80"}, "pod to LB with eTP:Local": {"output": "10.180.0.2:80"},
}
MASQ_ALL = {
    "pod to ClusterIP": {"masq": True}, "pod to ClusterIP with eTP:Local": {"masq": True},
    "pod to ClusterIP with iTP:Local": {"masq": True},
}
MASQ_ALL_NO_DETECTOR = {
    **MASQ_ALL,
    "pod to NodePort with eTP:Local": {"output": "10.180.0.2:80"}, "pod to LB with eTP:Local": {"output": "10.180.0.2:80"},
}


@pytest.mark.parametrize(
    ("masquerade_all", "detector", "overrides"),
    [(False, True, {}), (False, False, NO_DETECTOR), (True, True, MASQ_ALL), (True, False, MASQ_ALL_NO_DETECTOR)],
    ids=["base", "no LocalTrafficDetector", "masqueradeAll", "masqueradeAll, no LocalTrafficDetector"],
)
def test_internal_external_masquerade(masquerade_all, detector, overrides):
    cfg = fake_config(masquerade_all=masquerade_all, **({} if detector else {"cluster_cidrs": ()}))
    flows = []
    for f in MASQ_MATRIX:
        o = overrides.get(f.name, {})
        flows.append(Flow(f.name, f.src, f.dst, f.dport, o.get("output", f.output), o.get("masq", f.masq)))
    check(_masquerade_matrix_state(cfg), flows)
