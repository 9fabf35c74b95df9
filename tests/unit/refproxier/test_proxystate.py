"""kube-proxy's view of Services and EndpointSlices: what is proxied, what is a Problem."""

from refproxier.proxystate import EndpointInfo, build_proxy_state
from tests.unit.refproxier.builders import (
    NODE,
    cluster,
    ep,
    eps_slice,
    fake_config,
    port,
    proxy_state,
    service,
)


def problems(st) -> list[str]:
    return [str(p) for p in st.problems]


def test_headless_external_name_and_foreign_proxy_services_are_not_proxied():
    headless = service("ns1", "headless", "None")
    extname = service("ns1", "ext", "")
    extname["spec"].update(type="ExternalName", externalName="example.com")
    other_proxy = service("ns1", "other", "172.30.0.3", labels={"service.kubernetes.io/service-proxy-name": "foo"})
    st = proxy_state(headless, extname, other_proxy, eps_slice("ns1", "headless", [ep("10.0.0.1")]))
    assert st.service_ports == ()
    assert st.problems == ()


def test_the_headless_label_on_a_service_with_a_cluster_ip_means_nothing():
    # kube-proxy since v1.36 (kubernetes#134623) selects Services by service-proxy-name and
    # spec.clusterIP!=None only; real kube-proxy v1.37.2 proxies such a Service
    labelled = service("ns1", "lab", "172.30.0.4", labels={"service.kubernetes.io/headless": ""})
    st = proxy_state(labelled, eps_slice("ns1", "lab", [ep("10.0.0.1")],
                                         labels={"service.kubernetes.io/service-proxy-name": "x"}))
    (sp,) = st.service_ports
    assert [e.ip for e in sp.endpoints] == ["10.0.0.1"]


def test_slices_labelled_headless_are_ignored():
    st = proxy_state(
        service("ns1", "svc1", "172.30.0.41"),
        eps_slice("ns1", "svc1", [ep("10.0.0.1")], labels={"service.kubernetes.io/headless": ""}),
    )
    assert st.service_ports[0].endpoints == ()


def test_unnamed_port_gives_the_port_name_without_colon():
    st = proxy_state(
        service("ns1", "svc1", "172.30.0.41", [port(name="", port=80)]),
        eps_slice("ns1", "svc1", [ep("10.0.0.1")], [{"name": "", "port": 8080}]),
    )
    (sp,) = st.service_ports
    assert sp.port_name_string == "ns1/svc1"
    assert [e.address for e in sp.endpoints] == ["10.0.0.1:8080"]


