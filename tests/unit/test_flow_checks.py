"""Every key a scenario flow accepts is checked on every kind of flow, or refused.

For each kind of flow (plain endpoints, a fixed source port, reject, drop, untouched,
distribution, affinity) and each key the loader accepts (``harness.scenario.FLOW_KEYS``):
either the loader refuses the key on that kind (a ``ScenarioError`` naming file and line),
or a flow with a wrong value for the key fails against the probes a correct proxier gives
for the right value (``harness.flowcheck.flow_verdicts``; for ``interval``: the probe plan
differs). A new key without a check fails ``test_every_key_has_a_plant``.

The probes are simulated (``simulate``): no root, no sockets.
"""

from __future__ import annotations

import textwrap
from itertools import count as counter
from typing import Any

import pytest
import yaml

from harness.flowcheck import KEY_CHECKS, FlowContext, flow_verdicts, probe_plan
from harness.scenario import FLOW_KEYS, Flow, Scenario, ScenarioError, endpoint_pod, parse_scenario
from harness.topology.spec import validate
from harness.traffic.probe import Observation, Outcome

HEAD = textwrap.dedent("""\
    description: flow checks
    objects:
      - apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: default}
        spec:
          clusterIP: 10.96.0.20
          ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080},
                  {name: dns, port: 53, protocol: UDP, targetPort: 8053}]
      - apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-abc
          namespace: default
          labels: {kubernetes.io/service-name: web}
        addressType: IPv4
        endpoints:
          - {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: node-a,
             targetRef: {kind: Pod, name: web-0, namespace: default}}
          - {addresses: [10.244.2.5], conditions: {ready: true}, nodeName: node-b,
             targetRef: {kind: Pod, name: web-1, namespace: default}}
          - {addresses: [10.244.2.6], conditions: {ready: true}, nodeName: node-b,
             targetRef: {kind: Pod, name: web-2, namespace: default}}
        ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 8053, protocol: UDP}]
    topology:
      clients: [{name: client, extra_addresses: 24}]
    """)

BASE = {"name": "f", "from": "client", "to": "10.96.0.20", "port": 80}
KINDS: dict[str, dict[str, Any]] = {
    "endpoints": {"expect": ["web-0", "web-1"], "count": 4},
    "endpoints-ip:port": {"expect": ["10.244.1.5:8080", "10.244.2.5:8080"], "count": 4},
    "sport": {"expect": ["web-0", "web-1"], "sport": 41000, "count": 2},
    "reject": {"expect": "reject"},
    "drop": {"expect": "drop"},
    "untouched-reject": {"expect": {"untouched": "reject"}},
    "untouched-reset": {"expect": {"untouched": "reset"}},
    "untouched-drop": {"expect": {"untouched": "drop"}},
    "untouched-any": {"expect": {"untouched": "any"}},
    "distribution": {"expect": ["web-0", "web-1"], "distribution": "uniform", "count": 40},
    "affinity": {"expect": ["web-0", "web-1"], "affinity": True, "count": 3},
}
# the addresses the client has (HEAD's topology: 1 + 24 extra)
_SC = parse_scenario(HEAD + "flows:\n  - {name: x, from: client, to: 10.96.0.20, port: 80, "
                     "expect: drop}\n", "flows.yaml")
_CLIENT = [str(a) for a in (validate(_SC.topology).clients["client"][0],
                            *validate(_SC.topology).clients["client"][1])]

# key -> (right value, wrong value); None: special (see plant)
PLANTS: dict[str, tuple[Any, Any] | None] = {
    "from": ("client", "node-a"),
    "to": ("10.96.0.20", "10.96.0.21"),
    "port": (80, 81),
    "protocol": ("TCP", "UDP"),
    "sport": (41000, 41001),
    "count": (3, 5),
    "source": (_CLIENT[1], _CLIENT[2]),
    "expect": None,
    "masq": (True, False),
    "distribution": None,
    "affinity": None,
    "interval": (0.5, 1.0),
    "reach": None,
    # keys that relate flows or scope them: a dedicated test each (DEDICATED)
    "endpoint_of": None, "connection": None, "inject": None, "requires": None,
    "known_gap": None,
}
DEDICATED = {"endpoint_of": "test_endpoint_of_checks_each_relation",
             "connection": "test_connection_flows_are_checked_and_refused_where_meaningless",
             "inject": "test_inject_verdict",
             "requires": "test_requires_and_known_gap_scope_a_flow",
             "known_gap": "test_requires_and_known_gap_scope_a_flow"}


