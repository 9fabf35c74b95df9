"""The scenario loader: strict keys, names and references, each error with file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.scenario import ScenarioError, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]

OBJECTS = """\
objects:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec:
      clusterIP: 10.96.0.20
      ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: web-abc
      namespace: default
      labels: {kubernetes.io/service-name: web}
    addressType: IPv4
    endpoints:
      - addresses: [10.244.1.5]
        conditions: {ready: true}
        nodeName: node-a
        targetRef: {kind: Pod, name: web-0, namespace: default}
    ports: [{name: http, port: 8080, protocol: TCP}]
"""  # 20 lines

GOOD_FLOW = "  - {name: ok, from: client, to: 10.96.0.20, port: 80, expect: [web-0]}\n"


def scenario(body: str = "", flows: str = GOOD_FLOW, head: str = "description: test\n") -> str:
    return head + OBJECTS + textwrap.dedent(body) + ("flows:\n" + flows if flows else "")


def error(text: str, tmp_path: Path | None = None) -> ScenarioError:
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(text, "s.yaml")
    return ei.value


def test_a_good_scenario_loads():
    sc = parse_scenario(scenario(), "s.yaml")
    assert [f.name for f in sc.flows] == ["ok"]
    assert {p.name for p in sc.topology.pods} == {"web-0"}
    assert sc.flows[0].line == 23


def test_unknown_top_level_key_names_file_and_line():
    e = error(scenario("colour: blue\n"))
    assert "unknown key 'colour'" in str(e) and e.line == 22
    assert str(e).startswith("s.yaml:22:")


def test_unknown_flow_key():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: [web-0], mask: true}\n"))
    assert "unknown key 'mask'" in str(e) and e.line == 23


def test_duplicate_yaml_key():
    e = error(scenario("proxier:\n  masquerade_all: true\n  masquerade_all: false\n"))
    assert "duplicate key 'masquerade_all'" in str(e) and e.line == 24


def test_duplicate_flow_names_across_steps():
    body = "steps:\n  - flows:\n" + "    " + GOOD_FLOW.strip() + "\n"
    e = error(scenario(body))
    assert "duplicate flow name 'ok'" in str(e)
    assert e.line == 24 and "also used on line 26" in e.hint


def test_flow_from_a_host_that_does_not_exist():
    e = error(scenario(flows="  - {name: x, from: nobody, to: 10.96.0.20, port: 80, expect: [web-0]}\n"))
    assert "from 'nobody' is no host" in str(e) and e.line == 23
    assert "web-0" in e.hint and "client" in e.hint


def test_expected_endpoint_in_no_slice():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: [10.244.1.6:8080]}\n"))
    assert "endpoint 10.244.1.6:8080 is in no EndpointSlice" in str(e) and e.line == 23


def test_expected_pod_that_is_no_endpoint():
    e = error(scenario("topology:\n  pods: [{name: curl, node: node-a}]\n",
                       flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: [curl]}\n"))
    assert "'curl' is no endpoint pod" in str(e)


def test_endpoint_on_the_wrong_port():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: [10.244.1.5:80]}\n"))
    assert "is in no EndpointSlice" in str(e)


def test_bad_outcome_and_protocol():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: refuse}\n"))
    assert "expect 'refuse' is not an outcome" in str(e) and e.line == 23
    e = error(scenario(flows="  - {name: x, from: client, protocol: ICMP, to: 10.96.0.20, port: 80, expect: drop}\n"))
    assert "protocol 'ICMP' unknown" in str(e)


def test_masq_without_endpoints_is_an_error():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: drop, masq: true}\n"))
    assert "masq needs endpoints" in str(e)


def test_missing_required_keys():
    e = error(scenario(flows="  - {name: x, from: client, port: 80, expect: drop}\n"))
    assert "missing 'to'" in str(e) and e.line == 23
    e = error(scenario(head=""))
    assert "missing 'description'" in str(e)


def test_nothing_checked():
    e = error(scenario(flows=""))
    assert "checks nothing" in str(e)


def test_step_with_two_actions_and_unknown_restart_node():
    e = error(scenario("steps:\n  - {wait: 1, restart_proxier: node-a}\n"))
    assert "exactly one action" in str(e) and e.line == 23
    e = error(scenario("steps:\n  - {restart_proxier: node-z}\n"))
    assert "'node-z' is not a node" in str(e)


def test_to_must_be_an_address_or_a_node():
    e = error(scenario(flows="  - {name: x, from: client, to: web, port: 80, expect: drop}\n"))
    assert "neither an address nor a node" in str(e)


def test_inline_object_error_points_at_the_object():
    bad = scenario().replace("port: 80,", "port: eighty,", 1)
    e = error(bad)
    assert e.line == 3 and "objects[0]" in str(e) and "Service default/web" in str(e)
    assert "spec.ports[0].port" in str(e)


def test_duplicate_key_inside_an_inline_object():
    bad = scenario().replace("      clusterIP: 10.96.0.20\n", "      clusterIP: 10.96.0.20\n      clusterIP: 10.96.0.21\n", 1)
    e = error(bad)
    assert "duplicate key 'clusterIP'" in str(e) and e.line == 8


def test_dump_file_relative_to_the_scenario(tmp_path):
    (tmp_path / "dump.yaml").write_text("apiVersion: v1\nkind: List\nitems:\n"
                                        + OBJECTS.split("\n", 1)[1])
    text = "description: d\nobjects: dump.yaml\nflows:\n" + GOOD_FLOW
    (tmp_path / "s.yaml").write_text(text)
    sc = load_scenario(tmp_path / "s.yaml")
    assert {p.name for p in sc.topology.pods} == {"web-0"}
    (tmp_path / "s.yaml").write_text(text.replace("dump.yaml", "missing.yaml"))
    with pytest.raises(ScenarioError, match="no file 'missing.yaml'") as ei:
        load_scenario(tmp_path / "s.yaml")
    assert ei.value.line == 2
    (tmp_path / "dump.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ScenarioError, match="dump.yaml:1 .*metadata.namespace is missing") as ei:
        load_scenario(tmp_path / "s.yaml")
    assert ei.value.line == 2


def test_node_addresses_outside_the_lan_are_a_topology_error():
    node = ("  - apiVersion: v1\n    kind: Node\n    metadata: {name: node-a}\n"
            "    status: {addresses: [{type: InternalIP, address: 172.16.0.4}]}\n")
    text = scenario().replace("objects:\n", "objects:\n" + node, 1)
    e = error(text)
    assert "172.16.0.4" in str(e) and "lan" in str(e)


def test_unknown_feature_and_capability():
    e = error(scenario("features: [teleport]\n"))
    assert "unknown feature 'teleport'" in str(e)
    e = error(scenario("proxier:\n  capabilities: [telepathy]\n"))
    assert "unknown capability 'telepathy'" in str(e)


def test_statistical_flows_need_endpoints():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: [web-0], affinity: true}\n"))
    assert "at least 2 expected endpoints" in str(e)


def test_invalid_yaml():
    e = error("description: [unclosed\n")
    assert "invalid YAML" in str(e)


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "scenarios").rglob("*.yaml")
                                        if "dumps" not in p.parts), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads(path):
    sc = load_scenario(path)
    assert sc.description and sc.all_flows()


def test_known_gaps():
    sc = parse_scenario(scenario("known_gaps:\n  - {proxier: reference, reason: not yet}\n"), "s.yaml")
    assert sc.known_gaps == {"reference": "not yet"}
    e = error(scenario("known_gaps:\n  - {proxier: reference, reason: a}\n  - {proxier: reference, reason: b}\n"))
    assert "listed twice" in str(e) and e.line == 24
    e = error(scenario("known_gaps:\n  - {proxier: reference}\n"))
    assert "missing 'reason'" in str(e)


def test_interval_is_for_affinity_flows():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 80, expect: [web-0], interval: 3}\n"))
    assert "interval is for affinity flows" in str(e)


def test_source_must_belong_to_the_host():
    text = scenario("topology:\n  clients: [{name: c1, extra_addresses: 2}, {name: c2}]\n",
                    flows="  - {name: x, from: c1, source: 192.0.2.102, to: 10.96.0.20, port: 80, expect: [web-0]}\n")
    e = error(text)
    assert "source 192.0.2.102 is not an address of c1" in str(e)
    ok = text.replace("source: 192.0.2.102", "source: 192.0.2.151")
    assert parse_scenario(ok, "s.yaml").flows[0].source == "192.0.2.151"


def test_proxier_settings_become_refproxier_flags():
    sc = parse_scenario(scenario("proxier:\n  masquerade_all: true\n  nodeport_addresses: [192.0.2.0/24]\n"
                                 "  localhost_nodeports: false\n  cluster_cidr: ''\n"), "s.yaml")
    assert sc.proxier.refproxier_args() == ["--masquerade-all", "--nodeport-addresses=192.0.2.0/24",
                                            "--iptables-localhost-nodeports=false"]
    assert sc.proxier.cluster_cidr == ""
    e = error(scenario("proxier:\n  nodeport_addresses: [lan]\n"))
    assert "is not a CIDR" in str(e)


def test_save_scenario_writes_a_loadable_file(tmp_path):
    """--save-scenario: objects, hosts and probes of a failed check become a scenario."""
    from types import SimpleNamespace as NS

    import yaml

    from harness.scenario_plugin import save_scenario
    from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec, validate
    from harness.traffic.probe import Observation, Outcome, ProbeRecord

    objs = yaml.safe_load(OBJECTS)["objects"]
    objs[1]["endpoints"][0].pop("targetRef")
    objs[1]["endpoints"][0]["nodeName"] = "node1"
    spec = TopologySpec(nodes=[NodeSpec("node1")], clients=[ClientSpec("client1", extra_addresses=1)])
    node = NS(name="node1", ip="192.0.2.11")
    web = NS(name="pod3", ip="10.244.1.5", node=node)
    src = NS(name="pod4", ip="10.244.1.6", node=node)
    client = NS(name="client1", ip="192.0.2.101", addresses=["192.0.2.101", "192.0.2.150"])
    topo = NS(pods={"pod3": web, "pod4": src}, spec=spec, resolved=validate(spec),
              hosts={"pod3": web, "pod4": src, "client1": client, "node1": node})
    env = NS(topology=topo, nodes=[node], clients=[client],
             controlplane=NS(objects=lambda: objs))
    obs = [Observation(Outcome.REPLY, "10.244.1.6", 40000 + i, "10.96.0.20", 80, "tcp", pod="pod3",
                       seen_src="10.244.1.6") for i in range(3)]
    refused = [Observation(Outcome.ICMP, "192.0.2.101", 41000, "192.0.2.11", 30080, "udp",
                           icmp_type=3, icmp_code=3)]
    record = [ProbeRecord("pod4", "10.96.0.20", 80, "tcp", None, None, obs),
              ProbeRecord("client1", "192.0.2.11", 30080, "udp", None, None, refused)]
    item = NS(nodeid="conformance/test_x.py::test_y[a]",
              get_closest_marker=lambda name: NS(args=["service/x"], kwargs={"ref": "https://example.org/x"}),
              iter_markers=lambda name: [NS(args=("affinity",))])
    report = NS(longreprtext="def test_y():\nE   AssertionError: FAIL reached-only\n")
    path, note = save_scenario(item, env, record, report, tmp_path)
    assert note == "" and path.name == "test_y-a.yaml"
    text = path.read_text()
    assert "# observed: 3x reply pod3" in text and "# observed: 1x icmp" in text
    sc = load_scenario(path)
    assert sc.references == ["https://example.org/x"] and sc.proxier.capabilities == ["affinity"]
    f1, f2 = sc.flows
    assert (f1.src, f1.to, f1.port, f1.expect, f1.count) == ("pod4", "10.96.0.20", 80, ["pod3"], 3)
    assert (f2.src, f2.protocol, f2.to, f2.expect) == ("client1", "UDP", "node1", "reject")
    assert "FAIL reached-only" in sc.description


V6_OBJECTS = OBJECTS.replace("clusterIP: 10.96.0.20", 'clusterIP: "fd00:10:96::20"').replace(
    "addressType: IPv4", "addressType: IPv6").replace("[10.244.1.5]", '["fd00:10:244:1::5"]')


def test_an_ipv6_dump_is_replayed_on_an_ipv6_network():
    text = "description: test\n" + V6_OBJECTS + (
        'flows:\n  - {name: ok, from: client, to: "fd00:10:96::20", port: 80, expect: [web-0]}\n')
    sc = parse_scenario(text, "s.yaml")
    assert sc.topology.cluster_cidr.startswith("fd00:") and sc.topology.lan_cidr.startswith("2001:db8:")
    assert [p.ip for p in sc.topology.pods] == ["fd00:10:244:1::5"]
    assert "ipv6" in sc.proxier.capabilities  # other proxiers are skipped unless they declare it


def test_objects_of_both_families_are_an_error_with_a_remedy():
    both = OBJECTS + V6_OBJECTS.replace("objects:\n", "").replace("name: web-abc", "name: web-v6")
    e = error("description: test\n" + both + "flows:\n" + GOOD_FLOW)
    assert "mix IPv4 and IPv6" in str(e) and "keep one family" in str(e)


def test_untouched_must_say_what_happens():
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 81, expect: untouched}\n"))
    assert "does not say what must happen" in str(e) and e.line == 23
    assert "{untouched: reject}" in e.hint and "{untouched: any}" in e.hint
    e = error(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 81, expect: {untouched: silence}}\n"))
    assert "untouched 'silence' is not an outcome" in str(e) and e.line == 23
    e = error(scenario(flows="  - {name: x, from: client, protocol: UDP, to: 10.96.0.20, port: 81,\n"
                             "     expect: {untouched: reset}}\n"))
    assert "only TCP answers with a reset" in str(e) and e.line == 24
    sc = parse_scenario(scenario(flows="  - {name: x, from: client, to: 10.96.0.20, port: 81, "
                                       "expect: {untouched: drop}}\n"), "s.yaml")
    assert (sc.flows[0].expect, sc.flows[0].untouched) == ("untouched", "drop")

# ------------------------------------------------------------------ history: (issue 15)

HISTORY = """\
history:
  component: kube-proxy
  fixed_in: v1.23.0
  fixed_by: [https://github.com/kubernetes/kubernetes/pull/104009]
  cherry_picks: [v1.20.11, v1.22.1]
  introduced_in: v1.19.0
  last_buggy: v1.19.16
  modes: [iptables, ipvs]
  note: >
    two
    lines
"""


def test_history_loads_and_tells_which_release_has_the_fix():
    sc = parse_scenario(scenario(HISTORY), "s.yaml")
    h = sc.history
    assert (h.component, h.fixed_in_text, h.last_buggy_text, h.note) == (
        "kube-proxy", "v1.23.0", "v1.19.16", "two lines")
    assert [str(c) for c in h.cherry_picks] == ["v1.20.11", "v1.22.1"]
    assert [h.has_fix(r) for r in ("v1.19.16", "v1.20.10", "v1.20.11", "v1.21.14", "v1.22.1", "v1.23.0")] \
        == [False, False, True, False, True, True]
    assert h.expected_to_fail("v1.19.16") is True
    assert h.expected_to_fail("v1.18.20") is False  # before introduced_in
    assert h.expected_to_fail("v1.20.15") is False
    assert h.expected_to_fail("v1.19.16", mode="nftables") is False  # not a mode that had it
    assert h.to_dict()["cherry_picks"] == ["v1.20.11", "v1.22.1"]
    assert h.status("v1.19.16") == "before the fix" and h.status("v1.23.4") == "has the fix"
    assert h.status("v1.18.20") == "not affected (introduced in v1.19.0)"
    assert h.status("v1.19.16", mode="nftables") == "not affected (iptables/ipvs mode only)"


def test_history_words_unknown_and_none():
    sc = parse_scenario(scenario("history:\n  component: none\n  fixed_in: none\n"
                                 "  last_buggy: unknown\n"), "s.yaml")
    assert sc.history.fixed_in is None and sc.history.expected_to_fail("v1.30.0") is None
    sc = parse_scenario(scenario("history:\n  component: kube-proxy\n  fixed_in: unknown\n"), "s.yaml")
    assert sc.history.has_fix("v1.30.0") is None


@pytest.mark.parametrize("body, problem", [
    ("history:\n  component: kube-proxy\n  fixed_in: v1.23.0\n  colour: blue\n", "unknown key 'colour'"),
    ("history:\n  fixed_in: v1.23.0\n", "missing 'component'"),
    ("history:\n  component: kube-dns\n  fixed_in: v1.23.0\n", "history.component 'kube-dns' is unknown"),
    ("history:\n  component: kube-proxy\n  fixed_in: 1.23\n", "history.fixed_in '1.23' is not a release"),
    ("history:\n  component: kube-proxy\n  fixed_in: v1.23.0\n  cherry_picks: [v1.24.1]\n",
     "not older than fixed_in"),
    ("history:\n  component: kube-proxy\n  fixed_in: v1.23.0\n  last_buggy: v1.23.4\n", "already has the fix"),
    ("history:\n  component: kube-proxy\n  fixed_in: v1.23.0\n  cherry_picks: [v1.22.4]\n"
     "  last_buggy: v1.22.5\n", "already has the fix"),
    ("history:\n  component: kube-proxy\n  fixed_in: v1.23.0\n  introduced_in: v1.22.0\n"
     "  last_buggy: v1.21.0\n", "older than introduced_in"),
    ("history:\n  component: kube-proxy\n  fixed_in: v1.23.0\n  modes: [ebpf]\n", "history.modes[0] 'ebpf'"),
    ("history:\n  component: kube-proxy\n  fixed_in: v1.23.0\n  fixed_by: ['#104009']\n", "is not a URL"),
])
def test_history_errors_name_the_line(body, problem):
    e = error(scenario(body))
    assert problem in str(e), str(e)
    assert e.line is not None and e.line >= 22


def test_every_bug_scenario_says_its_history():
    from harness.scenario import load_scenario as load

    for p in sorted((ROOT / "scenarios" / "bugs").glob("*.yaml")):
        h = load(p).history
        assert h is not None, f"{p.name} has no history:"
        if h.component == "kube-proxy" and h.fixed_in is not None:
            assert h.fixed_by, f"{p.name}: a fixed kube-proxy bug links its fix"


def test_a_slice_port_without_a_name_is_an_error():
    e = error(scenario().replace("ports: [{name: http, port: 8080, protocol: TCP}]",
                                 "ports: [{port: 8080, protocol: TCP}]"))
    assert "port 8080 has no name" in str(e) and 'name: ""' in str(e)


# ------------------------------------------------ generated slices, patterns, listeners

GENERATED = """\
description: generated
objects:
  - apiVersion: v1
    kind: Service
    metadata: {name: big, namespace: default}
    spec:
      clusterIP: 10.96.0.30
      ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
  - generate: EndpointSlice
    service: big
    endpoints:
      - {node: node-a, count: 150, first: 10.244.1.10}
      - {node: node-b, count: 60, first: 10.244.2.10}
    ports: [{name: http, port: 8080, protocol: TCP}]
flows:
"""


def test_generated_slices_are_what_the_controller_writes():
    sc = parse_scenario(GENERATED + "  - {name: u, from: client, to: 10.96.0.30, port: 80, "
                        "expect: [big-*], distribution: uniform}\n", "g.yaml")
    slices = [o for o in sc.objects if type(o).__name__ == "EndpointSlice"]
    assert [s.metadata.name for s in slices] == ["big-gen0", "big-gen1", "big-gen2"]
    assert [len(s.endpoints) for s in slices] == [100, 100, 10]
    eps = [e for s in slices for e in s.endpoints]
    assert eps[0].addresses == ["10.244.1.10"] and eps[149].addresses == ["10.244.1.159"]
    assert eps[150].addresses == ["10.244.2.10"] and eps[150].nodeName == "node-b"
    assert eps[209].targetRef.name == "big-209"
    assert len(sc.topology.pods) == 210
    f = sc.flows[0]
    assert len(f.expect) == 210 and f.expect[:3] == ["big-0", "big-1", "big-2"]
    assert "{big-*}" in f.describe()


@pytest.mark.parametrize("flow,problem,line", [
    ("expect: [web-*]", "pattern 'web-*' matches no endpoint pod", 16),
    ("expect: ['big-1?'], distribution: uniform", None, None),
    ("expect: [big-7], distribution: uniform", "at least 2 expected endpoints", 16),
])
def test_patterns_that_match_nothing_or_too_little(flow, problem, line):
    text = GENERATED + "  - {name: u, from: client, to: 10.96.0.30, port: 80, " + flow + "}\n"
    if problem is None:
        assert len(parse_scenario(text, "g.yaml").flows[0].expect) == 10  # big-10 .. big-19
        return
    e = error(text)
    assert problem in str(e) and e.line == line


@pytest.mark.parametrize("bad,problem", [
    ("generate: Service", "only EndpointSlices are generated"),
    ("generate: EndpointSlice\n    colour: blue", "unknown key 'colour'"),
])
def test_a_bad_generator_is_refused_with_its_line(bad, problem):
    e = error(GENERATED.replace("generate: EndpointSlice", bad) + GOOD_FLOW.replace("[web-0]", "[big-0]").replace("10.96.0.20", "10.96.0.30"))
    assert problem in str(e) and e.line


def test_listeners_are_named_hosts_on_nodes():
    text = scenario("topology:\n  listeners: [{name: app, node: node-a, port: 30000}]\n",
                    flows="  - {name: l, from: client, to: node-a, port: 30000, expect: [app]}\n")
    sc = parse_scenario(text, "s.yaml")
    assert [(x.name, x.node, x.port, x.protocol) for x in sc.listeners] == [("app", "node-a", 30000, "TCP")]
    for body, problem in (("[{name: app, node: node-z, port: 1}]", "'node-z' is not a node"),
                          ("[{name: web-0, node: node-a, port: 1}]", "already a pod"),
                          ("[{name: app, node: node-a, port: 1, protocol: SCTP}]", "protocol 'SCTP'")):
        e = error(scenario(f"topology:\n  listeners: {body}\n"))
        assert problem in str(e) and e.line == 23, str(e)


NODELESS = """\
description: nodeless
objects:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec:
      clusterIP: 10.96.0.40
      ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: web-x, namespace: default, labels: {kubernetes.io/service-name: web}}
    addressType: IPv4
    endpoints:
      - {addresses: [10.244.2.7], conditions: {ready: true}, targetRef: {kind: Pod, name: web-0}}
      - {addresses: [10.244.1.8], conditions: {ready: true}, nodeName: node-a}
    ports: [{name: http, port: 8080, protocol: TCP}]
