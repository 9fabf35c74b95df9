"""Topology validation: every bad spec is a TopologyError naming object and field, raised
before anything exists. No root needed."""

from __future__ import annotations

import os
import secrets

import pytest

from harness.topology.netns import Topology
from harness.topology.registry import RUNS_DIR
from harness.topology.spec import (
    ClientSpec,
    NodeSpec,
    PodSpec,
    TopologyError,
    TopologySpec,
    topology_from_objects,
    validate,
)

TWO = [NodeSpec("node-a"), NodeSpec("node-b")]


def _created_by(prefix: str) -> list[str]:
    """Namespaces and registry entries carrying ``prefix``; other xdist workers' runs create
    and remove their own namespaces meanwhile, so only this topology's prefix is looked at."""
    found = []
    for d in ("/run/netns", str(RUNS_DIR)):
        try:
            found += [f"{d}/{n}" for n in os.listdir(d) if n.split("-")[0] == prefix]
        except FileNotFoundError:
            pass
    return found


CASES = [
    # id, spec, object named in the error, field
    ("bad-cluster-cidr", TopologySpec(nodes=TWO, cluster_cidr="10.244.0.0/33"),
     "TopologySpec", "cluster_cidr"),
    ("host-bits-set", TopologySpec(nodes=TWO, service_cidr="10.96.0.1/16"),
     "TopologySpec", "service_cidr"),
    ("not-a-cidr", TopologySpec(nodes=TWO, lan_cidr="lan"), "TopologySpec", "lan_cidr"),
    ("service-overlaps-cluster", TopologySpec(nodes=TWO, service_cidr="10.244.128.0/20"),
     "TopologySpec", "service_cidr"),
    ("mixed-families", TopologySpec(nodes=TWO, service_cidr="fd00:96::/108"),
     "TopologySpec", "cluster_cidr"),
    ("overlapping-pod-cidrs",
     TopologySpec(nodes=[NodeSpec("a", pod_cidr="10.244.1.0/24"),
                         NodeSpec("b", pod_cidr="10.244.1.128/25")]),
     "node 'b'", "pod_cidr"),
    ("pod-cidr-outside-cluster",
     TopologySpec(nodes=[NodeSpec("a", pod_cidr="10.245.1.0/24")]), "node 'a'", "pod_cidr"),
    ("bad-pod-cidr", TopologySpec(nodes=[NodeSpec("a", pod_cidr="10.244.1.0/24x")]),
     "node 'a'", "pod_cidr"),
    ("duplicate-pod-ip",
     TopologySpec(nodes=TWO, pods=[PodSpec("p1", "node-a", ip="10.244.1.5"),
                                   PodSpec("p2", "node-a", ip="10.244.1.5")]),
     "pod 'p2'", "ip"),
    ("pod-ip-not-in-node-cidr",
     TopologySpec(nodes=TWO, pods=[PodSpec("p1", "node-a", ip="10.244.2.5")]),
     "pod 'p1'", "ip"),
    ("pod-ip-is-gateway",
     TopologySpec(nodes=TWO, pods=[PodSpec("p1", "node-a", ip="10.244.1.1")]),
     "pod 'p1'", "ip"),
    ("pod-on-unknown-node",
     TopologySpec(nodes=TWO, pods=[PodSpec("p1", "node-z")]), "pod 'p1'", "node"),
    ("bad-port", TopologySpec(nodes=TWO, pods=[PodSpec("p1", "node-a", ports=((0, "tcp"),))]),
     "pod 'p1'", "ports[0]"),
    ("bad-protocol",
     TopologySpec(nodes=TWO, pods=[PodSpec("p1", "node-a", ports=((80, "icmp"),))]),
     "pod 'p1'", "ports[0]"),
    ("bad-node-name", TopologySpec(nodes=[NodeSpec("Node_A")]), "node 'Node_A'", "name"),
    ("slash-in-name", TopologySpec(nodes=[NodeSpec("a/b")]), "node 'a/b'", "name"),
    ("too-long-name", TopologySpec(nodes=[NodeSpec("a" * 254)]), "node 'a", "name"),
    ("empty-name", TopologySpec(nodes=[NodeSpec("")]), "node ''", "name"),
    ("duplicate-names", TopologySpec(nodes=TWO, clients=[ClientSpec("node-a")]),
     "client 'node-a'", "name"),
    ("lan-ip-outside-lan", TopologySpec(nodes=[NodeSpec("a", lan_ip="10.0.0.1")]),
     "node 'a'", "lan_ip"),
    ("lan-ip-clash", TopologySpec(nodes=[NodeSpec("a", lan_ip="192.0.2.101")]),
     "client 'client'", "ip"),
    ("unknown-gateway", TopologySpec(nodes=TWO, client_gateway="node-z"),
     "TopologySpec", "client_gateway"),
    ("too-many-secondaries", TopologySpec(nodes=TWO, clients=[ClientSpec("c", 51)]),
     "client 'c'", "extra_addresses"),
    ("no-nodes", TopologySpec(nodes=[]), "TopologySpec", "nodes"),
    ("bad-pod-network", TopologySpec(nodes=TWO, pod_network="overlay"),  # type: ignore[arg-type]
     "TopologySpec", "pod_network"),
]


