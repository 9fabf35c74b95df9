"""The suite on a bridge pod network: hairpin and ClusterIP DNAT pass against the reference
proxier when pods hang off a node bridge (``--pod-network=bridge``), as with the CNI bridge
plugin, not only with one routed veth per pod.

Bridge mode is where the classic Service bugs live: a hairpinned packet must leave by the
bridge port it came in on (hairpin_mode), and a same-bridge neighbour's reply must pass
through iptables to be un-DNATed (bridge-nf-call-iptables). The child run has its own
namespaces and report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ("conformance/test_hairpin.py", "conformance/test_clusterip_dnat.py")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def test_hairpin_and_dnat_pass_on_a_bridge_pod_network(tmp_path):
    cmd = [sys.executable, "-m", "pytest", *FILES, "-p", "no:cacheprovider", "-q", "-rfEs",
           "--pod-network=bridge", f"--report-dir={tmp_path / 'report'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, (
        f"{' '.join(FILES)} with --pod-network=bridge: exit {proc.returncode} (expected 0)\n{output}"
    )
    assert " passed" in proc.stdout and " skipped" not in proc.stdout.splitlines()[-1], (
        f"expected every check to run and pass, got: {proc.stdout.splitlines()[-1]}"
    )
