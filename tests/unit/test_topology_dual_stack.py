"""Dual-stack topology specs: validation and the IPv6 twin addressing plan (no root)."""

import ipaddress

import pytest

from harness.topology.spec import ClientSpec, NodeSpec, TopologyError, TopologySpec, validate


def spec(**kw):
    return TopologySpec(nodes=[NodeSpec("node1"), NodeSpec("node2")],
                        clients=[ClientSpec("client1")], **kw)


def test_single_stack_stays_the_default():
    r = validate(spec())
    assert not r.dual_stack and r.versions == (4,) and r.nodes["node1"].lan_ip6 is None


def test_dual_stack_hosts_get_ipv6_twins():
    r = validate(spec(families=("IPv4", "IPv6")))
    n1 = r.nodes["node1"]
    assert r.versions == (4, 6)
    assert str(n1.lan_ip6) == "2001:db8:c0:2::b" and str(n1.pod_cidr6) == "fd00:10:244:1::/64"
    assert str(n1.gateway6) == "fd00:10:244:1::1" and str(r.clients6["client1"]) == "2001:db8:c0:2::65"
    pod = ipaddress.ip_address("10.244.1.7")
    assert str(r.v6_twin(pod, n1.pod_cidr, n1.pod_cidr6)) == "fd00:10:244:1::7"


@pytest.mark.parametrize("kw,field", [
    ({"families": ("IPv6", "IPv4")}, "families"),
    ({"families": ("IPv6",)}, "families"),
    ({"families": ("IPv4", "IPv6"), "cluster_cidr_v6": "10.99.0.0/16"}, "cluster_cidr_v6"),
    ({"families": ("IPv4", "IPv6"), "service_cidr_v6": "2001:db8:c0:2::/112"}, "service_cidr_v6"),
])
def test_bad_dual_stack_specs_name_the_field(kw, field):
    with pytest.raises(TopologyError) as e:
        validate(spec(**kw))
    assert e.value.field == field
