"""Evidence in one place (harness.evidence): a failed check carries the proxier logs,
rules and conntrack of every node, the verdict's statistics, and what a plugin adds
through the ``pytest_svc_conformance_evidence`` hook; ``--save-scenario`` writes its probes
as a scenario."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.scenario import load_scenario
from tests.selftest.test_faults_caught import run_conformance

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

FAULTY = ("{python} -m tests.faulty nodeport-local-only run --state-dir {state_dir} "
          "--hostname-override {node} --node-ip {node_ip} --cluster-cidr {cluster_cidr} "
          "--iptables {iptables} --min-sync-period 0")


def test_a_failed_check_carries_the_harness_and_the_plugin_evidence(tmp_path: Path) -> None:
    code, report, output = run_conformance(
        tmp_path, "-p", "tests.selftest.evidence_plugin", f"--proxier-cmd={FAULTY}",
        "--proxier-capabilities=acks", "-k", "remote_client_reaches_nodeport and TCP",
        f"--save-scenario={tmp_path / 'saved'}",
        paths=("conformance/test_nodeport.py",))
    assert code != 0, output
    (rec,) = report["checks"]
    assert rec["grade"] == "fail", output
    # the first line says in words what went wrong
    assert rec["summary"].endswith("expected a reply from one of ['pod1', 'pod2']; "
                                   "observed 6x RESET"), rec["summary"]
    titles = set(rec["evidence"])
    for node in ("node1", "node2"):
        assert {f"proxier log, node {node} (last lines)", f"rules on node {node}",
                f"conntrack on node {node}"} <= titles, titles
    assert rec["evidence"]["adapter evidence"] == (
        "2 nodes; check test_remote_client_reaches_nodeport_on_every_node[TCP]")
    assert [s["check"] for s in rec["statistics"]] == ["reached-only"]
    # --save-scenario recorded the check's probes (an explicit probe log, harness.traffic.probe
    # .recording): one flow per node, as observed
    (saved,) = (tmp_path / "saved").glob("*.yaml")
    sc = load_scenario(saved)
    assert [(f.src, f.to, f.expect) for f in sc.flows] == [
        ("client1", "node1", ["pod1", "pod2"]), ("client1", "node2", "drop")], saved.read_text()
