"""Differential testing finds a planted difference and shrinks it (harness.diff).

A faulty proxier from ``tests/faulty`` (the reference with one defect) runs against the
reference proxier through the command-line front end with a small budget: the run must
report the disagreement in the defect's class (not as a declared difference), shrink it to
a scenario file with one flow, and that file must load, pass on the reference proxier and
fail on the faulty one. Runtime: about a minute on two busy cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.diff.facts import flow_facts

ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = ("acks,localhost-nodeports,masquerade-mark,affinity,reject-no-endpoints,"
                "health-check-nodeport,udp-conntrack-cleanup,ipv6")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def faulty_command(fault: str) -> str:
    return (f"{{python}} -m tests.faulty {fault} run --state-dir {{state_dir}} "
            "--hostname-override {node} --node-ip {node_ip} --cluster-cidr {cluster_cidr} "
            "--iptables {iptables} --min-sync-period 0")


def run_diff(tmp_path: Path, fault: str, *extra: str) -> tuple[int, dict, str]:
    cmd = [sys.executable, "-m", "harness.diff", "reference", f"faulty-{fault}",
           f"--b-cmd={faulty_command(fault)}", f"--b-caps={CAPABILITIES}",
           f"--out={tmp_path / 'diff'}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    try:
        summary = json.loads(last)
    except json.JSONDecodeError:
        pytest.fail(f"the last line of output is not the JSON summary:\n{out[-4000:]}")
    return proc.returncode, summary, out


def run_scenario(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_planted_fault_is_found_shrunk_and_written_as_a_scenario(tmp_path):
    fault = "drop-no-endpoints"  # silence where the reference refuses (ICMP port unreachable)
    code, summary, out = run_diff(tmp_path, fault, "--seed=3", "--budget=60s",
                                  "--max-cases=2", "--shrink-runs=12")
    assert code == 1, f"exit status {code}, want 1 (disagreements):\n{out[-4000:]}"
    assert summary["disagreements"].get("refusal", 0) >= 1, f"no refusal finding: {summary}\n{out[-4000:]}"
    assert summary["cases"] >= 1 and summary["flows"] >= 1 and summary["cases_per_minute"] > 0
    assert summary["scenarios"], f"nothing was shrunk: {summary}\n{out[-4000:]}"
    findings = json.loads((tmp_path / "diff" / "findings.json").read_text())
    refusal = next(f for f in findings if f["class"] == "refusal" and f["scenario"])
    assert refusal["facts"]["serving"] == 0, refusal  # the fault is about Services without endpoints
    path = refusal["scenario"]
    doc = yaml.safe_load(Path(path).read_text())
    assert len(doc["flows"]) == 1
    assert flow_facts(doc, doc["flows"][0])["serving"] == 0
    assert doc["flows"][0]["expect"] == "reject"  # the reference's outcome, A's
    assert "(tests.faulty" not in Path(path).read_text()  # plain data, no harness internals
    assert (tmp_path / "diff" / "report.html").read_text().count("refusal") >= 1

    # the written scenario reproduces the disagreement: it passes on A and fails on B
    ok = run_scenario(path)
    assert ok.returncode == 0, f"the shrunk scenario fails on the reference:\n{ok.stdout[-3000:]}"
    bad = run_scenario(path, f"--proxier-cmd={faulty_command(fault)}",
                       f"--proxier-capabilities={CAPABILITIES}")
    assert bad.returncode == 1, f"the shrunk scenario passes on the faulty proxier:\n{bad.stdout[-3000:]}"


def test_two_identical_proxiers_agree(tmp_path):
    # the same proxier on both sides: every flow agrees (no noise from probing itself)
    cmd = [sys.executable, "-m", "harness.diff", "reference", "reference", "--seed=5",
           "--max-cases=2", "--budget=60s", f"--out={tmp_path / 'same'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and summary["disagreements"] == {}, proc.stdout[-3000:]
    assert summary["cases"] == 2 and summary["flows"] >= 2
