"""A scenario reports every flow: the runner's dependency rule, the JSON record's ``flows``
and the HTML report's per-flow table (issue 16)."""

from __future__ import annotations

from harness.flowcheck import FlowResult, dependent_flows
from harness.report import render_html
from harness.reporting import grade_record
from harness.scenario import Flow
from harness.verdicts import Verdict
from tests.unit.test_reporting import check, phase


def flow(name: str, sport: int | None = None) -> Flow:
    return Flow(name, "client", "UDP", "10.96.0.10", 53, ["web-0"], sport=sport, line=7)


def test_later_steps_depend_on_a_failed_flow_only_through_its_connection():
    a, b = flow("a", sport=41000), flow("b")
    assert dependent_flows([a, b], [flow("later", sport=41000)]) == [a]
    assert dependent_flows([a, b], [flow("later"), flow("other", sport=41001)]) == []


def test_flow_result_record():
    ok = FlowResult(flow("a"), "flows", [Verdict("a: outcome", True, "x", "4x REPLY pod=web-0")])
    bad = FlowResult(flow("b"), "after", [Verdict("b: outcome", False, "x", "4x TIMEOUT",
                                                  ["4/4 probes violate it"])])
    skipped = FlowResult(flow("c"), "after", not_run="not run: depends on 'b'")
    assert [r.outcome for r in (ok, bad, skipped)] == ["passed", "failed", "not run"]
    d = bad.to_dict()
    assert d["name"] == "b" and d["step"] == "after" and d["line"] == 7
    assert d["expected"] == "{web-0}" and d["observed"] == "4x TIMEOUT"
    assert d["failures"] == ["b: outcome: 4/4 probes violate it"]


def test_flows_reach_the_json_record_and_the_html_table():
    flows = [FlowResult(flow("first flow"), "flows",
                        [Verdict("first flow: outcome", True, "x", "4x REPLY")]).to_dict(),
             FlowResult(flow("second flow"), "flows",
                        [Verdict("second flow: masq true", False, "x", "seen 192.0.2.101",
                                 ["pod saw the client"])]).to_dict()]
    rec = grade_record("scenarios/bugs/x.yaml::x", {
        "setup": phase("setup"), "call": phase("call", "failed", text="2 flows",
                                               props=[("flows", flows)]),
        "teardown": phase("teardown")})
    assert rec["flows"] == flows and "flows" not in rec["properties"]
    html = render_html({"environment": {}, "checks": [check("x.yaml::x", "fail", flows=flows)]})
    assert "1 passed, 1 failed" in html
    assert "first flow" in html and "second flow" in html and "pod saw the client" in html
