"""Real kube-proxy (built by ``python -m harness.kubebins build``) through the suite.

CI runs a subset over both modes (ClusterIP DNAT, NodePorts, Services without endpoints,
the masquerade and UDP conntrack checks): every check passes or is a strict xfail listed in
known-gaps/kube-proxy[-nft]-<release>.yaml. The whole suite is the matrix's job
(``bash run.sh matrix``). A run with kube-proxy must leave the root namespace exactly as it
was: kube-proxy writes sysctls and, with a conntrack maximum, the global nf_conntrack
hashsize; the adapter's flags keep it to its node namespace.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import kubebins
from tests.selftest.test_faults_caught import run_conformance

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

SUBSET = "dnat or nodeport or no_endpoints or masquerade or conntrack"
VERSION = kubebins.DEFAULT_VERSION

# What kube-proxy would change outside its namespace if it were let loose: its conntrack
# sysctls are per namespace, the hashsize module parameter is the host's.
ROOT_SETTINGS = (
    "/proc/sys/net/ipv4/conf/all/route_localnet",
    "/proc/sys/net/netfilter/nf_conntrack_max",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal",
    "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
    "/sys/module/nf_conntrack/parameters/hashsize",
)


def _root_settings() -> dict[str, str]:
    out = {}
    for path in ROOT_SETTINGS:
        try:
            out[path] = Path(path).read_text().strip()
        except OSError:
            out[path] = "(absent)"
    return out


@pytest.fixture(scope="module")
def kube_proxy_built() -> Path:
    # .ci/run (run.sh tests) builds it first; a missing build is an error, not a skip.
    try:
        return kubebins.locate("kube-proxy", VERSION)
    except kubebins.BuildError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.mark.parametrize("proxier", ["kube-proxy", "kube-proxy-nft"])
def test_kube_proxy_passes_the_subset_leaving_the_root_namespace_alone(
        kube_proxy_built: Path, tmp_path: Path, proxier: str) -> None:
    before = _root_settings()
    # the run's clusters under tmp_path: its kube-proxy processes are told apart from any
    # other run's on the machine by their --kubeconfig path
    base = tmp_path / "base"
    code, report, output = run_conformance(tmp_path, "-n", "2", "--control-plane=api", f"--basetemp={base}",
                                           f"--proxier={proxier}", f"--kube-proxy-version={VERSION}",
                                           "-m", SUBSET)
    failed = [r["nodeid"] for r in report["checks"] if r["outcome"] == "failed"]
    passed = [r for r in report["checks"] if r["outcome"] == "passed"]
    assert code == 0 and not failed and len(passed) > 25, \
        f"{proxier} {VERSION} failed {failed}\n{output}"
    env = report["environment"]
    assert env["proxier_version"] == f"Kubernetes {VERSION}", env
    assert (report["known_gaps_file"] or "").endswith(f"{proxier}-{VERSION}.yaml"), report["known_gaps_file"]
    xfails = {r["behavior"] for r in report["checks"] if r["outcome"] == "xfail"}
    assert xfails <= {"service/udp/conntrack/deleted-service-flow-stops",
                      "service/udp/conntrack/removed-port-flow-stops"}, xfails

    after = _root_settings()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"kube-proxy changed the root namespace's settings: {changed}"
    listed = subprocess.run(["pgrep", "-a", "-x", "kube-proxy"], capture_output=True, text=True).stdout
    left = [line for line in listed.splitlines() if str(base) in line]
    assert not left, "kube-proxy processes outlived the run:\n" + "\n".join(left)
