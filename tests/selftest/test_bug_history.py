"""The bug library against kube-proxy's history (issue 15).

Each bug scenario whose ``history:`` names a kube-proxy fix is run against the last
release before the fix, where it must fail on one of its flows (not on a harness or
start-up error), and against the fix release, where it must pass (harness.bughistory picks
the pair among the releases built; a bug of nftables mode only runs with kube-proxy-nft). A
scenario that passes on the buggy release does not reproduce its bug.

CI runs one pair whose releases ``bash run.sh tests`` builds: k8s-139628 (v1.36.3 before
the fix, v1.37.2 with it). The whole sweep is opt-in (not even collected without it), ``bash run.sh history`` (environment
``SVC_CONFORMANCE_HISTORY=1``): it builds every release the pairs need first; a pair whose
releases are not built is skipped with the command that builds them, one that cannot be
run (another component's bug, ipvs only, older than the oldest buildable release) with
the reason. docs/bug-history.md has the table.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import bughistory
from harness.scenario import load_scenario

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

CI_PAIR = ("k8s-139628", "v1.36.3", "v1.37.2")
#: Scenarios known to pass on their buggy release too: they do not reproduce their bug with
#: packets the harness can send. Strict xfails: one that starts failing before its fix
#: (the scenario was fixed) must leave this list.
NOT_REPRODUCING = {
    "k8s-106976": "#107684 only stopped setting net.ipv4.conf.all.route_localnet when no "
                  "--nodeport-addresses range holds a loopback address; 127.0.0.1 was already "
                  "not DNATed with --nodeport-addresses 192.0.2.0/24. The sysctl matters for "
                  "packets to 127.0.0.1 arriving from another host, which a socket in another "
                  "namespace cannot send (127.0.0.0/8 is its own loopback)",
}
SWEEP = os.environ.get("SVC_CONFORMANCE_HISTORY") == "1"


#: Scenarios whose bug stops the proxier applying any state (its whole iptables-restore
#: fails): on the buggy release they fail with "did not apply the scenario's state", not on
#: a flow; the error the report quoted must be in the proxier's log.
SYNC_BREAKING = {
    "k8s-73157": "host/network `203.0.113.157' not found",  # an IPv4 LB IP in ip6tables
    "k8s-88316": "invalid mask `128' specified",  # an IPv6 LB IP in iptables
}


def check_pair(name: str, buggy: str, fixed: str, tmp_path: Path, proxier: str = "kube-proxy") -> None:
    before, out_b = bughistory.run_scenario_on(name, buggy, tmp_path, proxier)
    flow = bughistory.failing_flow(before)
    message = before.get("message") or out_b
    assert before["grade"] == "fail", (
        f"{name} does not reproduce its bug: on {buggy} (before the fix) it is "
        f"{before['grade']!r}, not a failure\n{message}")
    if name in SYNC_BREAKING:
        evidence = message + "\n".join(str(v) for v in (before.get("evidence") or {}).values())
        assert "did not apply the scenario's state" in message and SYNC_BREAKING[name] in evidence, (
            f"{name} failed on {buggy}, but not as its bug does (no sync, "
            f"{SYNC_BREAKING[name]!r} in the proxier log):\n{message}")
    else:
        assert flow is not None, (f"{name} failed on {buggy}, but not on a flow (a start-up or "
                                  f"harness error?):\n{message}")
    after, out_a = bughistory.run_scenario_on(name, fixed, tmp_path, proxier)
    assert after["grade"] == "pass", (
        f"{name} fails on {fixed}, which has the fix:\n{after.get('message') or out_a}")


def test_ci_pair_fails_before_the_fix_and_passes_with_it(tmp_path: Path) -> None:
    name, buggy, fixed = CI_PAIR
    sc = load_scenario(bughistory.BUGS / f"{name}.yaml")
    pair = bughistory.pair_for(sc, [buggy, fixed])
    assert (pair.buggy, pair.fixed) == (buggy, fixed), pair
    for release in (buggy, fixed):
        from harness import kubebins

        try:
            kubebins.locate("kube-proxy", release)
        except kubebins.BuildError as exc:  # run.sh tests builds both
            pytest.fail(str(exc), pytrace=False)
    check_pair(name, buggy, fixed, tmp_path)


def _sweep_params() -> list:
    out = []
    for sc in bughistory.bug_scenarios():
        if sc.name == CI_PAIR[0]:
            continue
        out.append(sc.name)
    return out


@pytest.mark.parametrize("name", _sweep_params())
def test_bug_fails_before_its_fix_and_passes_with_it(name: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    pair = bughistory.pair_for(load_scenario(bughistory.BUGS / f"{name}.yaml"))
    if not pair.runnable:
        pytest.skip(pair.why_not)
    if name in NOT_REPRODUCING:
        request.applymarker(pytest.mark.xfail(reason=NOT_REPRODUCING[name], strict=True))
    check_pair(name, pair.buggy, pair.fixed, tmp_path, pair.proxier)


# The sweep is opt-in (bash run.sh history): without it the test is not collected at all,
# rather than collected and skipped.
test_bug_fails_before_its_fix_and_passes_with_it.__test__ = SWEEP  # type: ignore[attr-defined]