def test_slice_port_must_match_the_service_port_name_and_protocol():
    st = proxy_state(
        service("ns1", "svc1", "172.30.0.41", [port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP")]),
        eps_slice("ns1", "svc1", [ep("10.0.0.1")], [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
            {"name": "metrics", "port": 9153, "protocol": "TCP"},
        ]),
    )
    by_name = {sp.port_name: sp for sp in st.service_ports}
    assert [e.port for e in by_name["dns"].endpoints] == [53]
    assert [e.port for e in by_name["dns-tcp"].endpoints] == [5353]
    assert problems(st) == [
        "EndpointSlice ns1/svc1-1: ports[2].name: 'metrics' matches no port name of Service ns1/svc1; port ignored"
    ]


def test_endpoints_are_deduplicated_across_slices_preferring_the_non_terminating_one():
    st = proxy_state(
        service("ns1", "svc1", "172.30.0.41"),
        eps_slice("ns1", "svc1", [ep("10.0.0.1", ready=False, serving=True, terminating=True)], suffix="a"),
        eps_slice("ns1", "svc1", [ep("10.0.0.1", NODE)], suffix="b"),
        eps_slice("ns1", "svc1", [ep("10.0.0.1", terminating=True, ready=False)], suffix="c"),
    )
    assert st.service_ports[0].endpoints == (EndpointInfo("10.0.0.1", 80, is_local=True, node_name=NODE),)


def test_bad_addresses_become_problems_naming_object_and_field_and_the_rest_is_built():
    st = proxy_state(
        service("ns1", "bad", "10.0.0.300"),
        service("ns1", "svc1", "172.30.0.41", type="LoadBalancer", external_ips=["nope", "192.168.99.1"],
                lb_ips=["1.2.3"], source_ranges=["10.0.0.0/33"]),
        eps_slice("ns1", "svc1", [ep("10.0.0.x"), ep("10.0.0.2"), ep("fe80::1")]),
        eps_slice("ns1", "missing", [ep("10.0.0.3")]),
    )
    assert problems(st) == [
        "Service ns1/bad: spec.clusterIP: '10.0.0.300' is not an IP address; service ignored",
        "Service ns1/svc1: spec.externalIPs[0]: 'nope' is not an IP address; ignored",
        "Service ns1/svc1: status.loadBalancer.ingress[0].ip: '1.2.3' is not an IP address; ignored",
        "Service ns1/svc1: spec.loadBalancerSourceRanges[0]: '10.0.0.0/33' is not a CIDR; ignored",
        "EndpointSlice ns1/missing-1: metadata.labels[kubernetes.io/service-name]: Service ns1/missing does not exist; slice ignored",
        "EndpointSlice ns1/svc1-1: endpoints[0].addresses[0]: '10.0.0.x' is not an IP address; endpoint ignored",
        "EndpointSlice ns1/svc1-1: endpoints[2].addresses[0]: fe80::1 is not an IPv4 address; ignored",
    ]
    (sp,) = st.service_ports
    assert sp.external_ips == ("192.168.99.1",)
    assert [e.ip for e in sp.endpoints] == ["10.0.0.2"]


def test_duplicate_port_names_and_bad_protocols_are_problems():
    st = proxy_state(service("ns1", "svc1", "172.30.0.41", [port("a", 80), port("a", 81), port("b", 82, "ICMP")]))
    assert [sp.port for sp in st.service_ports] == [80]
    assert problems(st) == [
        "Service ns1/svc1: spec.ports[1].name: duplicate port name 'a'; port ignored",
        "Service ns1/svc1: spec.ports[2].protocol: unsupported protocol 'ICMP'; port ignored",
    ]


def test_dual_stack_service_uses_the_cluster_ip_of_the_proxier_family():
    svc = service("ns1", "svc1", "172.30.0.41", cluster_ips=["172.30.0.41", "fd00::41"])
    assert proxy_state(svc).service_ports[0].cluster_ip == "172.30.0.41"
    cfg6 = fake_config(ip_family=6)
    assert build_proxy_state(cluster(svc), cfg6).service_ports[0].cluster_ip == "fd00::41"
    single = service("ns1", "v4only", "172.30.0.42")
    assert build_proxy_state(cluster(single), cfg6).service_ports == ()


def test_external_traffic_policy_local_applies_only_to_externally_accessible_services():
    # kube-proxy's ExternalPolicyLocal: NodePort, LoadBalancer, and ClusterIP with externalIPs
    st = proxy_state(
        service("ns1", "cip", "172.30.0.41", etp="Local"),
        service("ns1", "np", "172.30.0.42", [port(node_port=30001)], type="NodePort", etp="Local"),
        service("ns1", "eip", "172.30.0.43", etp="Local", external_ips=["198.51.100.43"]),
    )
    assert {sp.name: sp.external_policy_local for sp in st.service_ports} == {
        "cip": False, "np": True, "eip": True}


def test_health_checks_count_distinct_local_ready_endpoint_ips_over_all_ports():
    svc = service("ns1", "svc1", "172.30.0.41", [port("a", 80, node_port=30001), port("b", 81, node_port=30002)],
                  type="LoadBalancer", etp="Local", hcnp=32000, lb_ips=["1.2.3.4"])
    sl = eps_slice("ns1", "svc1", [ep("10.0.0.1", NODE), ep("10.0.0.2", "other"), ep("10.0.0.3", NODE, ready=False)],
                   [{"name": "a", "port": 80}, {"name": "b", "port": 81}])
    (hc,) = proxy_state(svc, sl).health_checks()
    assert (hc.namespace, hc.name, hc.node_port, hc.local_endpoints) == ("ns1", "svc1", 32000, 1)
    (hc,) = proxy_state(svc).health_checks()
    assert hc.local_endpoints == 0


def test_udp_conntrack_data_lists_destinations_and_serving_endpoints():
    svc = service("ns1", "dns", "172.30.0.10", [port("dns", 53, "UDP", node_port=30053)], type="LoadBalancer",
                  external_ips=["192.168.99.5"], lb_ips=["1.2.3.4"])
    sl = eps_slice("ns1", "dns", [ep("10.0.0.2"), ep("10.0.0.1", ready=False, serving=True, terminating=True),
                                  ep("10.0.0.3", ready=False, serving=False)],
                   [{"name": "dns", "port": 53, "protocol": "UDP"}])
    st = proxy_state(svc, sl, service("ns1", "noeps", "172.30.0.11", [port("dns", 53, "UDP")]))
    # The port without endpoints is listed too: its stale entries are cleared (kubernetes#139629).
    sp, noeps = st.udp_service_ports()
    assert noeps.name == "noeps" and noeps.serving_endpoint_ips == ()
    assert sp.destination_ips == ("172.30.0.10", "192.168.99.5", "1.2.3.4")
    assert sp.node_port == 30053
    assert sp.serving_endpoint_ips == ("10.0.0.1", "10.0.0.2")
    assert sp.serving_endpoints == ("10.0.0.1:53", "10.0.0.2:53")


def test_generation_is_carried_from_the_cluster_state():
    st = build_proxy_state(cluster(service("ns1", "svc1", "172.30.0.41"), generation=7), fake_config())
    assert st.generation == 7


def test_a_slice_port_without_a_name_is_ignored_as_kube_proxy_does():
    # kube-proxy v1.37.2 logs "Ignoring port with nil name" and refuses the Service (seen in
    # this suite's bug scenarios); name "" is what the EndpointSlice controller writes
    st = proxy_state(
        service("ns1", "svc1", "172.30.0.41", [port(name="", port=80)]),
        eps_slice("ns1", "svc1", [ep("10.0.0.1")], [{"port": 8080}]),
    )
    (sp,) = st.service_ports
    assert sp.endpoints == ()
    assert any("kube-proxy ignores a port without a name" in p for p in problems(st))
