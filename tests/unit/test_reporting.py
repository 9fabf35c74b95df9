"""Reports, root-free: grading, the HTML report, the matrix, known gaps, and the plugin
end to end in a child pytest (with and without xdist)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness.report import (
    aggregate,
    build_matrix,
    load_report,
    render_html,
    render_matrix_html,
    render_matrix_markdown,
    run_label,
)
from harness.report.__main__ import main as report_main
from harness.report.gaps import KnownGapsError, load_known_gaps, scan_behavior_ids
from harness.report.svg import distribution_rows
from harness.reporting import grade_record

ROOT = Path(__file__).resolve().parents[2]

STATS = {
    "check": "uniform over 3 endpoints", "passed": False, "expected": "uniform",
    "observed": "pod-c never answered", "failures": ["pod-c never answered"], "alpha": 1e-6,
    "power": {"cascade-1/n": 0.999}, "statistic": 40.2, "p_value": 1e-9, "sample_size": 300,
    "per_endpoint": [{"endpoint": "pod-a", "observed": 150, "expected": 100.0},
                     {"endpoint": "pod-b", "observed": 150, "expected": 100.0},
                     {"endpoint": "pod-c", "observed": 0, "expected": 100.0}],
    "notes": [], "probes": [{"src": "10.0.0.1", "sport": 4000, "dst": "10.96.0.10", "dport": 80,
                             "proto": "tcp", "outcome": "reply", "pod": "pod-a"}],
}


def check(nodeid: str, grade: str, **kw: Any) -> dict[str, Any]:
    rec = {"nodeid": nodeid, "behavior": None, "must": None, "ref": None, "features": [],
           "grade": grade, "reason": None, "outcome": grade, "phase": "call", "duration": 0.5,
           "message": None, "summary": None, "evidence": {}, "captured": {}, "statistics": [],
           "observations": None, "known_gap": None, "properties": {}}
    rec.update(kw)
    return rec


def sample_report(proxier: str = "reference", flavour: str = "nft", kernel: str = "6.1.0",
                  dist_grade: str = "fail") -> dict[str, Any]:
    return {
        "schema": 2, "complete": True, "started": "2026-11-24T20:00:00Z", "duration": 12.5,
        "seed": 42, "exitstatus": 1, "known_gaps_file": None,
        "environment": {"kernel": kernel, "iptables_flavour": flavour, "proxier": proxier,
                        "nft": "nftables v1.0.6", "capabilities": ["acks", "affinity"]},
        "checks": [
            check("conformance/test_distribution.py::test_uniform[3]", dist_grade,
                  behavior="service/loadbalancing/uniform-over-endpoints",
                  must="New connections MUST be spread <uniformly>.", features=["distribution"],
                  message="AssertionError: pod-c never answered", summary="AssertionError: skew",
                  evidence={"proxier log, node node1 (last lines)": "sync failed <KUBE-SVC-X>",
                            "rules on node node1": "-A KUBE-SVC-X -m statistic --probability 0.33"},
                  statistics=[STATS]),
            check("conformance/test_distribution.py::test_uniform[2]", "pass",
                  behavior="service/loadbalancing/uniform-over-endpoints",
                  features=["distribution"], statistics=[{"per_endpoint": "garbage", "alpha": "x"}]),
            check("conformance/test_affinity.py::test_sticky", "xfail",
                  behavior="service/affinity/clientip-sticky", features=["affinity", "nodeport"],
                  reason="known gap (gaps.yaml): not implemented",
                  known_gap={"behavior": "service/affinity/clientip-sticky",
                             "reason": "not implemented", "link": "https://example.com/1"}),
            check("conformance/test_dnat.py::test_v6", "skip", behavior="service/dnat/ipv6",
                  features=["dnat"], reason="proxier 'x' does not declare ipv6"),
            check("conformance/test_dnat.py::test_latency", "informational",
                  behavior="service/dnat/latency", features=["dnat"], message="p99 4.2 ms",
                  statistics=[{"per_endpoint": [{"endpoint": "a", "observed": 3}]}]),
        ],
    }


# --- grading -------------------------------------------------------------------------------

def phase(when: str, outcome: str = "passed", **kw: Any) -> dict[str, Any]:
    info = {"when": when, "outcome": outcome, "wasxfail": None, "skip_reason": None,
            "text": None, "duration": 0.1, "sections": [], "props": [], "crash": None}
    info.update(kw)
    return info


def test_grade_pass_with_statistics_and_properties() -> None:
    rec = grade_record("t::a", {
        "setup": phase("setup", props=[("behavior", "b/x"), ("features", ["dnat"])]),
        "call": phase("call", props=[("behavior", "b/x"), ("statistics", {"p": 1}),
                                     ("statistics", {"p": 2}), ("latency_ms", 3)]),
        "teardown": phase("teardown")})
    assert rec["grade"] == "pass" and rec["behavior"] == "b/x" and rec["features"] == ["dnat"]
    assert rec["statistics"] == [{"p": 1}, {"p": 2}]
    assert rec["properties"] == {"latency_ms": 3}
    assert rec["duration"] == pytest.approx(0.3)


def test_grade_skip_in_setup_keeps_reason() -> None:
    rec = grade_record("t::a", {"setup": phase("setup", "skipped", skip_reason="no ipv6"),
                                "teardown": phase("teardown")})
    assert (rec["grade"], rec["reason"], rec["phase"], rec["message"]) == ("skip", "no ipv6", "setup", None)


def test_grade_xfail_and_setup_error_and_teardown_error() -> None:
    x = grade_record("t::a", {"call": phase("call", "skipped", wasxfail="known gap", text="boom"),
                              "teardown": phase("teardown")})
    assert (x["grade"], x["reason"], x["outcome"]) == ("xfail", "known gap", "xfail")
    s = grade_record("t::a", {"setup": phase("setup", "failed", text="fixture broke", crash="E: broke"),
                              "teardown": phase("teardown")})
    assert s["grade"] == "fail" and s["message"].startswith("error in setup") and s["summary"] == "E: broke"
    t = grade_record("t::a", {"call": phase("call"),
                              "teardown": phase("teardown", "failed", text="left a netns")})
    assert (t["grade"], t["phase"]) == ("fail", "teardown") and "left a netns" in t["message"]


def test_grade_crashed_worker_report() -> None:
    rec = grade_record("t::a", {"???": phase("???", "failed", text="worker 'gw0' crashed")})
    assert (rec["grade"], rec["phase"]) == ("fail", "???") and "crashed" in rec["message"]


def test_grade_informational_carries_its_message_and_evidence() -> None:
    rec = grade_record("t::a", {"call": phase("call", props=[
        ("informational", True), ("informational_message", "would fail: p99 high")],
        sections=[("rules on node n1", "-A X"), ("Captured stdout call", "hi")]),
        "teardown": phase("teardown")})
    assert rec["grade"] == "informational" and rec["message"] == "would fail: p99 high"
    assert rec["evidence"] == {"rules on node n1": "-A X"}
    assert rec["captured"] == {"Captured stdout call": "hi"}


def test_passing_check_keeps_only_packet_traces() -> None:
    rec = grade_record("t::a", {"call": phase("call", sections=[
        ("rules on node n1", "-A X"), ("packet trace, ns: ip daddr 1.2.3.4", "trace id 1")]),
        "teardown": phase("teardown")})
    assert rec["evidence"] == {"packet trace, ns: ip daddr 1.2.3.4": "trace id 1"}


# --- HTML ----------------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link", "rect", "line", "circle", "path"}


class Checker(HTMLParser):
    """Collects text, tags and unbalanced elements (html.parser does not validate)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: dict[str, int] = {}
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.attrs.extend(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Checker:
    c = Checker()
    c.feed(html)
    c.close()
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed: {c.stack}"
    return c


def test_html_renders_summary_evidence_and_chart() -> None:
    html = render_html(sample_report())
    c = parse(html)
    text = "".join(c.text)
    # evidence, escaped, folded under the failure
    assert "sync failed <KUBE-SVC-X>" in text and "&lt;KUBE-SVC-X&gt;" in html
    assert "-A KUBE-SVC-X -m statistic --probability 0.33" in text
    assert "MUST be spread <uniformly>." in text
    assert c.tags["details"] >= 4 and c.tags["svg"] >= 1
    assert 'class="bar bad"' in html  # pod-c (0 of expected 100) is outside its band
    # graded outcomes with reasons
    assert "known gap (gaps.yaml): not implemented" in text and "https://example.com/1" in html
    assert "proxier 'x' does not declare ipv6" in text
    assert "p99 4.2 ms" in text
    # summary by feature: affinity's check also counts under nodeport
    for feature in ("distribution", "affinity", "nodeport", "dnat"):
        assert feature in text
    # self-contained: no scripts, no external resources
    assert "<script" not in html and "<link" not in html
    assert not [v for k, v in c.attrs if k == "src"]
    # the title says which run this is, as the matrix labels it
    assert "<title>Service proxy conformance: reference / iptables-nft / 6.1.0</title>" in html


def test_distribution_rows_tolerate_missing_fields() -> None:
    assert distribution_rows({}) == []
    assert distribution_rows({"per_endpoint": "garbage"}) == []
    rows = distribution_rows({"per_endpoint": [{"endpoint": "a", "observed": 3}, {"x": 1}]})
    assert rows == [{"endpoint": "a", "observed": 3.0, "expected": None, "lo": None,
                     "hi": None, "inside": True}]
    rows = distribution_rows(STATS)
    assert [r["inside"] for r in rows] == [False, False, False]
    assert rows[0]["lo"] < 100 < rows[0]["hi"]


def test_html_of_an_empty_and_minimal_report() -> None:
    parse(render_html({"checks": []}))
    parse(render_html({"checks": [{"nodeid": "t::a", "outcome": "passed", "grade": "pass"}]}))


def test_unfinished_report_takes_checks_jsonl(tmp_path: Path) -> None:
    report = sample_report()
    report["complete"] = False
    (tmp_path / "report.json").write_text(json.dumps({**report, "checks": []}))
    lines = [json.dumps(c) for c in report["checks"][:2]]
    (tmp_path / "checks.jsonl").write_text("\n".join(lines) + '\n{"nodeid": "cut sh')
    loaded = load_report(tmp_path / "report.json")
    assert [c["nodeid"] for c in loaded["checks"]] == [c["nodeid"] for c in report["checks"][:2]]
    assert "did not finish" in render_html(loaded)


def test_old_records_without_grade_get_one(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"checks": [
        {"nodeid": "a", "outcome": "passed"}, {"nodeid": "b", "outcome": "failed"},
        {"nodeid": "c", "outcome": "xfail"}, {"nodeid": "d", "outcome": "skipped"}]}))
    assert [c["grade"] for c in load_report(tmp_path / "r.json")["checks"]] == [
        "pass", "fail", "xfail", "skip"]


