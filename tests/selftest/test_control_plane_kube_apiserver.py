"""The suite over a real control plane (``--control-plane kube-apiserver``: etcd and
kube-apiserver in the lan namespace): the reference proxier passes when it lists and
watches it over TLS with the ``system:kube-proxy`` identity, a proxier that ignores the
API fails with a message naming the control plane, and an object the API refuses is a
clear error naming it.

CI runs the same subset as over the harness's own API server; the whole suite passes too
(``pytest conformance/ --control-plane kube-apiserver -n 2``). Needs root and the Go-built
binaries (``python -m harness.kubebins build v1.37.2 --component kube-apiserver,etcd``);
skipped with that command otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.controlplane.kubeapiserver import binaries_missing
from tests.selftest.test_control_plane_api import SUBSET
from tests.selftest.test_faults_caught import assert_caught, run_conformance
from tests.selftest.test_proxier_contract import REFPROXIER, child

_missing = binaries_missing() if os.geteuid() == 0 else None
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(_missing is not None, reason=f"kube-apiserver/etcd not built: {_missing}"),
]


@pytest.mark.parametrize("proxier", ["reference", "reference-nft"])
def test_reference_proxier_passes_over_kube_apiserver(tmp_path: Path, proxier: str) -> None:
    code, report, output = run_conformance(tmp_path, "-n", "2", "--control-plane=kube-apiserver",
                                           f"--proxier={proxier}", "-m", SUBSET)
    failed = [r["nodeid"] for r in report["checks"] if r["outcome"] == "failed"]
    passed = [r for r in report["checks"] if r["outcome"] == "passed"]
    assert code == 0 and not failed and len(passed) > 20, \
        f"{proxier} over kube-apiserver failed {failed}\n{output}"
    assert report["environment"]["control_plane"] == "kube-apiserver"


def test_restart_check_passes_on_the_reference_and_catches_a_proxier_that_stops_watching(
        tmp_path: Path) -> None:
    # kube-apiserver restarted on its running etcd: the reference proxier's informers resume
    # (or re-list), a proxier whose watch is never re-established fails the check.
    code, report, output = run_conformance(tmp_path / "ref", "--control-plane=kube-apiserver",
                                           "--behavior=service/restart/control-plane-restart")
    outcomes = [r["outcome"] for r in report["checks"]]
    assert code == 0 and outcomes == ["passed"], f"{outcomes}\n{output}"
    assert_caught("watch-not-resumed", tmp_path / "fault", "--control-plane=kube-apiserver")


def test_proxier_ignoring_the_api_fails_naming_the_control_plane() -> None:
    r = child("conformance/test_clusterip_dnat.py", "-k", "target_port and named",
              f"--proxier-cmd={REFPROXIER}", "--proxier-capabilities=acks",
              "--control-plane=kube-apiserver", "--timeout-scale=0.2")
    out = r.stdout
    assert r.returncode != 0, out[-4000:]
    assert "did not start (control plane kube-apiserver)" in out, out[-4000:]
    assert "node1" in out and "{kubeconfig}" in out and "system:kube-proxy" in out, out[-4000:]


def test_an_object_the_api_refuses_is_a_clear_error(tmp_path: Path) -> None:
    from harness import model
    from harness.controlplane.kubeapiserver import KubeApiServerControlPlane, PublishError
    from harness.model import PortSpec, ServiceSpecIn
    from harness.topology.netns import Topology
    from harness.topology.spec import NodeSpec, TopologySpec

    with Topology(TopologySpec(nodes=[NodeSpec("node1")], clients=[]), echo=False) as topo:
        cp = KubeApiServerControlPlane.for_topology(tmp_path, topo)
        cp.start(topo.lan_netns, str(topo.resolved.router))
        try:
            outside = model.service_object(ServiceSpecIn(
                name="outside", namespace="ns1", ports=[PortSpec(80, 8080, "TCP", "")],
                cluster_ip="10.97.0.5"))  # not in --service-cluster-ip-range 10.96.0.0/16
            cp.put(outside)
            with pytest.raises(PublishError) as info:
                cp.publish()
            msg = str(info.value)
            assert "Service ns1/outside" in msg and "422" in msg and "spec.clusterIPs" in msg, msg
            # the refused object is not half-published: fixing it publishes it
            cp.put(model.service_object(ServiceSpecIn(
                name="outside", namespace="ns1", ports=[PortSpec(80, 8080, "TCP", "")],
                cluster_ip="10.96.3.5")))
            assert cp.publish() > 0
        finally:
            cp.stop()
