"""Network safety: the root namespace is untouched, and nothing of ours outlives a run, however
it ends (normal exit, exception, SIGINT, SIGKILL followed by a new run). Needs root."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.topology.netns import Topology
from harness.topology.registry import RUNS_DIR
from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec
from harness.traffic.probe import Outcome, probe

from .conftest import needs_root

pytestmark = needs_root

ROOT_SYSCTLS = [
    "net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/all/send_redirects",
    "net/ipv4/icmp_ratemask", "net/bridge/bridge-nf-call-iptables",
    "net/ipv6/conf/all/forwarding",
]


def _cmd(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return f"{argv[0]}: not installed"
    return out.stdout + out.stderr


def _save(*argv: str) -> str:
    # timestamps and packet counters change on their own; the rules themselves must not
    text = _cmd(*argv)
    text = re.sub(r"^#.*$", "", text, flags=re.M)
    return re.sub(r"\[\d+:\d+\]", "[-]", text)


def root_snapshot() -> dict[str, str]:
    """Everything of the root namespace a topology could conceivably change."""
    snap = {
        "links": _cmd("ip", "-o", "link", "show"),
        "addrs": re.sub(r"(valid|preferred)_lft \S+", "", _cmd("ip", "-o", "addr", "show")),
        "routes4": _cmd("ip", "-4", "route", "show", "table", "all"),
        "routes6": _cmd("ip", "-6", "route", "show", "table", "all"),
        "rules4": _cmd("ip", "-4", "rule", "show"),
        "rules6": _cmd("ip", "-6", "rule", "show"),
        "iptables-nft": _save("iptables-nft-save"),
        "ip6tables-nft": _save("ip6tables-nft-save"),
        "iptables-legacy": _save("iptables-legacy-save"),
        "nft": _cmd("nft", "list", "ruleset"),
    }
    for key in ROOT_SYSCTLS:
        p = Path("/proc/sys") / key
        snap[key] = p.read_text() if p.exists() else "absent"
    return snap


def _rtnl_monitor() -> socket.socket:
    """A netlink socket in the root namespace subscribed to link/address/route changes."""
    groups = 0
    # RTNLGRP_LINK=1, IPV4_IFADDR=5, IPV4_ROUTE=7, IPV6_IFADDR=9, IPV6_ROUTE=11, IPV4_RULE=8
    for g in (1, 5, 7, 8, 9, 11):
        groups |= 1 << (g - 1)
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((0, groups))
    return s


def _drain(s: socket.socket) -> list[int]:
    types = []
    while True:
        try:
            data = s.recv(1 << 16)
        except BlockingIOError:
            return types
        while len(data) >= 16:
            length, mtype = struct.unpack_from("=IH", data)
            types.append(mtype)
            data = data[max(length, 16):]


@pytest.mark.parametrize("mode", ["routed", "bridge"])
def test_root_namespace_is_untouched(mode: str) -> None:
    before = root_snapshot()
    mon = _rtnl_monitor()
    try:
        spec = TopologySpec(nodes=[NodeSpec("a"), NodeSpec("b")],
                            clients=[ClientSpec("c", extra_addresses=2)], pod_network=mode,
                            hairpin_mode=True)
        with Topology(spec) as topo:
            for i, node in enumerate(["a", "b", "b"]):
                topo.add_pod(f"p{i}", node)
            for pod in topo.pods.values():
                for proto in ("tcp", "udp"):
                    [obs] = probe(topo.clients["c"], pod.ip, 8080, proto)
                    assert obs.outcome is Outcome.REPLY
            during = root_snapshot()
            events_up = _drain(mon)
        events_down = _drain(mon)
    finally:
        mon.close()
    after = root_snapshot()
    for key in before:
        assert during[key] == before[key], f"root {key} changed while the topology was up"
        assert after[key] == before[key], f"root {key} changed after teardown"
    # not even a transient change (a veth created in the root and then moved would show)
    assert events_up == [] and events_down == [], \
        f"root netlink saw message types {events_up} / {events_down}"
    assert _cmd("ip", "-o", "link", "show", "type", "veth") == ""


CHILD = r"""
import faulthandler, json, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # evidence if its cleanup hangs
# Ctrl-C as in a terminal: a shell that starts a job in the background (as a CI script may)
# leaves SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all.
signal.signal(signal.SIGINT, signal.default_int_handler)
from harness.topology.netns import Topology
from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec
mode = sys.argv[1]
spec = TopologySpec(nodes=[NodeSpec("n1"), NodeSpec("n2")], clients=[ClientSpec("c")],
                    pod_network="bridge")