def load(flow: dict[str, Any]) -> tuple[Scenario, Flow]:
    text = HEAD + "flows:\n  - " + yaml.safe_dump(flow, default_flow_style=True, width=10_000)
    sc = parse_scenario(text, "flows.yaml")
    return sc, sc.flows[0]


def context(sc: Scenario, f: Flow) -> FlowContext:
    """What the runner resolves for a flow (harness.scenario_plugin._Runner._context)."""
    res = validate(sc.topology)
    nodes = {n: str(rn.lan_ip) for n, rn in res.nodes.items()}
    hosts = {c: [str(ip), *map(str, extra)] for c, (ip, extra) in res.clients.items()}
    hosts |= {n: [str(rn.lan_ip), str(rn.gateway)] for n, rn in res.nodes.items()}
    dst = nodes.get(f.to, f.to)
    pods = tuple(endpoint_pod(sc.topology, e) for e in f.expect) if isinstance(f.expect, list) else ()
    node_addrs = frozenset(a for n, rn in res.nodes.items() for a in (str(rn.lan_ip), str(rn.gateway)))
    own = frozenset(p.name for p in sc.topology.pods if p.ip == dst)
    return FlowContext(dst, (f.source,) if f.source else tuple(hosts[f.src]), pods, node_addrs, own)


def simulate(sc: Scenario, f: Flow, *, sticky: bool | None = None, skew: bool = False,
             pod_port: int | None = None) -> list[Observation]:
    """The probes a correct proxier answers for flow ``f``: round robin over the expected
    pods (``skew``: always the first; ``sticky``: one pod per source address, the default
    for affinity flows), the pod sees a node address when masq is true."""
    ctx = context(sc, f)
    pods = list(dict.fromkeys(ctx.expected_pods))
    sticky = f.affinity if sticky is None else sticky
    node = sorted(ctx.node_addresses)[0]
    ports = iter(range(50000, 60000))
    rr = counter()
    sources: dict[str, int] = {}
    out = []
    for call in probe_plan(f, ctx):
        for _ in range(call.count):
            src = call.source or ctx.src_addresses[0]
            sport = call.sport or next(ports)
            kw: dict[str, Any] = {}
            if pods:
                i = 0 if skew else sources.setdefault(src, len(sources)) if sticky else next(rr)
                seen = node if f.masq else src
                kw = {"pod": pods[i % len(pods)], "seen_src": seen, "seen_sport": sport,
                      "pod_port": pod_port or (8080 if f.protocol == "TCP" else 8053)}
                outcome = Outcome.REPLY
            elif f.expect == "reject":
                outcome, kw = Outcome.ICMP, {"icmp_type": 3, "icmp_code": 3}
            elif f.expect == "drop":
                outcome = Outcome.TIMEOUT
            elif f.untouched == "drop":
                outcome = Outcome.TIMEOUT
            elif f.untouched == "reject" or f.protocol != "TCP":
                outcome, kw = Outcome.ICMP, {"icmp_type": 3, "icmp_code": 3}
            else:  # reset, or any: the destination (no pod there) answers as a host does
                outcome = Outcome.RESET
            out.append(Observation(outcome, src, sport, ctx.dst, f.port, f.protocol.lower(), **kw))
    return out


def failed(sc: Scenario, f: Flow, obs: list[Observation]) -> list[str]:
    return [v.check for v in flow_verdicts(f, obs, context(sc, f)) if not v.passed]


def accepted(flow: dict[str, Any]) -> bool:
    try:
        load(flow)
    except ScenarioError as e:
        assert e.line and str(e).startswith("flows.yaml:"), f"no file and line in {e}"
        return False
    return True


def test_every_key_has_a_plant():
    assert set(FLOW_KEYS) == set(KEY_CHECKS), "a flow key without a check in harness.flowcheck"
    assert set(FLOW_KEYS) - {"name"} == set(PLANTS), "a flow key without a plant in this test"


@pytest.mark.parametrize("kind", KINDS)
def test_a_correct_proxier_passes_every_kind(kind):
    flow = {**BASE, **KINDS[kind]}
    if kind in ("endpoints", "distribution", "affinity"):
        flow["masq"] = False
    sc, f = load(flow)
    assert failed(sc, f, simulate(sc, f)) == []


def _statistical_plant(kind: str, key: str) -> tuple[dict, dict, dict] | None:
    """distribution/affinity: the truth is a plain flow whose proxier is skewed (not
    sticky); the plant says uniform (affinity)."""
    truth = {**BASE, **KINDS[kind]}
    truth.pop("distribution", None)
    truth.pop("affinity", None)
    truth.pop("sport", None)
    truth.pop("interval", None)
    if key == "distribution":
        return truth, {**truth, "distribution": "uniform", "count": 40}, {"skew": True}
    return truth, {**truth, "affinity": True, "count": 3}, {"sticky": False}