def test_cli_html_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "report.json").write_text(json.dumps(sample_report()))
    assert report_main(["html", str(tmp_path / "report.json"), "-o", str(tmp_path / "x.html")]) == 0
    parse((tmp_path / "x.html").read_text())
    (tmp_path / "bad.json").write_text("{not json")
    assert report_main(["html", str(tmp_path / "bad.json")]) == 2
    assert "bad.json" in capsys.readouterr().err


# --- matrix --------------------------------------------------------------------------------

def test_matrix_behaviours_by_environment(tmp_path: Path) -> None:
    runs = [sample_report("reference", "nft", "6.1.0", dist_grade="pass"),
            sample_report("reference", "legacy", "6.1.0"),
            sample_report("reference", "legacy", "6.1.0")]
    runs[2]["checks"] = runs[2]["checks"][2:]  # this run did not have distribution checks
    paths = []
    for i, r in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(r))
    m = build_matrix(paths)
    labels = [r["label"] for r in m["runs"]]
    assert labels == ["reference / iptables-nft / 6.1.0", "reference / iptables-legacy / 6.1.0",
                      "reference / iptables-legacy / 6.1.0 #2"]
    row = next(r for r in m["rows"] if r["behavior"] == "service/loadbalancing/uniform-over-endpoints")
    assert row["cells"][0]["grade"] == "pass"
    assert row["cells"][1]["grade"] == "fail" and row["cells"][1]["title"] == "1 pass, 1 fail"
    assert row["cells"][2] is None
    md = render_matrix_markdown(m)
    assert md.splitlines()[0].startswith("| behaviour | reference / iptables-nft / 6.1.0 |")
    assert "| `service/affinity/clientip-sticky` | xfail | xfail | xfail |" in md
    parse(render_matrix_html(m))

    out, md_out = tmp_path / "m.html", tmp_path / "m.md"
    assert report_main(["matrix", *map(str, paths), "-o", str(out), "--markdown", str(md_out)]) == 0
    assert md_out.read_text() == md and "uniform-over-endpoints" in out.read_text()


