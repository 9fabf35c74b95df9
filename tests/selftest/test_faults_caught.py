"""The suite tests itself: each conformance check fails against a proxier with the matching
defect, and the whole suite passes against the faithful reference proxier.

Every fault in ``tests/faulty`` runs the conformance checks meant to catch it in a child
pytest (its own namespaces, its own report.json); the child must exit non-zero and every
named behaviour must have failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faulty.faults import FAULTS

ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = "acks,localhost-nodeports,masquerade-mark,affinity,reject-no-endpoints,health-check-nodeport,udp-conntrack-cleanup"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def run_conformance(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[int, dict, str]:
    report_dir = tmp_path / "report"
    cmd = [sys.executable, "-m", "pytest", "conformance/", "-p", "no:cacheprovider", "-q",
           f"--report-dir={report_dir}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads((report_dir / "report.json").read_text())
    except FileNotFoundError:
        report = {"checks": []}
    return proc.returncode, report, proc.stdout[-6000:] + proc.stderr[-3000:]


def outcomes_by_behavior(report: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rec in report["checks"]:
        if rec.get("behavior"):
            out.setdefault(rec["behavior"], set()).add(rec["outcome"])
    return out


@pytest.mark.parametrize("fault", sorted(FAULTS), ids=str)
def test_fault_is_caught_by_its_checks(fault, tmp_path):
    f = FAULTS[fault]
    command = (f"{{python}} -m tests.faulty {fault} run --state-dir {{state_dir}} "
               "--hostname-override {node} --node-ip {node_ip} --cluster-cidr {cluster_cidr} "
               "--iptables {iptables} --min-sync-period 0 " + " ".join(f.proxier_args))
    selection = [f"--behavior={b}" for b in f.caught_by]
    code, report, output = run_conformance(
        tmp_path, f"--proxier-cmd={command}",
        f"--proxier-capabilities={f.capabilities if f.capabilities is not None else CAPABILITIES}",
        f"--proxier=faulty-{fault}", *f.pytest_args, *selection)

    seen = outcomes_by_behavior(report)
    missed = [b for b in f.caught_by if "failed" not in seen.get(b, set())]
    assert code != 0, f"fault {fault} ({f.description}): the suite passed\n{output}"
    assert not missed, (
        f"fault {fault} ({f.description}) was not caught by {missed}; outcomes: {seen}\n{output}"
    )


def test_reference_proxier_passes_the_whole_suite(tmp_path):
    code, report, output = run_conformance(tmp_path, "-n", "2")
    failed = [r["nodeid"] for r in report["checks"] if r["outcome"] == "failed"]
    assert code == 0 and not failed, f"the reference proxier failed {failed}\n{output}"
