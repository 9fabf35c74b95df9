"""The suite over the Kubernetes API control plane (``--control-plane api``): the reference
proxier passes when it lists and watches the API, a proxier that ignores the API fails with
a message naming the control plane, and a proxier without acks is waited for by probing.

CI runs a subset over the API (ClusterIP DNAT, NodePorts, Services without endpoints) to
keep the cost small; the whole suite passes too
(``pytest conformance/ --control-plane api -n 2``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.selftest.test_faults_caught import run_conformance
from tests.selftest.test_proxier_contract import REFPROXIER, child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

SUBSET = "dnat or nodeport or no_endpoints"


@pytest.mark.parametrize("proxier", ["reference", "reference-nft"])
def test_reference_proxier_passes_over_the_api(tmp_path: Path, proxier: str) -> None:
    code, report, output = run_conformance(tmp_path, "-n", "2", "--control-plane=api",
                                           f"--proxier={proxier}", "-m", SUBSET)
    failed = [r["nodeid"] for r in report["checks"] if r["outcome"] == "failed"]
    passed = [r for r in report["checks"] if r["outcome"] == "passed"]
    assert code == 0 and not failed and len(passed) > 20, \
        f"{proxier} over the API failed {failed}\n{output}"
    assert report["environment"]["control_plane"] == "api"


@pytest.mark.parametrize("proxier", ["reference", "reference-nft"])
def test_reference_proxier_resumes_after_an_api_server_restart(tmp_path: Path, proxier: str) -> None:
    # The restart check (not in SUBSET: its marker, restart, holds slower checks too); it
    # skips over the state directory, so the whole-suite self-test does not run it.
    code, report, output = run_conformance(tmp_path, "--control-plane=api", f"--proxier={proxier}",
                                           "--behavior=service/restart/control-plane-restart")
    outcomes = [r["outcome"] for r in report["checks"]]
    assert code == 0 and outcomes == ["passed"], f"{proxier}: {outcomes}\n{output}"


def test_proxier_ignoring_the_api_fails_naming_the_control_plane() -> None:
    # The reference proxier without --kubeconfig reads state.yaml, which the API control
    # plane does not write: it never acknowledges a generation.
    r = child("conformance/test_clusterip_dnat.py", "-k", "target_port and named",
              f"--proxier-cmd={REFPROXIER}", "--proxier-capabilities=acks",
              "--control-plane=api", "--timeout-scale=0.2")
    out = r.stdout
    assert r.returncode != 0, out[-4000:]
    assert "did not start (control plane api)" in out, out[-4000:]
    assert "node1" in out and "{kubeconfig}" in out and "no state.yaml is written" in out, out[-4000:]


def test_proxier_without_acks_over_the_api_is_waited_for_by_probing() -> None:
    r = child("conformance/test_no_endpoints.py", "-k", "comes_and_goes",
              f"--proxier-cmd={REFPROXIER} --kubeconfig={{kubeconfig}}",
              "--proxier-capabilities=reject-no-endpoints", "--control-plane=api")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout


def test_scenario_runs_over_the_api(tmp_path: Path) -> None:
    # Scenarios start their clusters through the same life cycle as conformance tests
    # (harness.lifecycle): --control-plane reaches them. The reference proxier passes a bug
    # scenario over the API, with the API in the report's environment...
    code, report, output = run_conformance(tmp_path, "--control-plane=api",
                                           "scenarios/bugs/k8s-59368.yaml", paths=())
    assert code == 0, output
    assert [r["grade"] for r in report["checks"]] == ["pass"], output
    assert report["environment"]["control_plane"] == "api"
    # ... and a proxier reading only state.yaml never syncs there: the scenario's cluster
    # really is served by the API server, not a state directory.
    r = child("scenarios/bugs/k8s-59368.yaml", f"--proxier-cmd={REFPROXIER}",
              "--proxier-capabilities=acks", "--control-plane=api", "--timeout-scale=0.2")
    assert r.returncode != 0, r.stdout[-4000:]
    assert "did not start (control plane api)" in r.stdout, r.stdout[-4000:]
