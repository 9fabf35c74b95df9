"""The pure parts of differential testing (harness.diff): generation stays within what the
API server accepts and covers every kind of Service, host and destination; outcomes and
their comparison; declared differences; the shrinker; the scenario writer. No root."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
import yaml

from harness.diff import declared as dcl
from harness.diff.facts import flow_facts, source_kind, target_service
from harness.diff.generate import document_text, generate_cases
from harness.diff.outcome import FlowOutcome, compare, outcome_of, probe_count
from harness.diff.shrink import loads, reductions, shrink
from harness.diff.write import check_loads, expectation, scenario_text
from harness.scenario import parse_scenario
from harness.traffic.probe import Observation, Outcome

CASES = generate_cases(7, 150)


def services(doc):
    return [o for o in doc["objects"] if o["kind"] == "Service"]


def slices(doc):
    return [o for o in doc["objects"] if o["kind"] == "EndpointSlice"]


# ------------------------------------------------------------------------ generation


def test_generation_is_reproducible_from_the_seed():
    assert generate_cases(7, 150) == CASES
    assert generate_cases(8, 20) != generate_cases(7, 20)


@pytest.mark.parametrize("i", range(0, 150, 10))
def test_every_generated_case_loads_as_a_scenario(i):
    for doc in CASES[i:i + 10]:
        sc = parse_scenario(document_text(doc), f"<case {i}>")
        assert len(sc.flows) == len(doc["flows"]) >= 1


def test_generated_services_are_ones_the_api_server_accepts():
    for doc in CASES:
        assert_api_valid(doc)


def assert_api_valid(doc):
    """The Service validation rules of the API server that generation must respect."""
    node_ports = []
    cluster_ips = []
    for svc in services(doc):
        spec, name = svc["spec"], svc["metadata"]["name"]
        if spec["type"] == "ExternalName":
            assert "clusterIP" not in spec and spec["externalName"], name
            continue
        if spec["clusterIP"] != "None":
            assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network("10.96.0.0/16")
            cluster_ips.append(spec["clusterIP"])
        assert spec["clusterIPs"] == [spec["clusterIP"]]
        ports = spec["ports"]
        assert 1 <= len(ports) <= 3
        assert len({(p["port"], p["protocol"]) for p in ports}) == len(ports)
        if len(ports) > 1:
            names = [p["name"] for p in ports]
            assert all(names) and len(set(names)) == len(names), name
        for p in ports:
            assert ("nodePort" in p) == (spec["type"] in ("NodePort", "LoadBalancer"))
            node_ports += [p["nodePort"]] if "nodePort" in p else []
        if "healthCheckNodePort" in spec:
            assert spec["type"] == "LoadBalancer" and spec["externalTrafficPolicy"] == "Local"
            node_ports.append(spec["healthCheckNodePort"])
        if "externalTrafficPolicy" in spec:
            assert spec["type"] in ("NodePort", "LoadBalancer") or spec.get("externalIPs")
        if spec.get("loadBalancerSourceRanges") or svc.get("status"):
            assert spec["type"] == "LoadBalancer"
        assert ("sessionAffinityConfig" in spec) == (spec.get("sessionAffinity") == "ClientIP")
    assert all(30000 <= p <= 32767 for p in node_ports)
    assert len(set(node_ports)) == len(node_ports)
    assert len(set(cluster_ips)) == len(cluster_ips)


def test_generated_slices_match_their_services_and_conditions_are_consistent():
    for doc in CASES:
        by_name = {s["metadata"]["name"]: s for s in services(doc)}
        addresses = []
        for sl in slices(doc):
            svc = by_name[sl["metadata"]["labels"]["kubernetes.io/service-name"]]
            assert [p["name"] for p in sl["ports"]] == [p["name"] for p in svc["spec"]["ports"]]
            assert [p["port"] for p in sl["ports"]] == [p["targetPort"] for p in svc["spec"]["ports"]]
            for ep in sl["endpoints"]:
                c = ep["conditions"]
                if c["ready"]:
                    assert c["serving"] and not c["terminating"]
                addresses += ep["addresses"]
        assert len(set(addresses)) == len(addresses)


def test_generation_covers_every_type_host_and_destination():
    types, dests, srcs, protos, conds, extras = Counter(), Counter(), Counter(), Counter(), Counter(), Counter()
    for doc in CASES:
        for svc in services(doc):
            spec = svc["spec"]
            types["Headless" if spec.get("clusterIP") == "None" else spec["type"]] += 1
            protos.update(p["protocol"] for p in spec.get("ports", []))
            extras.update(k for k in ("externalIPs", "loadBalancerSourceRanges", "sessionAffinityConfig")
                          if k in spec)
            extras.update(f"etp-{spec['externalTrafficPolicy']}" for _ in [0] if "externalTrafficPolicy" in spec)
            extras.update(f"itp-{spec['internalTrafficPolicy']}" for _ in [0] if "internalTrafficPolicy" in spec)
            extras.update(f"ipMode-{i['ipMode']}" for i in svc.get("status", {}).get("loadBalancer", {}).get("ingress", []))
        for sl in slices(doc):
            conds.update(tuple(ep["conditions"].values()) for ep in sl["endpoints"])
            extras["empty slice"] += not sl["endpoints"]
        for f in doc["flows"]:
            facts = flow_facts(doc, f)
            dests[facts["dest"]] += 1
            srcs[facts["src"]] += 1
    assert set(types) == {"ClusterIP", "NodePort", "LoadBalancer", "Headless", "ExternalName"}
    assert set(dests) == {"clusterip", "nodeport", "externalip", "lb", "unexposed"}
    assert set(srcs) == {"client", "node", "pod", "endpoint"}
    assert set(protos) == {"TCP", "UDP"}
    assert len(conds) == 4
    assert {"externalIPs", "loadBalancerSourceRanges", "sessionAffinityConfig", "etp-Local",
            "etp-Cluster", "itp-Local", "itp-Cluster", "ipMode-VIP", "ipMode-Proxy",
            "empty slice"} <= set(extras)


def test_facts_name_the_destination_and_source():
    doc = next(d for d in CASES if any(flow_facts(d, f)["dest"] == "nodeport" for f in d["flows"]))
    f = next(f for f in doc["flows"] if flow_facts(doc, f)["dest"] == "nodeport")
    kind, svc = target_service(doc, f)
    assert kind == "nodeport" and any(p.get("nodePort") == f["port"] for p in svc["spec"]["ports"])
    assert source_kind(doc, "node-a") == ("node", "node-a")
    assert source_kind(doc, "pod-b") == ("pod", "node-b")
    assert source_kind(doc, "client") == ("client", None)


# ------------------------------------------------------------------------ outcomes


def obs(outcome, pod=None, port=8080, seen="192.0.2.101", icmp=(None, None)):
    return Observation(outcome, "192.0.2.101", 40000, "10.96.1.10", 80, "tcp", pod=pod,
                       seen_src=seen, pod_port=port if pod else None,
                       icmp_type=icmp[0], icmp_code=icmp[1])


def names(addr):
    return {"192.0.2.11": "node-a"}.get(addr, addr)


def test_outcome_sets_endpoints_refusals_silence_and_sources():
    o = outcome_of([obs(Outcome.REPLY, "ep0"), obs(Outcome.REPLY, "ep1", seen="192.0.2.11"),
                    obs(Outcome.TIMEOUT), obs(Outcome.ICMP, icmp=(3, 3)), obs(Outcome.RESET)],
                   names)
    assert o.answered == {"ep0:8080", "ep1:8080"}
    assert o.seen == {"the client itself", "node-a"}
    assert o.refused == {"port unreachable", "reset"}
    assert o.silent == 1 and o.probes == 5
    assert "answered by {ep0:8080, ep1:8080}" in o.text()


def test_probe_count_sees_every_endpoint_with_high_probability():
    assert probe_count(0) == probe_count(1) == 21
    assert probe_count(2) == 21 and probe_count(4) == 53


A = FlowOutcome(frozenset({"ep0:80", "ep1:80"}), seen=frozenset({"node-a"}), probes=21)


@pytest.mark.parametrize("b, classes", [
    (A, []),
    (FlowOutcome(frozenset({"ep0:80"}), seen=frozenset({"node-a"})), ["endpoints"]),
    (FlowOutcome(frozenset({"ep0:80", "ep1:81"}), seen=frozenset({"node-a"})), ["endpoints"]),
    (FlowOutcome(refused=frozenset({"port unreachable"})), ["answered-vs-not"]),
    (FlowOutcome(silent=4), ["answered-vs-not"]),
    (FlowOutcome(A.answered, seen=frozenset({"the client itself"})), ["source"]),
    (FlowOutcome(A.answered, seen=A.seen, silent=3), ["partial"]),
])
def test_compare_classes(b, classes):
    assert compare(A, b) == classes
    assert compare(b, A) == classes


def test_compare_refusals_and_affinity():
    rej, sil = FlowOutcome(refused=frozenset({"port unreachable"})), FlowOutcome(silent=4)
    assert compare(rej, sil) == ["refusal"]
    assert compare(sil, FlowOutcome(silent=1)) == []
    one, other = FlowOutcome(frozenset({"ep0:80"})), FlowOutcome(frozenset({"ep1:80"}))
    assert compare(one, other) == ["endpoints"]
    assert compare(one, other, sticky=True) == []  # each proxier sticks to one at random
    assert compare(one, FlowOutcome(frozenset({"ep0:80", "ep1:80"})), sticky=True) == ["endpoints"]
    # a pod sticking to itself sees its gateway, to another endpoint the node: not a finding
    self_ = FlowOutcome(frozenset({"ep0:80"}), seen=frozenset({"node-a (pod gateway)"}))
    other_ = FlowOutcome(frozenset({"ep1:80"}), seen=frozenset({"node-a"}))
    assert compare(self_, other_, sticky=True) == []
    assert compare(self_, FlowOutcome(frozenset({"ep0:80"}), seen=frozenset({"node-a"})),
                   sticky=True) == ["source"]


# ------------------------------------------------------------------------ declared


def test_declared_by_capability():
    full = frozenset({"reject-no-endpoints", "affinity"})
    assert dcl.by_capability("refusal", {"serving": 0}, full, frozenset({"affinity"}))
    assert dcl.by_capability("refusal", {"serving": 1}, full, frozenset({"affinity"})) is None
    assert dcl.by_capability("refusal", {"serving": 0}, full, full) is None
    assert dcl.by_capability("endpoints", {"affinity": True}, full, frozenset())


def test_declared_file_entries_match_pair_class_and_facts(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump([{"between": [["x"], ["y", "z"]], "class": "refusal",
                                  "when": {"dest": ["unexposed", "lb"], "protocol": "TCP"},
                                  "reason": "because", "link": "https://example.org/1"}]))
    entries = dcl.load_declared(p)
    facts = {"dest": "lb", "protocol": "TCP"}
    assert dcl.declared_reason("z", "x", "refusal", facts, frozenset(), frozenset(), entries) \
        == "because (https://example.org/1)"
    for a, b, cls, f in (("x", "q", "refusal", facts), ("x", "y", "source", facts),
                         ("x", "y", "refusal", {**facts, "protocol": "UDP"})):
        assert dcl.declared_reason(a, b, cls, f, frozenset(), frozenset(), entries) is None


@pytest.mark.parametrize("entry", [{"between": [["x"]], "reason": "r"}, {"reason": "r"},
                                   {"between": [["x"], ["y"]], "reason": "r", "class": "nope"},
                                   {"between": [["x"], ["y"]], "reason": "r", "extra": 1}])
def test_declared_file_errors_name_the_entry(tmp_path, entry):
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump([entry]))
    with pytest.raises(dcl.DeclaredError, match="entry 0"):
        dcl.load_declared(p)


def test_the_shipped_declared_file_loads_and_names_only_known_facts():
    entries = dcl.load_declared()
    assert entries
    doc = next(d for d in CASES if any(flow_facts(d, f)["dest"] == "clusterip" for f in d["flows"]))
    known = set(flow_facts(doc, next(f for f in doc["flows"] if flow_facts(doc, f)["dest"] == "clusterip")))
    for e in entries:
        assert set(e.when) <= known, f"{e.reason[:60]}: unknown facts {set(e.when) - known}"


# ------------------------------------------------------------------------ shrinking


def _terminating_case():
    """A generated case with several Services and flows, one to a Service with a
    terminating endpoint."""
    for doc in CASES:
        if len(services(doc)) < 2 or len(doc["flows"]) < 3:
            continue
        for f in doc["flows"]:
            kind, svc = target_service(doc, f)
            eps = [ep for sl in slices(doc)
                   if sl["metadata"]["labels"]["kubernetes.io/service-name"] == (svc or {}).get("metadata", {}).get("name")
                   for ep in sl["endpoints"]]
            if kind == "clusterip" and f["from"] == "client" and any(e["conditions"]["terminating"] for e in eps):
                return doc, f
    raise AssertionError("no such case in the sample")


def test_shrink_keeps_only_what_the_disagreement_needs():
    doc, flow = _terminating_case()

    def still(d):  # a planted "bug": the flow still goes to a Service with a terminating endpoint
        f = next(x for x in d["flows"] if x["name"] == flow["name"])
        _, svc = target_service(d, f)
        return any(ep["conditions"]["terminating"] for sl in slices(d) for ep in sl["endpoints"]
                   if svc and sl["metadata"]["labels"]["kubernetes.io/service-name"] == svc["metadata"]["name"])

    small, removed, runs = shrink(doc, flow["name"], still, max_runs=500)
    assert loads(small) and still(small)
    assert len(small["flows"]) == 1 and len(services(small)) == 1
    (sl,) = slices(small)
    assert len(sl["endpoints"]) == 1 and sl["endpoints"][0]["conditions"]["terminating"]
    assert len(services(small)[0]["spec"]["ports"]) == 1
    assert removed and runs <= 500
    # nothing smaller still disagrees: every reduction of the result is refused
    assert not any(loads(c) and still(c) for _, c in reductions(small, flow["name"]))


def test_shrink_stops_at_its_run_budget():
    doc, flow = _terminating_case()
    calls = []
    _, _, runs = shrink(doc, flow["name"], lambda d: calls.append(1) or True, max_runs=3)
    assert runs == len(calls) == 3


def test_every_reduction_the_loader_takes_is_one_the_api_server_accepts():
    seen = Counter()
    for doc in CASES[:12]:
        for what, cand in reductions(doc, doc["flows"][-1]["name"]):
            if loads(cand):
                assert_api_valid(cand)
                seen[what.split(" ")[0]] += 1
    assert {"the", "Service", "EndpointSlice", "endpoint", "port", "type"} <= set(seen), seen


# ------------------------------------------------------------------------ writing


def test_written_scenario_loads_and_expects_proxier_a():
    doc, flow = _terminating_case()
    small = {**doc, "flows": [flow]}
    a = FlowOutcome(frozenset({"x:1"}), probes=8)
    _, svc = target_service(doc, flow)
    pods = [ep["targetRef"]["name"] for sl in slices(doc) for ep in sl["endpoints"]
            if sl["metadata"]["labels"]["kubernetes.io/service-name"] == svc["metadata"]["name"]]
    a = FlowOutcome(frozenset({f"{pods[0]}:8080"}), seen=frozenset({"node-a"}), probes=8)
    b = FlowOutcome(refused=frozenset({"port unreachable"}), probes=4)
    text = scenario_text(small, flow["name"], "answered-vs-not", ("ref", "other"),
                         ({flow["name"]: a}, {flow["name"]: b}), ["Service svc-9"], seed=3)
    assert check_loads(text) is None
    sc = parse_scenario(text)
    assert sc.flows[0].expect == [pods[0]] and sc.flows[0].masq is True
    assert "# ref: answered by" in text and "# other: refused (port unreachable)" in text
    assert "shrunk by removing: Service svc-9" in text


def test_expectation_of_each_outcome():
    doc = CASES[0]
    assert expectation(FlowOutcome(refused=frozenset({"port unreachable"})), doc, "TCP") == {"expect": "reject"}
    assert expectation(FlowOutcome(silent=4), doc, "UDP") == {"expect": "drop"}
    assert expectation(FlowOutcome(refused=frozenset({"reset"})), doc, "TCP") == {"expect": {"untouched": "reset"}}
    assert expectation(FlowOutcome(frozenset({"not-an-endpoint:80"})), doc, "TCP") == {"expect": {"untouched": "any"}}


# ------------------------------------------------------------------------ the campaign


def test_a_disagreement_not_reproduced_on_a_second_run_is_counted_apart(tmp_path):
    from harness.diff.campaign import Campaign, Side
    from harness.diff.run import CaseRun
    from harness.options import ClusterOptions

    doc = CASES[0]
    name = doc["flows"][0]["name"]
    answered = FlowOutcome(frozenset({"x:1"}), probes=21)
    silent = FlowOutcome(silent=21, probes=21)
    runs = iter([(answered, silent), (answered, answered)])  # then agreement

    class Stub(Campaign):
        def run_both(self, d):
            a, b = next(runs)
            return CaseRun({name: a}), CaseRun({name: b})

    side = Side("x", ClusterOptions(), frozenset())
    camp = Stub(side, Side("y", ClusterOptions(), frozenset()), 1, 60, tmp_path, say=lambda t: None)
    camp.one_case(doc, set())
    s = camp.summary()
    assert s["disagreements"] == {} and s["not_reproduced"] == {"answered-vs-not": 1}
    assert s["scenarios"] == [] and camp.findings[0].reproduced is False


def _stub_campaign(tmp_path, doc, outcomes, flow_name):
    from harness.diff.campaign import Campaign, Side
    from harness.diff.run import CaseRun
    from harness.options import ClusterOptions

    runs = iter(outcomes)

    class Stub(Campaign):
        def run_both(self, d):
            a, b = next(runs)
            return CaseRun({flow_name: a}), CaseRun({flow_name: b})

        def shrink_and_write(self, f, doc, outcomes):  # the confirmation is under test
            f.scenario = "shrunk.yaml"

    return Stub(Side("x", ClusterOptions(), frozenset()), Side("y", ClusterOptions(), frozenset()),
                1, 60, tmp_path, say=lambda t: None)


def _affinity_case():
    for doc in CASES:
        for flow in doc["flows"]:
            if flow_facts(doc, flow).get("affinity"):
                return {**doc, "flows": [flow]}, flow["name"]
    raise AssertionError("no generated case has a flow to a ClientIP-affinity Service")


def test_an_affinity_flow_must_disagree_the_same_way_on_every_confirming_run(tmp_path):
    from harness.diff.campaign import STICKY_RUNS

    doc, name = _affinity_case()
    yes = FlowOutcome(frozenset({"x:1"}), probes=21)
    no = FlowOutcome(silent=21, probes=21)
    # the draws flip on the third re-run: A silent and B answered is not the same finding
    camp = _stub_campaign(tmp_path, doc, [(yes, no), (yes, no), (yes, no), (no, yes), (yes, no)], name)
    camp.one_case(doc, set())
    assert camp.findings[0].reproduced is False and camp.summary()["not_reproduced"] == {"answered-vs-not": 1}

    camp = _stub_campaign(tmp_path, doc, [(yes, no)] * (1 + STICKY_RUNS), name)
    camp.one_case(doc, set())
    s = camp.summary()
    assert camp.findings[0].reproduced is True
    assert s["confirmed"] == s["disagreements"] == {"answered-vs-not": 1}


def test_a_flow_without_affinity_is_confirmed_by_one_more_run(tmp_path):
    doc, flow = next((d, f) for d in CASES for f in d["flows"]
                     if not flow_facts(d, f).get("affinity"))
    doc = {**doc, "flows": [flow]}
    yes = FlowOutcome(frozenset({"x:1"}), probes=21)
    no = FlowOutcome(silent=21, probes=21)
    camp = _stub_campaign(tmp_path, doc, [(yes, no), (yes, no)], flow["name"])
    camp.one_case(doc, set())
    assert camp.findings[0].reproduced is True and camp.summary()["confirmed"] == {"answered-vs-not": 1}