@pytest.mark.parametrize("spec,obj,field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_spec_is_named_and_nothing_is_created(spec: TopologySpec, obj: str,
                                                       field: str) -> None:
    prefix = f"scval{secrets.token_hex(3)}"
    with pytest.raises(TopologyError) as info:
        Topology(spec, prefix=prefix)  # validates in __init__, before anything exists
    err = info.value
    assert err.obj.startswith(obj), f"error names {err.obj!r}, expected {obj!r}: {err}"
    assert err.field == field, f"error names field {err.field!r}, expected {field!r}: {err}"
    assert err.hint, f"error says what is wrong but not what to do: {err}"
    assert obj.split()[0] in str(err) and repr(field) in str(err)
    assert _created_by(prefix) == []


def test_defaults_follow_the_addressing_plan() -> None:
    r = validate(TopologySpec(nodes=TWO, clients=[ClientSpec("c", extra_addresses=2)]))
    assert [str(n.lan_ip) for n in r.nodes.values()] == ["192.0.2.11", "192.0.2.12"]
    assert [str(n.pod_cidr) for n in r.nodes.values()] == ["10.244.1.0/24", "10.244.2.0/24"]
    ip, extras = r.clients["c"]
    assert (str(ip), [str(e) for e in extras]) == ("192.0.2.101", ["192.0.2.150", "192.0.2.151"])
    assert r.gateway == "node-a"


SLICE = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "web-abc", "namespace": "default",
                 "labels": {"kubernetes.io/service-name": "web"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
              {"name": "dns", "port": 53, "protocol": "UDP"}],
    "endpoints": [
        {"addresses": ["10.244.1.5"], "nodeName": "kind-worker",
         "targetRef": {"kind": "Pod", "name": "web-1"}},
        {"addresses": ["10.244.2.7"], "nodeName": "kind-worker2",
         "targetRef": {"kind": "Pod", "name": "web-2"}},
    ],
}
NODES = [
    {"kind": "Node", "metadata": {"name": "kind-worker"}, "spec": {"podCIDR": "10.244.1.0/24"},
     "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.21"}]}},
    {"kind": "Node", "metadata": {"name": "kind-worker2"}, "spec": {},
     "status": {"addresses": [{"type": "Hostname", "address": "kind-worker2"}]}},
]


def test_topology_from_plain_dicts() -> None:
    spec, pods = topology_from_objects([SLICE], NODES)
    assert [(n.name, n.lan_ip, n.pod_cidr) for n in spec.nodes] == [
        ("kind-worker", "192.0.2.21", "10.244.1.0/24"),
        ("kind-worker2", None, "10.244.2.0/24"),  # inferred from its endpoints
    ]
    assert [(p.name, p.node, p.ip, p.ports) for p in pods] == [
        ("web-1", "kind-worker", "10.244.1.5", ((8080, "tcp"), (53, "udp"))),
        ("web-2", "kind-worker2", "10.244.2.7", ((8080, "tcp"), (53, "udp"))),
    ]
    assert list(spec.pods) == pods


def test_topology_from_lightkube_objects() -> None:
    from lightkube.resources.core_v1 import Node
    from lightkube.resources.discovery_v1 import EndpointSlice

    slices = [EndpointSlice.from_dict(SLICE)]
    nodes = [Node.from_dict(n) for n in NODES]
    spec, pods = topology_from_objects(slices, nodes)
    assert [p.ip for p in pods] == ["10.244.1.5", "10.244.2.7"]
    assert spec.nodes[0].lan_ip == "192.0.2.21"


def test_endpoint_on_unknown_node() -> None:
    with pytest.raises(TopologyError) as info:
        topology_from_objects([SLICE], NODES[:1])
    assert info.value.obj == "EndpointSlice 'web-abc' endpoints[1]"
    assert info.value.field == "nodeName"
    assert "kind-worker2" in str(info.value)


def test_duplicate_pod_ip_across_nodes_in_slices() -> None:
    bad = {**SLICE, "endpoints": [
        {"addresses": ["10.244.1.5"], "nodeName": "kind-worker"},
        {"addresses": ["10.244.1.5"], "nodeName": "kind-worker2"},
    ]}
    with pytest.raises(TopologyError) as info:
        topology_from_objects([bad])
    assert info.value.field == "nodeName" and "10.244.1.5" in str(info.value)


def test_reused_address_is_named_after_the_pod_not_terminating() -> None:
    # kubernetes#135266: a deleted pod's IP given to a new pod; the slice lists the old first
    reused = {**SLICE, "endpoints": [
        {"addresses": ["10.244.1.5"], "nodeName": "kind-worker",
         "conditions": {"ready": False, "serving": False, "terminating": True},
         "targetRef": {"kind": "Pod", "name": "web-old"}},
        {"addresses": ["10.244.1.5"], "nodeName": "kind-worker",
         "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "web-new"}},
    ]}
    _, pods = topology_from_objects([reused], NODES[:1])
    assert [(p.name, p.ip) for p in pods] == [("web-new", "10.244.1.5")]


def test_endpoint_outside_its_nodes_pod_cidr() -> None:
    bad = {**SLICE, "endpoints": [{"addresses": ["10.244.9.5"], "nodeName": "kind-worker"}]}
    with pytest.raises(TopologyError) as info:
        topology_from_objects([bad], NODES)
    assert info.value.obj.startswith("pod ") and info.value.field == "ip"


def test_lan_ip_from_node_outside_lan() -> None:
    nodes = [{**NODES[0], "status": {"addresses": [{"type": "InternalIP",
                                                    "address": "172.18.0.2"}]}}, NODES[1]]
    with pytest.raises(TopologyError) as info:
        topology_from_objects([SLICE], nodes)
    assert info.value.obj == "node 'kind-worker'" and info.value.field == "lan_ip"
