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
from dataclasses import replace
from pathlib import Path

import pytest

from tests.faulty.faults import FAULTS

ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = ("acks,localhost-nodeports,masquerade-mark,affinity,reject-no-endpoints,"
                "health-check-nodeport,udp-conntrack-cleanup,ipv6")

# Behaviours kube-proxy has on IPv4 only: skipped over IPv6.
LOCALHOST_NODEPORTS = {"service/nodeport/localhost", "service/affinity/clientip/localhost-nodeport"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def run_conformance(tmp_path: Path, *args: str, timeout: float = 600,
                    paths: tuple[str, ...] = ("conformance/",)) -> tuple[int, dict, str]:
    report_dir = tmp_path / "report"
    cmd = [sys.executable, "-m", "pytest", *paths, "-p", "no:cacheprovider", "-q",
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


def assert_caught(fault: str, tmp_path: Path, *extra: str, capabilities: str = "",
                  behaviours: tuple[str, ...] | None = None) -> None:
    """Run the checks meant to catch ``fault`` (``behaviours``, default all of them) against
    it; each must fail."""
    f = FAULTS[fault]
    if behaviours is not None:
        f = replace(f, caught_by=behaviours)
    command = (f"{{python}} -m tests.faulty {fault} run --state-dir {{state_dir}} "
               "--hostname-override {node} --node-ip {node_ip} --cluster-cidr {cluster_cidr} "
               "--iptables {iptables} --min-sync-period 0 " + " ".join(f.proxier_args))
    selection = [f"--behavior={b}" for b in f.caught_by]
    caps = (f.capabilities if f.capabilities is not None else CAPABILITIES) + capabilities
    code, report, output = run_conformance(
        tmp_path, f"--proxier-cmd={command}", f"--proxier-capabilities={caps}",
        f"--proxier=faulty-{fault}", *f.pytest_args, *extra, *selection)

    seen = outcomes_by_behavior(report)
    missed = [b for b in f.caught_by if "failed" not in seen.get(b, set())]
    where = f" {' '.join(extra)}" if extra else ""
    assert code != 0, f"fault {fault} ({f.description}){where}: the suite passed\n{output}"
    assert not missed, (
        f"fault {fault} ({f.description}){where} was not caught by {missed}; "
        f"outcomes: {seen}\n{output}"
    )


@pytest.mark.parametrize("fault", sorted(FAULTS), ids=str)
def test_fault_is_caught_by_its_checks(fault, tmp_path):
    assert_caught(fault, tmp_path)


def session_checks_over_ipv6(fault: str) -> tuple[str, ...]:
    """The checks meant to catch ``fault`` that run on the session cluster and mean the same
    over IPv6: not scenario files (IPv4 dumps), not the IPv6/dual-stack modules (their own
    clusters, run anyway), not localhost nodePorts (kube-proxy has them on IPv4 only)."""
    return tuple(b for b in FAULTS[fault].caught_by
                 if not b.startswith(("scenario/", "service/ipv6/", "service/dual-stack/"))
                 and b not in LOCALHOST_NODEPORTS)


@pytest.mark.ipv6
@pytest.mark.parametrize("fault", sorted(f for f in FAULTS if session_checks_over_ipv6(f)),
                         ids=str)
def test_fault_is_caught_over_ipv6(fault, tmp_path):
    """The same checks, run with ``--ip-family ipv6``, catch the same defect: the IPv6
    suite is not a copy that passes whatever the proxier does."""
    assert_caught(fault, tmp_path, "--ip-family=ipv6", capabilities=",ipv6",
                  behaviours=session_checks_over_ipv6(fault))


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_reference_proxier_passes_the_whole_suite(tmp_path, family):
    code, report, output = run_conformance(tmp_path, "-n", "2", f"--ip-family={family}")
    failed = [r["nodeid"] for r in report["checks"] if r["outcome"] == "failed"]
    assert code == 0 and not failed, f"the reference proxier failed {failed}\n{output}"
    if family == "ipv6":  # only what kube-proxy does not offer over IPv6 is skipped
        # (besides checks of capabilities the reference's iptables mode does not declare,
        # e.g. nftables-only ones, and checks needing another --control-plane: skipped over
        # IPv4 alike)
        skipped = {r.get("behavior") for r in report["checks"] if r["outcome"] == "skipped"
                   and "does not declare" not in (r.get("reason") or "")
                   and "--control-plane" not in (r.get("reason") or "")}
        assert skipped <= LOCALHOST_NODEPORTS, skipped