def test_aggregate_and_label() -> None:
    assert aggregate(["pass", "skip", "fail"]) == "fail"
    assert aggregate(["pass", "xfail"]) == "xfail"
    assert aggregate(["skip", "informational"]) == "informational"
    assert run_label({}) == "? / iptables-? / ?"
    env = {"proxier": "reference", "iptables_flavour": "nft", "ip_family": "ipv6", "kernel": "6.1"}
    assert run_label({"environment": env}) == "reference / iptables-nft / IPv6 / 6.1"
    nft = {**env, "proxier": "reference-nft", "iptables_flavour": None, "netfilter": "nftables",
           "ip_family": "ipv4", "control_plane": "api"}
    assert run_label({"environment": nft}) == "reference-nft / nftables / IPv4 / API / 6.1"


# --- known gaps ----------------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gaps.yaml"
    p.write_text(text)
    return p


def test_known_gaps_load(tmp_path: Path) -> None:
    gaps = load_known_gaps(write(tmp_path, "- behavior: a/b\n  reason: r\n  link: https://x/1\n"
                                           "- behavior: c/d\n  reason: later\n"))
    assert [(g.behavior, g.reason, g.link, g.line) for g in gaps] == [
        ("a/b", "r", "https://x/1", 1), ("c/d", "later", None, 4)]
    assert load_known_gaps(write(tmp_path, "# nothing yet\n")) == []
    assert load_known_gaps(ROOT / "known-gaps" / "reference.yaml") == []


