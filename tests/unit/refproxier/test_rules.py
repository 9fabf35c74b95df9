"""Rule-level behaviours of the iptables rendering, each against kube-proxy's exact rules."""

import pytest

from refproxier import iptables
from refproxier.iptables import (
    compute_probability,
    endpoint_chain_name,
    external_chain_name,
    firewall_chain_name,
    jump_rules,
    local_chain_name,
    render,
    service_chain_name,
)
from tests.unit.refproxier.builders import (
    NODE,
    ep,
    eps_slice,
    fake_config,
    port,
    proxy_state,
    service,
)
from tests.unit.refproxier.iptdump import chain_rules, parse

SVC = "KUBE-SVC-XPGD46QRK7WJZT7O"
SVL = "KUBE-SVL-XPGD46QRK7WJZT7O"
EXT = "KUBE-EXT-XPGD46QRK7WJZT7O"


def rules(text: str, table: str, chain: str) -> list[str]:
    return [r.replace("0x004000", "0x4000") for r in chain_rules(text, table, chain)]


# -- chain names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (service_chain_name("ns1/svc1:p80", "tcp"), "KUBE-SVC-XPGD46QRK7WJZT7O"),
        (local_chain_name("ns1/svc1:p80", "tcp"), "KUBE-SVL-XPGD46QRK7WJZT7O"),
        (external_chain_name("ns1/svc1:p80", "tcp"), "KUBE-EXT-XPGD46QRK7WJZT7O"),
        (firewall_chain_name("ns1/svc1:p80", "tcp"), "KUBE-FW-XPGD46QRK7WJZT7O"),
        (service_chain_name("ns2/svc2:p80", "tcp"), "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
        (service_chain_name("ns2/svc2:p8080", "tcp"), "KUBE-SVC-2VJB64SDSIJUP5T6"),
        (endpoint_chain_name("ns1/svc1:p80", "tcp", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ"),
        (endpoint_chain_name("ns5/svc5:p80", "tcp", "10.180.0.3:80"), "KUBE-SEP-I77PXRDZVX7PMWMN"),
        (endpoint_chain_name("ns1/svc1:p80", "tcp", "[ff06::c1]:80"), "KUBE-SEP-LIGRYQQLSZN4UWQ5"),
    ],
)
def test_chain_names_are_base32_sha256_prefixes_as_kube_proxy(name, expected):
    assert name == expected
    assert len(name) <= 28


# -- probabilities ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, "1.0000000000"), (2, "0.5000000000"), (3, "0.3333333333"), (4, "0.2500000000"), (100001, "0.0000099999")],
)
def test_probability_is_one_over_n_with_ten_decimals(n, expected):
    assert compute_probability(n) == expected