topology:
  nodes: [{name: node-a, pod_cidr: 10.244.1.0/24}, {name: node-b, pod_cidr: 10.244.2.0/24}]
flows:
  - {name: f, from: client, to: 10.96.0.40, port: 80, expect: [web-0]}
"""


def test_an_endpoint_without_node_name_runs_where_its_address_belongs():
    sc = parse_scenario(NODELESS, "n.yaml")
    assert {(p.name, p.node) for p in sc.topology.pods} == {("web-0", "node-b"),
                                                            ("ep-10-244-1-8", "node-a")}
    e = error(NODELESS.replace("10.244.2.7", "10.244.9.7"))
    assert "10.244.9.7 is in the pod CIDR of 0 nodes" in str(e) and "nodeName" in str(e)


def test_a_node_has_further_addresses_to_send_from_and_to():
    text = scenario("topology:\n  nodes: [{name: node-a, extra_addresses: [192.0.2.200, 203.0.113.9]}]\n",
                    flows="  - {name: s, from: node-a, source: 203.0.113.9, to: 192.0.2.200, port: 80,"
                          " expect: reject}\n")
    sc = parse_scenario(text, "s.yaml")
    (node,) = [n for n in sc.topology.nodes if n.name == "node-a"]
    assert node.extra_addresses == ("192.0.2.200", "203.0.113.9")
    assert sc.flows[0].source == "203.0.113.9"
    for body, problem in (("3", "must be a list of addresses"),
                          ("[nope]", "'nope' is not an address"),
                          ("[10.0.0.9]", "neither in the lan"),
                          ("[192.0.2.11]", "already used by node 'node-a'"),
                          ("[]", "is empty")):
        e = error(scenario(f"topology:\n  nodes: [{{name: node-a, extra_addresses: {body}}}]\n"))
        assert problem in str(e) and e.line == 23, str(e)
    e = error(scenario("topology:\n  nodes: [{name: node-a}, {name: node-b, extra_addresses: "
                       "[198.51.100.5]}]\n",
                       flows="  - {name: s, from: node-a, source: 198.51.100.5, to: 10.96.0.20,"
                             " port: 80, expect: [web-0]}\n"))
    assert "source 198.51.100.5 is not an address of node-a" in str(e), str(e)


def test_traffic_flows_through_an_apply_or_restart_step():
    steps = ("steps:\n  - restart_proxier: node-a\n    traffic: {from: client, to: 10.96.0.20, "
             "port: 53, sport: 41053, after: 1}\n  - flows:\n  " + GOOD_FLOW.replace("ok", "after"))
    sc = parse_scenario(scenario(steps, flows=""), "s.yaml")
    t = sc.steps[0].traffic
    assert (t.src, t.to, t.port, t.sport, t.after, t.every) == ("client", "10.96.0.20", 53, 41053, 1.0, 0.05)
    for bad, problem in (("protocol: TCP, ", "protocol 'TCP'"), ("every: 5, ", "outside 0.01..1"),
                         ("after: 60, ", "longer than a UDP conntrack entry"),
                         ("colour: red, ", "unknown key 'colour'")):
        e = error(scenario(steps.replace("{from", "{" + bad + "from").replace(", after: 1", ""),
                           flows=""))
        assert problem in str(e) and e.line == 24, str(e)
    e = error(scenario(steps.replace("from: client", "from: nobody", 1), flows=""))
    assert "traffic from 'nobody' is no host" in str(e) and e.line == 24, str(e)
    e = error(scenario(steps.replace("restart_proxier: node-a", "wait: 1"), flows=""))
    assert "traffic goes with apply or restart_proxier" in str(e), str(e)