@pytest.mark.parametrize("text, where, problem", [
    ("- behavior: a\n  reason: r\n  linx: u\n", ":3", "entry 1: unknown key 'linx'"),
    ("- behavior: a\n", ":1", "entry 1 (a): missing reason"),
    ("- behavior: a\n  reason: r\n- behavior: a\n  reason: s\n", ":3", "already listed at line 1"),
    ("behavior: a\n", ":1", "expected a list"),
    ("- [a, b]\n", ":1", "entry 1 is not a mapping"),
    ("- behavior: [a]\n  reason: r\n", ":1", "'behavior' must be a non-empty string"),
    ("- behavior: a\n reason: [\n", "", "not valid YAML"),
])
def test_known_gaps_errors_name_file_and_entry(tmp_path: Path, text: str, where: str,
                                               problem: str) -> None:
    with pytest.raises(KnownGapsError) as exc:
        load_known_gaps(write(tmp_path, text))
    msg = str(exc.value)
    assert f"{tmp_path / 'gaps.yaml'}{where}" in msg and problem in msg, msg


def test_scan_behavior_ids_reads_the_conformance_suite() -> None:
    ids = scan_behavior_ids({ROOT / "conformance"})
    assert "service/loadbalancing/uniform-over-endpoints" in ids


# --- the plugin end to end, in a child pytest -------------------------------------------------

CHILD_TESTS = '''
import pytest
pytestmark = pytest.mark.distribution

@pytest.mark.behavior("t/dist/uniform", must="MUST spread uniformly.")
@pytest.mark.parametrize("n", [2, 3])
def test_dist(n, record_property):
    record_property("statistics", {"check": "uniform", "per_endpoint": [
        {"endpoint": "a", "observed": 10, "expected": 10.0}]})
    assert n == 2, "skewed"

@pytest.mark.behavior("t/dist/info", must="measured")
@pytest.mark.informational
def test_info():
    assert False, "p99 too high"

@pytest.mark.dnat
@pytest.mark.behavior("t/dnat/v6", must="v6")
def test_skip():
    pytest.skip("no ipv6")

@pytest.mark.affinity
@pytest.mark.behavior("t/aff/sticky", must="sticky")
def test_gap():
    assert False, "not sticky"
'''