@pytest.mark.parametrize("key", sorted(PLANTS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_value_fails_or_is_refused(kind, key):
    base = {**BASE, **KINDS[kind]}
    sim: dict[str, Any] = {}
    if key in DEDICATED:
        assert callable(globals().get(DEDICATED[key])), f"{key}: no {DEDICATED[key]}"
        return
    if PLANTS[key] is None and key == "expect":
        if isinstance(base["expect"], list) and ":" in base["expect"][0]:
            wrong: Any = ["10.244.1.5:8080", "10.244.2.6:8080"]  # the proxier also sends to web-1
        elif isinstance(base["expect"], list):
            wrong = ["web-0", "web-2"]  # the proxier also sends to web-1
        elif isinstance(base["expect"], dict):
            wrong = {"untouched": {"reject": "reset", "reset": "drop", "drop": "reject",
                                   "any": "reject"}[base["expect"]["untouched"]]}
        else:
            wrong = {"reject": "drop", "drop": "reject"}[base["expect"]]
        truth, planted = base, {**base, "expect": wrong}
    elif key == "reach":
        if not isinstance(base["expect"], list) or any(k in base for k in ("sport", "distribution", "affinity")):
            assert not accepted({**base, "reach": "all"}), f"reach accepted on a {kind} flow"
            return
        truth, planted, sim = base, {**base, "reach": "all", "count": base["count"]}, {"skew": True}
    elif PLANTS[key] is None:
        if key not in base and (not isinstance(base["expect"], list) or "sport" in base or any(
                k in base for k in ("distribution", "affinity"))):
            # refused: statistical checks need endpoints, many connections, one of the two
            other = {**base, key: "uniform" if key == "distribution" else True}
            assert not accepted(other), f"{key} accepted on a {kind} flow"
            return
        truth, planted, sim = _statistical_plant(kind, key)
    else:
        right, wrong = PLANTS[key]
        truth = {**base, key: right}
        if key == "count" and kind == "sport":
            truth = {**base, key: 2}
        planted = {**truth, key: wrong}
    if not accepted(truth):
        assert not accepted(planted), f"{key} refused with the right value but not the wrong"
        return  # the loader refuses the key on this kind of flow: fine, it said so
    if not accepted(planted):
        return  # the loader refuses the wrong value (e.g. protocol UDP with untouched: reset)
    sc, f_truth = load(truth)
    _, f_planted = load(planted)
    if key == "interval":
        ctx = context(sc, f_truth)
        assert probe_plan(f_truth, ctx) != probe_plan(f_planted, ctx)
        return
    obs = simulate(sc, f_truth, **sim)
    assert failed(sc, f_truth, obs) == [], "the simulated proxier is not correct for the truth"
    assert failed(sc, f_planted, obs), (
        f"{kind} flow with a wrong {key} ({planted[key]!r}, truth {truth.get(key)!r}) passed")


def test_masq_is_checked_on_statistical_flows():
    """The defect of issue 16: masq on distribution and affinity flows was never checked."""
    for kind in ("distribution", "affinity"):
        sc, f = load({**BASE, **KINDS[kind], "masq": False})
        obs = simulate(sc, f)
        _, wrong = load({**BASE, **KINDS[kind], "masq": True})
        assert any("masq" in c for c in failed(sc, wrong, obs)), kind


@pytest.mark.parametrize("kind", ["endpoints", "sport", "distribution", "affinity"])
def test_the_target_port_is_checked(kind):
    """expect: ["ip:port"] checks the port the pod was reached on, not only the pod."""
    flow = {**BASE, **KINDS[kind], "expect": ["10.244.1.5:8080", "10.244.2.5:8080"]}
    sc, f = load(flow)
    assert failed(sc, f, simulate(sc, f)) == []
    assert failed(sc, f, simulate(sc, f, pod_port=8053)) == ["f: target port"]
    # pods named without a port: any port will do
    sc, f = load({**flow, "expect": ["web-0", "web-1"]})
    assert failed(sc, f, simulate(sc, f, pod_port=8053)) == []


def test_reach_all_probe_counts_and_false_failure():
    from harness.verdicts import reach_false_failure, reach_samples

    assert [reach_samples(n) for n in (1, 2, 3, 5, 10)] == [1, 21, 37, 70, 153]
    for n in (2, 3, 5, 10):
        assert reach_false_failure(n, reach_samples(n)) <= 1e-6 < reach_false_failure(n, reach_samples(n) - 1)
    sc, f = load({**BASE, "expect": ["web-0", "web-1", "web-2"], "reach": "all"})
    ctx = context(sc, f)
    assert sum(c.count for c in probe_plan(f, ctx)) == 37
    assert failed(sc, f, simulate(sc, f)) == []
    v = [v for v in flow_verdicts(f, simulate(sc, f, skew=True), ctx) if not v.passed]
    assert [x.check for x in v] == ["f: reach all"] and "web-1" in v[0].failures[0]


# ------------------------------------------------------- flows that relate or are scoped


def load_all(flows: list[dict[str, Any]]) -> Scenario:
    text = HEAD + "flows:\n" + "".join(
        "  - " + yaml.safe_dump(f, default_flow_style=True, width=10_000) for f in flows)
    return parse_scenario(text, "flows.yaml")


def _related(obs: list[Observation]) -> tuple[tuple[str, frozenset[str]], ...]:
    out: dict[str, set[str]] = {}
    for o in obs:
        out.setdefault(o.src, set()).add(str(o.pod))
    return tuple((a, frozenset(p)) for a, p in out.items())


def test_endpoint_of_checks_each_relation():
    from dataclasses import replace

    pods = ["web-0", "web-1", "web-2"]
    a = {**BASE, "name": "a", "expect": pods, "affinity": True, "count": 2}
    for rel in ("same", "different", "independent"):
        b = {**BASE, "name": "b", "port": 53, "protocol": "UDP", "expect": pods,
             "affinity": True, "count": 2, "endpoint_of": {"flow": "a", "is": rel}}
        sc = load_all([a, b])
        fa, fb = sc.flows
        obs_a = simulate(sc, fa)  # address i -> pods[i % 3]
        ctx = replace(context(sc, fb), related=_related(obs_a))
        same = simulate(sc, fb)  # the same assignment: every address on a's pod
        moved = [replace(o, pod=pods[(pods.index(o.pod) + 1) % 3]) for o in same]

        def bad(obs, fb=fb, ctx=ctx):
            return [v.check for v in flow_verdicts(fb, obs, ctx) if not v.passed]
        check = f"b: endpoint {rel} of 'a'"
        if rel == "same":
            assert bad(same) == [] and check in bad(moved)
        elif rel == "different":
            assert bad(moved) == [] and check in bad(same)
        else:
            assert bad(moved) == [] and check in bad(same)
            # per address: stuck on one pod each, and some addresses on a's pod -> passes
            order = list(dict.fromkeys(o.src for o in same))
            sticky_mixed = [replace(o, pod=pods[(pods.index(o.pod) + order.index(o.src) % 2) % 3])
                            for o in same]
            assert bad(sticky_mixed) == []
            few = replace(ctx, related=_related(obs_a)[:3])  # 3 addresses: 3^-3 > 1e-6
            v = [v for v in flow_verdicts(fb, moved, few) if v.check == check][0]
            assert not v.passed and "inconclusive" in v.failures[0]
    # refused: an unknown flow, a later flow, a flow without endpoints, an unknown relation
    for flows in ([{**BASE, "name": "b", "expect": pods, "endpoint_of": {"flow": "zz", "is": "same"}}],
                  [{**BASE, "name": "b", "expect": pods, "endpoint_of": {"flow": "a", "is": "same"}}, a],
                  [{**BASE, "name": "a", "expect": "drop"},
                   {**BASE, "name": "b", "expect": pods, "endpoint_of": {"flow": "a", "is": "same"}}],
                  [a, {**BASE, "name": "b", "expect": pods, "endpoint_of": {"flow": "a", "is": "equal"}}]):
        with pytest.raises(ScenarioError, match=r"flows.yaml:\d+"):
            load_all(flows)


def test_connection_flows_are_checked_and_refused_where_meaningless():
    from dataclasses import replace

    opener = {**BASE, "name": "o", "expect": ["web-0", "web-1"], "connection": "c", "count": 3}
    later = {**BASE, "name": "l", "expect": ["web-0", "web-1"], "connection": "c"}
    sc = load_all([opener, later])
    fo, fl = sc.flows
    assert fo.opens and not fl.opens and fl.count == 3
    obs = simulate(sc, fl)
    assert failed(sc, fl, obs) == []
    broken = [replace(obs[0], outcome=Outcome.RESET, pod=None, seen_src=None), *obs[1:]]
    assert "l: outcome" in failed(sc, fl, broken)
    assert "l: probes" in failed(sc, fl, obs[:2])  # a connection missing
    for flows in ([{**opener, "protocol": "UDP", "port": 53}],
                  [{**opener, "expect": "drop"}],
                  [{**opener, "sport": 41000}],
                  [{**opener, "distribution": "uniform"}],
                  [opener, {**later, "port": 53, "protocol": "TCP"}],
                  [opener, {**later, "count": 2}]):
        with pytest.raises(ScenarioError, match=r"flows.yaml:\d+"):
            load_all(flows)


def test_inject_verdict():
    from dataclasses import replace

    flows = [{**BASE, "name": "o", "expect": ["web-0"], "connection": "c", "count": 2},
             {**BASE, "name": "i", "expect": ["web-0"], "connection": "c", "inject": "out-of-window"}]
    sc = load_all(flows)
    f = sc.flows[1]
    obs = simulate(sc, f)
    ctx = context(sc, f)

    def bad(injected):
        return [v.check for v in flow_verdicts(f, obs, replace(ctx, injected=injected)) if not v.passed]
    assert bad((2, ())) == []
    assert bad((2, ("10.244.1.5:8080 -> 192.0.2.101:40000",))) == ["i: inject out-of-window"]
    assert bad((1, ())) == ["i: inject out-of-window"]  # a connection got no segment
    with pytest.raises(ScenarioError, match="needs a connection"):
        load_all([{**BASE, "name": "i", "expect": ["web-0"], "inject": "out-of-window"}])
    with pytest.raises(ScenarioError, match="inject 'rst'"):
        load_all([{**flows[0], "inject": "rst"}])


def test_http_expect_checks_the_status():
    from harness.flowcheck import HttpObservation

    sc = load_all([{**BASE, "name": "h", "to": "node-a", "port": 32000, "expect": {"http": 503}}])
    f = sc.flows[0]
    ctx = context(sc, f)

    def answers(status):
        return [HttpObservation(Outcome.REPLY, _CLIENT[0], 40000 + i, ctx.dst, 32000, status=status,
                                body='{"localEndpoints": 0}') for i in range(4)]
    assert [v.check for v in flow_verdicts(f, answers(503), ctx) if not v.passed] == []
    assert [v.check for v in flow_verdicts(f, answers(200), ctx) if not v.passed] == ["h: outcome http"]
    refused = [HttpObservation(Outcome.RESET, _CLIENT[0], 40000, ctx.dst, 32000)] * 4
    assert "h: outcome http" in [v.check for v in flow_verdicts(f, refused, ctx) if not v.passed]
    for bad in ({"expect": {"http": 503}, "masq": True}, {"expect": {"http": 99}},
                {"expect": {"http": 503}, "protocol": "UDP"}, {"expect": {"http": 503}, "sport": 41000}):
        with pytest.raises(ScenarioError, match=r"flows.yaml:\d+"):
            load_all([{**BASE, "name": "h", "to": "node-a", "port": 32000, **bad}])


def test_requires_and_known_gap_scope_a_flow():
    from harness.flowcheck import FlowResult
    from harness.verdicts import Verdict

    sc = load_all([{**BASE, "name": "g", "expect": "drop", "requires": ["invalid-drop"],
                    "known_gap": [{"proxier": "reference-nft", "reason": "https://example.org/x"}]}])
    f = sc.flows[0]
    assert f.requires == ["invalid-drop"] and "reference-nft" in f.known_gaps
    ok, bad = Verdict("g: outcome", True, "", ""), Verdict("g: outcome", False, "", "")
    assert FlowResult(f, "s", [bad], skipped="skipped: no invalid-drop").outcome == "skipped"
    assert FlowResult(f, "s", [bad], gap="why").outcome == "known gap"
    assert FlowResult(f, "s", [ok], gap="why").outcome == "failed"  # strict: a stale gap
    assert FlowResult(f, "s", [bad]).outcome == "failed"
    for extra in ({"requires": ["teleport"]},
                  {"known_gap": [{"proxier": "x", "reason": "no link"}]},
                  {"known_gap": [{"proxier": "x", "reason": "https://a"}, {"proxier": "x", "reason": "https://b"}]}):
        with pytest.raises(ScenarioError, match=r"flows.yaml:\d+"):
            load_all([{**BASE, "name": "g", "expect": "drop", **extra}])


def test_sctp_ports_are_left_out_of_listeners_without_sctp_sockets():
    from harness.scenario_plugin import without_sctp_listeners

    sc = load_all([{**BASE, "name": "x", "expect": "drop"}])
    topo = sc.topology
    from dataclasses import replace
    topo = replace(topo, pods=tuple(replace(p, ports=(*p.ports, (9090, "sctp"))) for p in topo.pods))
    out = without_sctp_listeners(topo)
    assert all(pp[1] != "sctp" for p in out.pods for pp in p.ports)
    assert [p.name for p in out.pods] == [p.name for p in topo.pods]
