"""The proxier-under-test contract from the outside: a proxier that does not acknowledge
generations is waited for by probing; one that crashes or never syncs gets a message naming
the node and what to do, not a harness traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFPROXIER = ("{python} -m refproxier run --state-dir {state_dir} --hostname-override {node} "
              "--node-ip {node_ip} --cluster-cidr {cluster_cidr} --min-sync-period 0")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def child(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_proxier_without_acks_is_waited_for_by_probing():
    r = child("conformance/test_no_endpoints.py", "-k", "comes_and_goes",
              f"--proxier-cmd={REFPROXIER}", "--proxier-capabilities=reject-no-endpoints")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout


def test_crashing_proxier_is_reported_with_its_node_and_log():
    r = child("conformance/test_clusterip_dnat.py", "-k", "target_port",
              "--proxier-cmd=sh -c 'echo cannot parse flags >&2; exit 3'",
              "--proxier-capabilities=acks")
    assert r.returncode != 0
    out = r.stdout
    assert "exited with status 3" in out and "on node node" in out, out[-4000:]
    assert "cannot parse flags" in out, out[-4000:]
    assert "Traceback" not in out


def test_proxier_that_never_syncs_times_out_with_a_clear_message():
    r = child("conformance/test_clusterip_dnat.py", "-k", "target_port",
              "--proxier-cmd=sleep 600", "--proxier-capabilities=acks", "--timeout-scale=0.1")
    assert r.returncode != 0
    assert "was not applied within" in r.stdout and "node1" in r.stdout, r.stdout[-4000:]
    assert "Traceback" not in r.stdout
