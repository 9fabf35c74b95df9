"""kube-proxy's topologyModeFromHints / CategorizeEndpoints (pkg/proxy/topology.go, v1.35+
with PreferSameTrafficDistribution GA), as the reference proxier implements them."""

from refproxier.proxystate import EndpointInfo, ServicePortInfo, categorize_endpoints, topology_mode


def ep(ip, zones=(), nodes=(), ready=True, node="n1"):
    return EndpointInfo(ip=ip, port=80, ready=ready, serving=ready, is_local=node == "me",
                        node_name=node, zone_hints=frozenset(zones), node_hints=frozenset(nodes))


SP = ServicePortInfo("ns", "svc", "", "TCP", "10.96.0.1", 80)


def ips(eps):
    return sorted(e.ip for e in eps)


def test_node_hints_win_when_every_ready_endpoint_has_one_and_one_is_for_this_node():
    eps = (ep("10.0.0.1", ["a"], ["me"]), ep("10.0.0.2", ["a"], ["n2"]), ep("10.0.0.3", ["b"], ["n3"]))
    assert topology_mode(eps, "me", "a") == "PreferSameNode"
    assert ips(categorize_endpoints(SP, eps, "a", "me")[0]) == ["10.0.0.1"]


def test_no_endpoint_for_this_node_falls_back_to_the_zone():
    eps = (ep("10.0.0.2", ["a"], ["n2"]), ep("10.0.0.3", ["b"], ["n3"]))
    assert topology_mode(eps, "me", "a") == "PreferSameZone"
    assert ips(categorize_endpoints(SP, eps, "a", "me")[0]) == ["10.0.0.2"]


def test_a_ready_endpoint_without_node_hints_disables_them():
    eps = (ep("10.0.0.1", ["a"], ["me"]), ep("10.0.0.2", ["a"]))
    assert topology_mode(eps, "me", "a") == "PreferSameZone"


def test_a_ready_endpoint_without_zone_hints_disables_them():
    eps = (ep("10.0.0.1", ["a"]), ep("10.0.0.2"))
    assert topology_mode(eps, "me", "a") == ""
    assert ips(categorize_endpoints(SP, eps, "a", "me")[0]) == ["10.0.0.1", "10.0.0.2"]


def test_unready_endpoints_do_not_count_and_a_zone_without_hints_gets_everything():
    eps = (ep("10.0.0.1", ["a"]), ep("10.0.0.2", ["b"]), ep("10.0.0.3", ready=False))
    assert topology_mode(eps, "me", "a") == "PreferSameZone"
    assert topology_mode(eps, "me", "c") == ""
    assert topology_mode(eps, "me", "") == ""


def test_local_policy_ignores_hints():
    sp = ServicePortInfo("ns", "svc", "", "TCP", "10.96.0.1", 80, internal_policy_local=True)
    eps = (ep("10.0.0.1", ["b"], node="me"), ep("10.0.0.2", ["a"], node="n2"))
    _, local, reachable, _ = categorize_endpoints(sp, eps, "a", "me")
    assert ips(local) == ips(reachable) == ["10.0.0.1"]