def run_child(tmp_path: Path, *args: str, tests: dict[str, str] | None = None) -> tuple[int, str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["harness.plugin"]\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name, text in (tests or {"test_child.py": CHILD_TESTS}).items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           f"--report-dir={tmp_path / 'out'}", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_plugin_grades_and_writes_json_lines_and_html(tmp_path: Path, xdist: list[str]) -> None:
    (tmp_path / "gaps.yaml").write_text("- behavior: t/aff/sticky\n  reason: not yet\n"
                                        "  link: https://example.com/7\n")
    code, out = run_child(tmp_path, "--known-gaps=gaps.yaml", *xdist)
    assert code == 1, out  # test_dist[3] fails; the informational check does not
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    grades = {c["nodeid"].split("::")[1]: c["grade"] for c in report["checks"]}
    assert grades == {"test_dist[2]": "pass", "test_dist[3]": "fail", "test_info": "informational",
                      "test_skip": "skip", "test_gap": "xfail"}
    assert report["complete"] is True and report["summary"]["fail"] == 1
    by = {c["nodeid"].split("::")[1]: c for c in report["checks"]}
    assert by["test_gap"]["known_gap"]["link"] == "https://example.com/7"
    assert "not yet" in by["test_gap"]["reason"]
    assert by["test_skip"]["reason"] == "no ipv6"
    assert "p99 too high" in by["test_info"]["message"]
    assert by["test_dist[3]"]["statistics"][0]["check"] == "uniform"
    assert by["test_dist[3]"]["features"] == ["distribution"]
    assert by["test_gap"]["features"] == ["distribution", "affinity"]
    lines = (tmp_path / "out" / "checks.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["nodeid"] for line in lines) == sorted(c["nodeid"] for c in report["checks"])
    html = (tmp_path / "out" / "report.html").read_text()
    parse(html)
    assert "t/aff/sticky" in html and "skewed" in html


def test_fixed_known_gap_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "gaps.yaml").write_text("- behavior: t/dist/uniform\n  reason: r\n")
    code, out = run_child(tmp_path, "--known-gaps=gaps.yaml", "-k", "test_dist")
    assert code == 1, out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    grades = {c["nodeid"].split("::")[1]: c["grade"] for c in report["checks"]}
    assert grades == {"test_dist[2]": "fail", "test_dist[3]": "xfail"}  # XPASS(strict) fails


def test_unknown_known_gap_id_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "gaps.yaml").write_text("- behavior: t/dist/uniform\n  reason: r\n"
                                        "- behavior: t/no/such-id\n  reason: typo\n")
    code, out = run_child(tmp_path, "--known-gaps=gaps.yaml", "-k", "test_skip")
    assert code == 4, out  # pytest's usage error
    assert "gaps.yaml:3" in out and "'t/no/such-id' is not the behaviour id of any check" in out


KILLER = """
import os, signal

def test_first():
    pass

def test_kill():
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_run_leaves_partial_results(tmp_path: Path) -> None:
    code, out = run_child(tmp_path, "test_killer.py", tests={"test_killer.py": KILLER})
    assert code == -9, out
    report = load_report(tmp_path / "out" / "report.json")
    assert report["complete"] is False
    assert [c["nodeid"] for c in report["checks"]] == ["test_killer.py::test_first"]
    assert "did not finish" in render_html(report)


def test_crashed_xdist_worker_is_a_failed_check(tmp_path: Path) -> None:
    code, out = run_child(tmp_path, "test_killer.py", "-n", "1", tests={"test_killer.py": KILLER})
    assert code == 1, out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    grades = {c["nodeid"]: c["grade"] for c in report["checks"]}
    assert grades == {"test_killer.py::test_first": "pass", "test_killer.py::test_kill": "fail"}