def test_loadbalancing_cascade_takes_one_over_remaining_and_ends_unconditionally():
    eps = [ep(f"10.180.0.{i}") for i in (1, 2, 3, 4)]
    out = render(proxy_state(service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", eps)), fake_config())
    probs = [r.split("--probability ")[1].split()[0] if "--probability" in r else None for r in rules(out, "nat", SVC)[1:]]
    assert probs == ["0.2500000000", "0.3333333333", "0.5000000000", None]


def test_endpoints_are_ordered_by_the_ip_port_string_not_numerically():
    eps = [ep("10.1.1.1"), ep("10.1.1.11"), ep("10.1.1.2")]
    out = render(proxy_state(service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", eps)), fake_config())
    targets = [r.split('-> ')[1].split('"')[0] for r in rules(out, "nat", SVC)[1:]]
    assert targets == ["10.1.1.11:80", "10.1.1.1:80", "10.1.1.2:80"]


# -- masquerading ----------------------------------------------------------------------


def test_masquerade_chain_uses_random_fully_when_supported():
    st = proxy_state()
    on = rules(render(st, fake_config(random_fully=True)), "nat", "KUBE-POSTROUTING")
    off = rules(render(st, fake_config(random_fully=False)), "nat", "KUBE-POSTROUTING")
    assert on == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]
    assert off[2].endswith("-j MASQUERADE")


def test_masquerade_bit_sets_the_mark_in_go_hex_format():
    out = render(proxy_state(), fake_config(masquerade_bit=10))
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x000400" in out
    assert "--mark 0x000400/0x000400 -j ACCEPT" in out


def test_masquerade_all_marks_every_cluster_ip_connection():
    objs = (service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1")]))
    out = render(proxy_state(*objs), fake_config(masquerade_all=True))
    assert rules(out, "nat", SVC)[0] == (
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp '
        "-d 172.30.0.41 --dport 80 -j KUBE-MARK-MASQ"
    )


def test_without_cluster_cidr_cluster_ip_traffic_is_never_masqueraded():
    objs = (service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1")]))
    out = render(proxy_state(*objs), fake_config(cluster_cidrs=()))
    assert rules(out, "nat", SVC) == [
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ'
    ]


def test_endpoint_chain_masquerades_hairpin_traffic_then_dnats():
    objs = (service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1")]))
    assert rules(render(proxy_state(*objs), fake_config()), "nat", "KUBE-SEP-SXIVWICOYRO3J4NJ") == [
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80",
    ]


# -- KUBE-FORWARD and KUBE-FIREWALL ----------------------------------------------------


def test_forward_chain_drops_invalid_unless_conntrack_is_liberal():
    strict = rules(render(proxy_state(), fake_config(nfacct=False)), "filter", "KUBE-FORWARD")
    liberal = rules(render(proxy_state(), fake_config(conntrack_tcp_be_liberal=True)), "filter", "KUBE-FORWARD")
    assert strict[0] == "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    assert liberal == strict[1:]


def test_localhost_nodeports_off_blocks_loopback_in_the_nodeports_jump_and_drops_kube_firewall():
    out = render(proxy_state(), fake_config(localhost_nodeports=False))
    assert "KUBE-FIREWALL" not in parse(out)["filter"].chains
    assert rules(out, "nat", "KUBE-SERVICES") == [
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
        "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
    ]


def test_nodeport_addresses_without_loopback_turn_localhost_nodeports_off():
    cfg = fake_config(nodeport_addresses=("192.168.0.0/24",))
    assert cfg.localhost_nodeports is False
    assert fake_config(nodeport_addresses=("127.0.0.0/8", "192.168.0.0/24")).localhost_nodeports is True


def test_nodeport_addresses_give_one_nodeports_jump_per_matching_local_address():
    out = render(proxy_state(), fake_config(nodeport_addresses=("192.168.0.0/16", "127.0.0.1/32")))
    c = '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
    assert rules(out, "nat", "KUBE-SERVICES") == [
        f"-A KUBE-SERVICES {c} -d 192.168.0.2 -j KUBE-NODEPORTS",
        f"-A KUBE-SERVICES {c} -d 192.168.1.2 -j KUBE-NODEPORTS",
        f"-A KUBE-SERVICES {c} -d 192.168.99.11 -j KUBE-NODEPORTS",
        f"-A KUBE-SERVICES {c} -d 127.0.0.1 -j KUBE-NODEPORTS",
    ]


# -- IPv6 ------------------------------------------------------------------------------


def test_ipv6_uses_bracketed_endpoints_and_never_accepts_localhost_nodeports():
    cfg = fake_config(ip_family=6)
    objs = (
        service("ns1", "svc1", "fd00:172:30::41", [port(node_port=3001)], type="NodePort"),
        eps_slice("ns1", "svc1", [ep("ff06::c1")], address_type="IPv6"),
    )
    out = render(proxy_state(*objs, config=cfg), cfg)
    assert "KUBE-FIREWALL" not in parse(out)["filter"].chains
    assert rules(out, "nat", "KUBE-SEP-LIGRYQQLSZN4UWQ5")[1].endswith("-j DNAT --to-destination [ff06::c1]:80")
    assert rules(out, "nat", "KUBE-SERVICES")[-1].endswith("-m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS")
    assert rules(out, "nat", SVC)[0].endswith("! -s fd00:10::/64 -j KUBE-MARK-MASQ")
    # No 127.0.0.0/8 nfacct NodePort rule on IPv6.
    assert rules(out, "nat", "KUBE-NODEPORTS") == [f"-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 3001 -j {EXT}"]


def test_ipv4_proxier_ignores_ipv6_endpoints_and_addresses():
    objs = (
        service("ns1", "svc1", "172.30.0.41", external_ips=["2001:db8::5", "192.168.99.5"]),
        eps_slice("ns1", "svc1", [ep("ff06::c1")], address_type="IPv6", suffix="v6"),
        eps_slice("ns1", "svc1", [ep("10.180.0.1")]),
    )
    st = proxy_state(*objs)
    (sp,) = st.service_ports
    assert sp.external_ips == ("192.168.99.5",)
    assert [e.ip for e in sp.endpoints] == ["10.180.0.1"]


# -- session affinity ------------------------------------------------------------------


def test_client_ip_affinity_checks_recent_lists_before_the_cascade():
    objs = (
        service("ns1", "svc1", "172.30.0.41", affinity=60),
        eps_slice("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.0.2")]),
    )
    out = render(proxy_state(*objs), fake_config())
    r = rules(out, "nat", SVC)
    sep1, sep2 = endpoint_chain_name("ns1/svc1:p80", "tcp", "10.180.0.1:80"), endpoint_chain_name("ns1/svc1:p80", "tcp", "10.180.0.2:80")
    assert r[1] == f'-A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --name {sep1} --rcheck --seconds 60 --reap -j {sep1}'
    assert r[2] == f'-A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m recent --name {sep2} --rcheck --seconds 60 --reap -j {sep2}'
    assert "--probability 0.5000000000" in r[3]
    assert rules(out, "nat", sep2)[1] == (
        f"-A {sep2} -m comment --comment ns1/svc1:p80 -m recent --name {sep2} --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80"
    )


def test_client_ip_affinity_without_timeout_uses_the_api_default():
    svc = service("ns1", "svc1", "172.30.0.41")
    svc["spec"]["sessionAffinity"] = "ClientIP"
    (sp,) = proxy_state(svc).service_ports
    assert sp.affinity_timeout == 10800


# -- traffic policies and endpoint conditions ------------------------------------------


def test_internal_traffic_policy_local_uses_only_local_endpoints():
    objs = (
        service("ns1", "svc1", "172.30.0.41", itp="Local"),
        eps_slice("ns1", "svc1", [ep("10.180.0.1", NODE), ep("10.180.0.2", "other")]),
    )
    out = render(proxy_state(*objs), fake_config())
    assert rules(out, "nat", "KUBE-SERVICES")[0].endswith(f"-j {SVL}")
    assert SVC not in parse(out)["nat"].chains
    assert [r.split(" -j ")[-1] for r in rules(out, "nat", SVL)] == ["KUBE-MARK-MASQ", "KUBE-SEP-SXIVWICOYRO3J4NJ"]


def test_internal_traffic_policy_local_without_local_endpoints_drops_in_filter():
    objs = (
        service("ns1", "svc1", "172.30.0.41", itp="Local"),
        eps_slice("ns1", "svc1", [ep("10.180.0.2", "other")]),
    )
    out = render(proxy_state(*objs), fake_config())
    assert rules(out, "filter", "KUBE-SERVICES") == [
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j DROP'
    ]
    assert [r for r in rules(out, "nat", "KUBE-SERVICES") if "svc1" in r] == []


def test_no_endpoints_rejects_every_address_of_the_service():
    objs = (
        service(
            "ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer",
            external_ips=["192.168.99.11"], lb_ips=["1.2.3.4"],
        ),
    )
    out = render(proxy_state(*objs), fake_config())
    c = '-m comment --comment "ns1/svc1:p80 has no endpoints"'
    assert rules(out, "filter", "KUBE-SERVICES") == [f"-A KUBE-SERVICES {c} -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT"]
    assert rules(out, "filter", "KUBE-EXTERNAL-SERVICES") == [
        f"-A KUBE-EXTERNAL-SERVICES {c} -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT",
        f"-A KUBE-EXTERNAL-SERVICES {c} -m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT",
        f"-A KUBE-EXTERNAL-SERVICES {c} -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT",
    ]
    assert rules(out, "nat", "KUBE-NODEPORTS") == []


def test_external_policy_local_with_local_endpoints_sends_outside_traffic_to_the_local_chain():
    objs = (
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="NodePort", etp="Local"),
        eps_slice("ns1", "svc1", [ep("10.180.0.1", NODE), ep("10.180.0.2", "other")]),
    )
    out = render(proxy_state(*objs), fake_config())
    assert rules(out, "nat", EXT)[-1] == f"-A {EXT} -j {SVL}"
    assert len([r for r in rules(out, "nat", SVC) if "KUBE-SEP" in r]) == 2
    assert [r.split(" -j ")[-1] for r in rules(out, "nat", SVL)] == ["KUBE-SEP-SXIVWICOYRO3J4NJ"]


def test_terminating_endpoints_are_used_only_when_no_endpoint_is_ready():
    svc = service("ns1", "svc1", "172.30.0.41")
    some_ready = proxy_state(svc, eps_slice("ns1", "svc1", [
        ep("10.0.1.1"), ep("10.0.1.2", ready=False, serving=True, terminating=True),
    ]))
    none_ready = proxy_state(svc, eps_slice("ns1", "svc1", [
        ep("10.0.1.2", ready=False, serving=True, terminating=True),
        ep("10.0.1.3", ready=False, serving=False, terminating=True),
    ]))
    assert [e.ip for e in some_ready.service_ports[0].cluster_endpoints] == ["10.0.1.1"]
    assert [e.ip for e in none_ready.service_ports[0].cluster_endpoints] == ["10.0.1.2"]
    assert none_ready.service_ports[0].has_endpoints


def test_only_not_serving_endpoints_mean_no_endpoints():
    svc = service("ns1", "svc1", "172.30.0.41")
    st = proxy_state(svc, eps_slice("ns1", "svc1", [ep("10.0.1.3", ready=False, serving=False, terminating=True)]))
    assert not st.service_ports[0].has_endpoints
    assert "-j REJECT" in render(st, fake_config())


def test_local_terminating_fallback_is_independent_of_cluster_endpoints():
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="NodePort", etp="Local")
    st = proxy_state(svc, eps_slice("ns1", "svc1", [
        ep("10.0.1.1", "other"), ep("10.0.1.2", NODE, ready=False, serving=True, terminating=True),
    ]))
    sp = st.service_ports[0]
    assert [e.ip for e in sp.cluster_endpoints] == ["10.0.1.1"]
    assert [e.ip for e in sp.local_endpoints] == ["10.0.1.2"]
    assert sorted(e.ip for e in sp.all_reachable_endpoints) == ["10.0.1.1", "10.0.1.2"]


def test_zone_hints_restrict_cluster_endpoints_to_the_nodes_zone():
    from tests.unit.refproxier.builders import node

    svc = service("ns1", "svc1", "172.30.0.41")
    sl = eps_slice("ns1", "svc1", [ep("10.0.1.1", zones=["a"]), ep("10.0.1.2", zones=["b"])])
    st = proxy_state(svc, sl, node(NODE, zone="a"))
    assert [e.ip for e in st.service_ports[0].cluster_endpoints] == ["10.0.1.1"]
    # A zone no endpoint is hinted for: hints ignored.
    st = proxy_state(svc, sl, node(NODE, zone="c"))
    assert len(st.service_ports[0].cluster_endpoints) == 2


# -- load balancers --------------------------------------------------------------------


def test_source_ranges_containing_the_node_ip_also_accept_the_lb_ip_as_source():
    objs = (
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer",
                lb_ips=["1.2.3.4"], source_ranges=["192.168.0.0/24", "203.0.113.0/25"]),
        eps_slice("ns1", "svc1", [ep("10.180.0.1")]),
    )
    out = render(proxy_state(*objs), fake_config())
    fw = "KUBE-FW-XPGD46QRK7WJZT7O"
    c = '-m comment --comment "ns1/svc1:p80 loadbalancer IP"'
    assert rules(out, "nat", fw) == [
        f"-A {fw} {c} -s 192.168.0.0/24 -j {EXT}",
        f"-A {fw} {c} -s 203.0.113.0/25 -j {EXT}",
        f"-A {fw} {c} -s 1.2.3.4 -j {EXT}",
        f'-A {fw} -m comment --comment "other traffic to ns1/svc1:p80 will be dropped by KUBE-PROXY-FIREWALL"',
    ]


def test_lb_ingress_without_ip_or_in_proxy_mode_is_not_a_vip():
    svc = service("ns1", "svc1", "172.30.0.41", type="LoadBalancer",
                  lb_ingress=[{"hostname": "lb.example"}, {"ip": "5.6.7.8", "ipMode": "Proxy"}, {"ip": "1.2.3.4", "ipMode": "VIP"}])
    assert proxy_state(svc).service_ports[0].load_balancer_ips == ("1.2.3.4",)


def test_health_check_node_port_is_accepted_even_without_endpoints():
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="LoadBalancer", etp="Local", hcnp=30000, lb_ips=["1.2.3.4"])
    out = render(proxy_state(svc), fake_config())
    assert rules(out, "filter", "KUBE-NODEPORTS") == [
        '-A KUBE-NODEPORTS -m comment --comment "ns1/svc1:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT'
    ]


