"""Each bug reproduction in scenarios/bugs/ (and each kept differential finding in
scenarios/diff/) fails against the faulty proxier that puts the
historical bug back (its ``caught_by_fault``), and every such fault exists.

The scenario runs in a child pytest with the fault's proxier command; the child must exit
with pytest's "tests failed" status (1) and report the scenario as failed, so a scenario
that errors out for another reason (a collection error, a crash) does not count as caught.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.scenario import load_scenario
from tests.faulty.faults import FAULTS

ROOT = Path(__file__).resolve().parents[2]
BUGS = sorted([*(ROOT / "scenarios" / "bugs").glob("*.yaml"),
               *(ROOT / "scenarios" / "diff").glob("*.yaml")])
CAPABILITIES = ("acks,localhost-nodeports,masquerade-mark,affinity,reject-no-endpoints,invalid-drop,"
                "health-check-nodeport,udp-conntrack-cleanup,ipv6")
CAUGHT = [(p, load_scenario(p).caught_by_fault) for p in BUGS]
CAUGHT = [(p, f) for p, f in CAUGHT if f]


def test_every_bug_scenario_loads_and_names_an_existing_fault():
    assert BUGS, "no scenarios in scenarios/bugs/"
    for path in BUGS:
        sc = load_scenario(path)
        assert sc.references, f"{path.name}: a bug reproduction must link the bug"
        if sc.caught_by_fault:
            assert sc.caught_by_fault in FAULTS, (
                f"{path.name}: caught_by_fault {sc.caught_by_fault!r} is not a fault in "
                f"tests/faulty (known: {', '.join(sorted(FAULTS))})")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
@pytest.mark.parametrize("path,fault", CAUGHT, ids=[p.stem for p, _ in CAUGHT])
def test_scenario_fails_against_its_fault(path, fault, tmp_path):
    f = FAULTS[fault]
    command = (f"{{python}} -m tests.faulty {fault} run --state-dir {{state_dir}} "
               "--hostname-override {node} --node-ip {node_ip} --cluster-cidr {cluster_cidr} "
               "--iptables {iptables} --min-sync-period 0 " + " ".join(f.proxier_args))
    report_dir = tmp_path / "report"
    cmd = [sys.executable, "-m", "pytest", str(path.relative_to(ROOT)), "-p", "no:cacheprovider",
           "-q", f"--report-dir={report_dir}", f"--proxier-cmd={command}",
           f"--proxier-capabilities={f.capabilities if f.capabilities is not None else CAPABILITIES}",
           f"--proxier=faulty-{fault}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout[-5000:] + proc.stderr[-2000:]
    assert proc.returncode == 1, (
        f"{path.name} against fault {fault} ({f.description}): pytest exited "
        f"{proc.returncode}, expected 1 (the scenario failed)\n{output}")
    report = json.loads((report_dir / "report.json").read_text())
    outcomes = {r.get("behavior"): r["outcome"] for r in report["checks"]}
    bid = f"scenario/{path.parent.name}/{path.stem}"
    assert outcomes.get(bid) == "failed", (
        f"{path.name} against fault {fault}: outcome {outcomes.get(bid)!r}, expected failed\n{output}")
    # a scenario's failure carries the same evidence as a conformance check's
    (rec,) = [r for r in report["checks"] if r.get("behavior") == bid]
    assert any(t.startswith("proxier log, node ") for t in rec["evidence"]), rec["evidence"].keys()
    assert any(t.startswith("rules on node ") for t in rec["evidence"]), rec["evidence"].keys()
