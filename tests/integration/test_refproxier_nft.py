"""The nftables renderer and daemon mode against the real ``nft`` in throwaway network
namespaces (root only).

Every namespace is named ``nft-test-<pid>-<n>`` and deleted by the fixture; nothing is
created in, or read from, the root namespace except a check that it still has no
``kube-proxy`` table afterwards. The topology for traffic is two namespaces joined by a
veth pair: the "node" (192.0.2.1, where the rules live and the client runs) and the "pod"
(192.0.2.2, running a TCP server that answers with its name).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lightkube.codecs import from_dict

from refproxier.config import ProxierConfig
from refproxier.nftables import render_nft
from refproxier.proxystate import build_proxy_state, changed_services
from servicemodel.cluster import ClusterState
from servicemodel.statedir import read_applied, write_state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

PY = sys.executable
_counter = itertools.count()
NODE_IP, POD_IP, POD2_IP = "192.0.2.1", "192.0.2.2", "192.0.2.3"

SERVER = r"""
import socket, sys
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port)); s.listen(16); print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{name} {peer[0]}\n".encode()); c.close()
"""

CLIENT = r"""
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0)
    print(c.recv(100).decode().strip())
except ConnectionRefusedError:
    print("REFUSED")
except (TimeoutError, socket.timeout):
    print("TIMEOUT")
except OSError as e:
    print(f"ERROR {e.errno}")