# -- large clusters --------------------------------------------------------------------


def test_large_clusters_drop_per_endpoint_comments():
    eps = [ep(f"10.1.{i // 250}.{i % 250 + 1}") for i in range(1001)]
    objs = (service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", eps))
    out = render(proxy_state(*objs), fake_config())
    r = rules(out, "nat", SVC)
    assert r[1].startswith(f"-A {SVC} -m statistic --mode random --probability 0.0009990010 -j KUBE-SEP-")
    sep = r[1].split(" -j ")[-1]
    # String order: 10.1.0.100:80 sorts before 10.1.0.1:80.
    assert rules(out, "nat", sep)[0] == f"-A {sep} -s 10.1.0.100 -j KUBE-MARK-MASQ"


# -- jump rules and fault injection ----------------------------------------------------


def test_jump_rules_are_kube_proxys_in_its_order():
    got = [(j.table, j.chain, " ".join(j.args)) for j in jump_rules(fake_config())]
    new = "-m conntrack --ctstate NEW"
    assert got == [
        ("filter", "INPUT", f"{new} -m comment --comment kubernetes externally-visible service portals -j KUBE-EXTERNAL-SERVICES"),
        ("filter", "FORWARD", f"{new} -m comment --comment kubernetes externally-visible service portals -j KUBE-EXTERNAL-SERVICES"),
        ("filter", "INPUT", "-m comment --comment kubernetes health check service ports -j KUBE-NODEPORTS"),
        ("filter", "FORWARD", f"{new} -m comment --comment kubernetes service portals -j KUBE-SERVICES"),
        ("filter", "OUTPUT", f"{new} -m comment --comment kubernetes service portals -j KUBE-SERVICES"),
        ("filter", "FORWARD", "-m comment --comment kubernetes forwarding rules -j KUBE-FORWARD"),
        ("filter", "INPUT", f"{new} -m comment --comment kubernetes load balancer firewall -j KUBE-PROXY-FIREWALL"),
        ("filter", "OUTPUT", f"{new} -m comment --comment kubernetes load balancer firewall -j KUBE-PROXY-FIREWALL"),
        ("filter", "FORWARD", f"{new} -m comment --comment kubernetes load balancer firewall -j KUBE-PROXY-FIREWALL"),
        ("nat", "OUTPUT", "-m comment --comment kubernetes service portals -j KUBE-SERVICES"),
        ("nat", "PREROUTING", "-m comment --comment kubernetes service portals -j KUBE-SERVICES"),
        ("nat", "POSTROUTING", "-m comment --comment kubernetes postrouting rules -j KUBE-POSTROUTING"),
        ("filter", "INPUT", "-j KUBE-FIREWALL"),
        ("filter", "OUTPUT", "-j KUBE-FIREWALL"),
    ]


def test_monkeypatched_decision_functions_take_effect_in_render(monkeypatch):
    objs = (service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.0.2")]))
    monkeypatch.setattr(iptables, "compute_probability", lambda n: "0.9000000000")
    monkeypatch.setattr(iptables, "hairpin_masquerade_rule", lambda ctx, sp, e: f"-A {iptables.sep_chain(sp, e)} -j RETURN")
    out = render(proxy_state(*objs), fake_config())
    assert "--probability 0.9000000000" in out
    assert "-s 10.180.0.1 -j KUBE-MARK-MASQ" not in out


INJECTION_POINTS = {
    # name: what the replacement returns
    "compute_probability": "str",
    "loadbalancing_rules": "list",
    "affinity_rules": "list",
    "affinity_set_args": "list",
    "hairpin_masquerade_rule": "str",
    "dnat_rule": "str",
    "cluster_ip_masquerade_rule": "str",
    "external_masquerade_rules": "list",
    "external_destination_rules": "list",
    "firewall_chain_rules": "list",
    "nodeport_rules": "list",
    "nodeports_jump_rules": "list",
    "no_endpoints_rules": "list",
    "no_local_endpoints_rules": "list",
    "proxy_firewall_rules": "list",
    "health_check_rule": "str",
    "masquerade_rules": "list",
    "forward_rules": "list",
    "localnet_firewall_rules": "list",
}


@pytest.mark.parametrize("name", sorted(INJECTION_POINTS))
def test_every_documented_injection_point_is_called_through_the_module(monkeypatch, name):
    from tests.unit.refproxier.test_overall_rules import overall_objects

    marker = f"FAULT-{name}"
    if INJECTION_POINTS[name] == "str":
        monkeypatch.setattr(iptables, name, lambda *a, **k: marker)
    else:
        monkeypatch.setattr(iptables, name, lambda *a, **k: [marker])
    assert name in iptables.__doc__
    assert marker in render(proxy_state(*overall_objects()), fake_config())
