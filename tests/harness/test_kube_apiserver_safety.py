"""Network safety of the real control plane (``--control-plane kube-apiserver``): etcd and
kube-apiserver run inside the run's lan namespace only (nothing listens in the root
namespace), ``stop`` ends them, and a SIGKILLed run's pair is killed by the next run's
reaper with its namespaces. Needs root and the Go-built binaries (skipped with the build
command otherwise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.controlplane.kubeapiserver import (
    API_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    KubeApiServerControlPlane,
    binaries_missing,
)
from harness.topology.netns import Topology
from harness.topology.nsutil import netns_inode
from harness.topology.spec import NodeSpec, TopologySpec

from .conftest import needs_root

_missing = binaries_missing() if os.geteuid() == 0 else None
pytestmark = [needs_root, pytest.mark.skipif(_missing is not None,
                                             reason=f"kube-apiserver/etcd not built: {_missing}")]

ROOT = Path(__file__).resolve().parents[2]
PORTS = (API_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT)


def _root_listeners() -> list[str]:
    """Sockets listening on our ports in the root namespace (this process's)."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if any(line.split()[3].endswith(f":{p}") for p in PORTS if len(line.split()) > 3)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_control_plane_lives_in_the_lan_namespace_and_stops(tmp_path: Path) -> None:
    before = _root_listeners()
    spec = TopologySpec(nodes=[NodeSpec("node1")], clients=[])
    with Topology(spec, echo=False) as topo:
        cp = KubeApiServerControlPlane.for_topology(tmp_path, topo)
        cp.start(topo.lan_netns, str(topo.resolved.router))
        try:
            pids = cp.pids
            assert set(pids) == {"etcd", "kube-apiserver"}
            lan = netns_inode(topo.lan_netns)
            for name, pid in pids.items():
                assert os.stat(f"/proc/{pid}/ns/net").st_ino == lan, f"{name} is not in the lan namespace"
            assert _root_listeners() == before, "etcd or kube-apiserver listens in the root namespace"
            # the credentials live in the run's directory, the private keys readable by root only
            for key in (tmp_path / "kube-apiserver" / "pki").glob("*.key"):
                assert key.stat().st_mode & 0o077 == 0, key
            assert cp.kubeconfig == tmp_path / "kubeconfig"
            assert "system:kube-proxy" in cp.kubeconfig.read_text()
        finally:
            cp.stop()
        assert not any(_alive(p) for p in pids.values()), "stop() left a process running"


CHILD = r"""
import json, sys, time
from pathlib import Path
from harness.controlplane.kubeapiserver import KubeApiServerControlPlane
from harness.topology.netns import Topology
from harness.topology.spec import NodeSpec, TopologySpec
topo = Topology(TopologySpec(nodes=[NodeSpec("node1")], clients=[]), echo=False)
topo.start()
cp = KubeApiServerControlPlane.for_topology(Path(sys.argv[1]), topo)
cp.start(topo.lan_netns, str(topo.resolved.router))
print(json.dumps({"prefix": topo.prefix, "pids": list(cp.pids.values())}), flush=True)
time.sleep(600)
"""


def test_sigkilled_run_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, f"the child did not start the control plane: {proc.stderr.read() if proc.stderr else ''}"
        info = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert all(_alive(p) for p in info["pids"]), "a SIGKILLed run should leave etcd and kube-apiserver"
    with Topology(TopologySpec(nodes=[NodeSpec("n1")], clients=[]), echo=False):
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in info["pids"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in info["pids"]), "the next run did not reap them"
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert info["prefix"] not in netns