with Topology(spec) as topo:
    topo.add_pod("p1", "n1")
    topo.add_pod("p2", "n2")
    sleeper = topo.pods["p1"].popen(["sleep", "300"])
    print(json.dumps({"prefix": topo.prefix, "pids": [topo.echo.pid, sleeper.pid],
                      "netns": [h.netns for h in topo.hosts.values()] + [topo.lan_netns]}),
          flush=True)
    if mode == "raise":
        raise RuntimeError("boom")
    if mode == "wait":
        time.sleep(300)
"""


def _start_child(mode: str) -> tuple[subprocess.Popen, dict]:
    # stderr goes to a file: a pipe's EOF would also wait for every process that inherited
    # it, and the child's exit is what is tested. ``_stderr(proc)`` reads it.
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE,
                            stderr=err, text=True)
    proc.stderr_file = err  # type: ignore[attr-defined]
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        proc.wait()
        pytest.fail(f"child did not build its topology: {_stderr(proc)}")
    return proc, json.loads(line)


def _stderr(proc: subprocess.Popen) -> str:
    f = proc.stderr_file  # type: ignore[attr-defined]
    f.seek(0)
    return f.read()


def _wait_exit(proc: subprocess.Popen, info: dict, why: str, timeout: float = 60) -> int:
    """The child's exit status; if it does not exit in time, fail with every thread's stack
    (faulthandler, SIGUSR1) and what it left behind."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        proc.kill()
        proc.wait()
        pytest.fail(f"the child did not exit within {timeout:.0f} s {why}; its threads:\n"
                    f"{_stderr(proc)}\nleft behind: {_leftovers(info)}")


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _leftovers(info: dict) -> list[str]:
    names = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    left = [f"netns {n}" for n in names if n.startswith(info["prefix"] + "-")]
    left += [f"pid {p}" for p in info["pids"] if _pid_alive(p)]
    if (RUNS_DIR / info["prefix"]).exists():
        left.append(f"registry {RUNS_DIR / info['prefix']}")
    return left


def _wait_clean(info: dict, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _leftovers(info)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("mode,code", [("exit", 0), ("raise", 1)])
def test_nothing_left_after_exit_or_exception(mode: str, code: int) -> None:
    proc, info = _start_child(mode)
    assert _wait_exit(proc, info, f"({mode})") == code, _stderr(proc)
    assert _wait_clean(info) == []
    assert _cmd("ip", "-o", "link", "show", "type", "veth") == ""


def test_nothing_left_after_sigint() -> None:
    proc, info = _start_child("wait")
    proc.send_signal(signal.SIGINT)
    code = _wait_exit(proc, info, "of SIGINT")
    assert code != 0 and "KeyboardInterrupt" in _stderr(proc)
    assert _wait_clean(info) == []


def test_sigkilled_run_is_reaped_by_the_next_run() -> None:
    proc, info = _start_child("wait")
    proc.kill()
    proc.wait(10)
    # the killed run really left things behind (or this test proves nothing)
    assert any(x.startswith("netns") for x in _leftovers(info))
    assert _pid_alive(info["pids"][1]), "the pod's process should outlive a SIGKILLed run"
    # the next run's start reaps it
    spec = TopologySpec(nodes=[NodeSpec("n1")], clients=[])
    with Topology(spec, echo=False):
        assert _wait_clean(info, timeout=5) == []
    assert _cmd("ip", "-o", "link", "show", "type", "veth") == ""


def test_the_netlink_monitor_can_see_a_change() -> None:
    # proves the "no transient change" check above can fail: the same monitor, opened in
    # one of our namespaces, sees a link being added there
    with Topology(TopologySpec(nodes=[NodeSpec("n1")], clients=[]), echo=False) as topo:
        node = topo.nodes["n1"]
        mon = node.call(_rtnl_monitor)
        try:
            node.run(["ip", "link", "add", "probe0", "type", "bridge"], check=True)
            assert _drain(mon), "monitor saw nothing"
        finally:
            mon.close()