"""


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def root_has_kube_proxy_table() -> bool:
    return sh("nft", "list", "table", "ip", "kube-proxy", check=False).returncode == 0


@pytest.fixture(scope="module", autouse=True)
def root_untouched() -> Iterator[None]:
    before = root_has_kube_proxy_table()
    yield
    assert root_has_kube_proxy_table() == before


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    made: list[str] = []
    procs: list[subprocess.Popen] = []

    def make() -> str:
        name = f"nft-test-{os.getpid()}-{next(_counter)}"
        sh("ip", "netns", "add", name)
        made.append(name)
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        return name

    make.procs = procs  # type: ignore[attr-defined]
    yield make
    for p in procs:
        p.kill()
        p.wait(timeout=10)
    for name in made:
        sh("ip", "netns", "del", name, check=False)


def ns(name: str, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", name, *argv, check=check, input=input)


def topology(make: Callable[[], str]) -> tuple[str, str]:
    """node <-veth-> pod; the pod answers on POD_IP and POD2_IP port 8080."""
    node, pod = make(), make()
    sh("ip", "link", "add", "nftn0", "netns", node, "type", "veth", "peer", "name", "nftp0", "netns", pod)
    ns(node, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "nftn0")
    ns(node, "ip", "link", "set", "nftn0", "up")
    # Locally generated traffic needs a route before nat-output can DNAT it.
    ns(node, "ip", "route", "add", "10.96.0.0/16", "dev", "nftn0")
    ns(pod, "ip", "addr", "add", f"{POD_IP}/24", "dev", "nftp0")
    ns(pod, "ip", "addr", "add", f"{POD2_IP}/24", "dev", "nftp0")
    ns(pod, "ip", "link", "set", "nftp0", "up")
    for name, ip in (("pod-a", POD_IP), ("pod-b", POD2_IP)):
        p = subprocess.Popen(["ip", "netns", "exec", pod, PY, "-c", SERVER, name, ip, "8080"],
                             stdout=subprocess.PIPE, text=True)
        make.procs.append(p)  # type: ignore[attr-defined]
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return node, pod


def connect(node: str, ip: str, port: int) -> str:
    return ns(node, PY, "-c", CLIENT, ip, str(port)).stdout.strip()


def objs(endpoints: list[str], *, extra: list[dict] | None = None) -> ClusterState:
    items = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                                       "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "endpoints": [{"addresses": [ip]} for ip in endpoints],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
        *(extra or []),
    ]
    return ClusterState.from_objects([from_dict(o) for o in items])


CFG = ProxierConfig(hostname="node1", node_ips=(NODE_IP,), service_cidrs=("10.96.0.0/16",),
                    proxy_mode="nftables", localhost_nodeports=False)


def test_rendered_ruleset_loads_and_lists(netns):
    node = netns()
    from tests.unit.refproxier.builders import proxy_state
    from tests.unit.refproxier.test_overall_rules import overall_objects
    from tests.unit.refproxier_nft.builders import nft_config

    cfg = nft_config()
    state = proxy_state(*overall_objects(), config=cfg)
    ns(node, "nft", "-f", "-", input=render_nft(state, cfg))
    ns(node, "nft", "-f", "-", input=render_nft(state, cfg))  # a second full sync replaces
    listing = ns(node, "nft", "list", "table", "ip", "kube-proxy").stdout
    assert "chain service-HVFWP5L3-ns5/svc5/tcp/p80" in listing
    assert "numgen random mod 2 vmap" in listing
    assert "set affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80" in listing
    # The firewall check runs before DNAT, the endpoint checks after it (kubernetes#132456).
    assert "chain filter-output-pre-dnat" in listing and "chain filter-output " in listing
    assert "hook output priority filter" in listing or "hook output priority 0" in listing


def test_cluster_ip_traffic_and_incremental_updates(netns):
    node, _pod = topology(netns)
    s1 = build_proxy_state(objs([POD_IP]), CFG)
    ns(node, "nft", "-f", "-", input=render_nft(s1, CFG))
    assert connect(node, "10.96.0.10", 80) == f"pod-a {NODE_IP}"
    assert connect(node, "10.96.0.10", 81) == "REFUSED"  # unknown port of a ClusterIP
    assert connect(node, "10.96.0.99", 80) == "TIMEOUT"  # unallocated ClusterIP: dropped
    assert connect(node, "10.96.0.11", 80) == "REFUSED"  # no endpoints: rejected

    # A partial sync moves the service to the other endpoint, in place.
    s2 = build_proxy_state(objs([POD2_IP]), CFG)
    script = render_nft(s2, CFG, changed=changed_services(s1, s2), previous=s1)
    assert "delete table" not in script
    ns(node, "nft", "-f", "-", input=script)
    assert connect(node, "10.96.0.10", 80) == f"pod-b {NODE_IP}"

    # Two endpoints: numgen spreads new connections over both.
    s3 = build_proxy_state(objs([POD_IP, POD2_IP]), CFG)
    ns(node, "nft", "-f", "-", input=render_nft(s3, CFG, changed=None, previous=s2))
    seen = {connect(node, "10.96.0.10", 80).split()[0] for _ in range(30)}
    assert seen == {"pod-a", "pod-b"}


def test_daemon_in_nftables_mode(netns, tmp_path: Path):
    node, _pod = topology(netns)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    items = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                                       "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "endpoints": [{"addresses": [POD_IP]}],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
    ]
    write_state(state_dir, items, 1)
    log = tmp_path / "daemon.log"
    argv = ["ip", "netns", "exec", node, PY, "-m", "refproxier", "run", "--proxy-mode", "nftables",
            "--hostname-override", "node1", "--node-ip", NODE_IP, "--service-cidr", "10.96.0.0/16",
            "--state-dir", str(state_dir), "--min-sync-period", "0.1"]
    with log.open("w") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    netns.procs.append(p)

    def wait_gen(gen: int) -> None:
        deadline = time.monotonic() + 20
        while read_applied(state_dir, "node1") != gen:
            assert p.poll() is None, f"daemon exited {p.returncode}\n{log.read_text()}"
            assert time.monotonic() < deadline, f"generation {gen} not applied\n{log.read_text()}"
            time.sleep(0.05)

    wait_gen(1)
    assert connect(node, "10.96.0.10", 80) == f"pod-a {NODE_IP}"
    items[1]["endpoints"] = [{"addresses": [POD2_IP]}]
    write_state(state_dir, items, 2)
    wait_gen(2)
    assert connect(node, "10.96.0.10", 80) == f"pod-b {NODE_IP}"
    p.terminate()
    assert p.wait(timeout=10) == 0
    # Rules stay after SIGTERM (as kube-proxy); cleanup removes the table.
    assert ns(node, "nft", "list", "table", "ip", "kube-proxy", check=False).returncode == 0
    ns(node, PY, "-m", "refproxier", "cleanup", "--proxy-mode", "nftables", "--hostname-override", "node1")
    assert ns(node, "nft", "list", "table", "ip", "kube-proxy", check=False).returncode != 0


def _previous_order(script: str) -> str:
    """The script in the order the renderer used before the commands were reordered for
    the kernel (one transaction: declarations, top-level chains' rules, then per-service
    chains' rules in declaration order, then elements)."""
    lines = [line for line in script.splitlines() if line and not line.startswith("#")]
    decl = [line for line in lines if not line.startswith(("add rule", "add element"))]
    chains = [line.split(" ")[4] for line in decl if line.startswith("add chain")]
    rules: dict[str, list[str]] = {c: [] for c in chains}
    for line in lines:
        if line.startswith("add rule"):
            rules[line.split(" ")[4]].append(line)
    top = [r for c in chains if "/" not in c for r in rules[c]]
    per_service = [r for c in chains if "/" in c for r in rules[c]]
    elements = [line for line in lines if line.startswith("add element")]
    return "\n".join(decl + top + per_service + elements) + "\n"


def _nft_in(tmp_path: Path, node: str):  # type: ignore[no-untyped-def]
    """refproxier.nft_exec.Nft running nft inside ``node``."""
    from refproxier.nft_exec import Nft

    wrapper = tmp_path / f"nft-{node}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {node} nft "$@"\n')
    wrapper.chmod(0o755)
    return Nft(4, str(wrapper))


def _listing(node: str) -> str:
    return ns(node, "nft", "list", "table", "ip", "kube-proxy").stdout


def _sorted_listing(node: str) -> list[str]:
    """The listing's chains and sets as sorted blocks: a table built by incremental syncs
    lists its chains in another order than one built at once."""
    blocks: list[str] = []
    for line in _listing(node).splitlines()[1:-1]:
        if line.startswith("\t") and not line.startswith("\t\t") and line.strip() != "}":
            blocks.append("")
        if blocks:
            blocks[-1] += line + "\n"
    return sorted(b.strip("\n") for b in blocks)


def test_reordered_and_two_step_rendering_lists_the_same_table(netns, tmp_path: Path):
    """The renderer's command order and nft_exec's commit of a new table in parts change
    nothing in the ruleset: old order in one transaction, new order in one transaction
    and new order in parts list exactly the same table."""
    from refproxier.nftables import split_replace_script
    from tests.unit.refproxier.builders import proxy_state
    from tests.unit.refproxier.test_overall_rules import overall_objects
    from tests.unit.refproxier_nft.builders import nft_config

    cfg = nft_config()
    script = render_nft(proxy_state(*overall_objects(), config=cfg), cfg)
    assert len(split_replace_script(script) or ()) == 3
    old, one, two = netns(), netns(), netns()
    ns(one, "nft", "-c", "-f", "-", input=script)  # loads
    ns(old, "nft", "-f", "-", input=_previous_order(script))
    ns(one, "nft", "-f", "-", input=script)
    nft = _nft_in(tmp_path, two)
    assert nft.apply(script).ok  # no table yet: skeleton, per-service rules, the rest
    assert _listing(old) == _listing(one) == _listing(two)
    assert "numgen random mod 2 vmap" in _listing(two)
    assert nft.apply(script).ok  # the table exists: one transaction replacing it
    assert _listing(two) == _listing(old)


def test_incremental_syncs_on_real_nft_give_the_full_table(netns, tmp_path: Path):
    """kube-proxy's TestSyncProxyRulesRepeated sequence through nft_exec (partial and
    full in-place syncs) lists the same chains, sets and rules as a fresh table."""
    from tests.unit.refproxier_nft.test_syncs import CFG as SYNC_CFG
    from tests.unit.refproxier_nft.test_syncs import _states

    states = _states()
    node, fresh = netns(), netns()
    nft = _nft_in(tmp_path, node)
    for mode in ("partial", "full-in-place"):
        assert nft.apply(render_nft(states[0], SYNC_CFG)).ok
        for prev, cur in zip(states, states[1:], strict=False):
            changed = changed_services(prev, cur) if mode == "partial" else None
            res = nft.apply(render_nft(cur, SYNC_CFG, changed=changed, previous=prev))
            assert res.ok, res.describe()
            ns(fresh, "nft", "-f", "-", input=render_nft(cur, SYNC_CFG))
            assert _sorted_listing(node) == _sorted_listing(fresh), (mode, states.index(cur))


def test_table_exists_follows_the_table_and_is_asked_once_per_canary_round(netns, tmp_path: Path):
    """The daemon's canary for nftables: the table is seen after a sync and missed after
    ``nft flush ruleset``; of the three canary tables only one question reaches nft."""
    from refproxier.nft_exec import NftOps, _Applied
    from tests.unit.refproxier.builders import proxy_state
    from tests.unit.refproxier.test_overall_rules import overall_objects
    from tests.unit.refproxier_nft.builders import nft_config

    node = netns()
    nft = _nft_in(tmp_path, node)
    assert not nft.table_exists()
    cfg = nft_config()
    assert nft.apply(render_nft(proxy_state(*overall_objects(), config=cfg), cfg)).ok
    assert nft.table_exists()
    asked: list[str] = []
    real = nft.table_exists
    nft.table_exists = lambda: asked.append("?") or real()  # type: ignore[method-assign]
    ops = NftOps(nft, _Applied())
    assert all(ops.chain_exists(t, "KUBE-PROXY-CANARY") for t in ("mangle", "nat", "filter"))
    assert asked == ["?"]
    ns(node, "nft", "flush", "ruleset")
    # the daemon watches the first canary table only, as kube-proxy's Monitor does
    assert not ops.chain_exists("mangle", "KUBE-PROXY-CANARY")


def test_a_table_left_by_a_previous_run_is_synced_in_place(netns, tmp_path: Path):
    """Over a real table, the listed full sync (the daemon's first sync when it finds a
    table, as kube-proxy's) gives exactly the table a fresh sync gives, deletes what is no
    longer wanted, and keeps the entries of an affinity set that is still wanted."""
    from refproxier.nft_exec import NftBackend, _Applied
    from tests.unit.refproxier.builders import proxy_state
    from tests.unit.refproxier_nft.test_syncs import CFG as SYNC_CFG
    from tests.unit.refproxier_nft.test_syncs import STEPS

    states = [proxy_state(*objs, config=SYNC_CFG) for objs in STEPS]
    before, after = states[9], states[10]  # affinity svc1 with two endpoints, then one
    node, fresh = netns(), netns()
    nft = _nft_in(tmp_path, node)
    assert nft.apply(render_nft(before, SYNC_CFG)).ok
    aff = next(line.split()[1] for line in _listing(node).splitlines()
               if line.strip().startswith("set affinity-") and "10.0.1.2" in line)
    ns(node, "nft", "add", "element", "ip", "kube-proxy", aff, "{ 203.0.113.9 }")

    backend = NftBackend(_Applied(), nft)  # a restarted daemon: nothing known, a table found
    script = backend.render(after, SYNC_CFG, changed=None)
    assert "delete table" not in script and "delete chain ip kube-proxy nat-output" in script
    assert nft.apply(script).ok
    elements = ns(node, "nft", "list", "set", "ip", "kube-proxy", aff).stdout
    assert "203.0.113.9" in elements
    ns(node, "nft", "delete", "element", "ip", "kube-proxy", aff, "{ 203.0.113.9 }")
    ns(fresh, "nft", "-f", "-", input=render_nft(after, SYNC_CFG))
    assert _sorted_listing(node) == _sorted_listing(fresh)
