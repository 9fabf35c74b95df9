"""harness.trace against real namespaces (root): an iptables DNAT rule, traced.

Each test makes its own pair of namespaces ``rpt-test-<pid>-<n>-{a,b}`` joined by a veth
and removes them afterwards; the root namespace is never touched.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.evidence import ATTACHMENTS
from harness.trace import TABLE, TraceError, attach_trace, flow_match, trace_probe

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                                reason="needs root and nft (network namespaces, nf_tables)")

_COUNTER = itertools.count()
VIP, BACKEND = "10.123.0.1", "10.250.0.2"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


@dataclass
class Pair:
    a: str  # the "node": rules and traces live here
    b: str  # the backend the rule DNATs to


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Two fresh namespaces, a 10.250.0.1/24 -- b 10.250.0.2/24, a routes the VIP to b."""
    base = f"rpt-test-{os.getpid()}-{next(_COUNTER)}"
    p = Pair(f"{base}-a", f"{base}-b")
    created = []
    try:
        for ns in (p.a, p.b):
            sh("ip", "netns", "add", ns)
            created.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", p.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", p.b)
        sh("ip", "-n", p.a, "addr", "add", "10.250.0.1/24", "dev", "va")
        sh("ip", "-n", p.b, "addr", "add", f"{BACKEND}/24", "dev", "vb")
        sh("ip", "-n", p.a, "link", "set", "va", "up")
        sh("ip", "-n", p.b, "link", "set", "vb", "up")
        sh("ip", "-n", p.a, "route", "add", f"{VIP}/32", "via", BACKEND)
        yield p
    finally:
        for ns in reversed(created):
            sh("ip", "netns", "del", ns, check=False)


def connect(netns: str, host: str, port: int) -> None:
    """One TCP connection attempt from ``netns`` (refused is fine: b has no listener)."""
    sh("ip", "netns", "exec", netns, "timeout", "2", "bash", "-c",
       f"echo > /dev/tcp/{host}/{port}", check=False)


def dnat(tool: str, netns: str) -> None:
    sh("ip", "netns", "exec", netns, tool, "-t", "nat", "-A", "OUTPUT", "-d", VIP, "-p", "tcp",
       "--dport", "80", "-j", "DNAT", "--to-destination", f"{BACKEND}:8080")


def tables(netns: str) -> str:
    return sh("ip", "netns", "exec", netns, "nft", "list", "tables").stdout


def test_trace_shows_iptables_nft_dnat(pair: Pair) -> None:
    dnat("iptables-nft", pair.a)
    text = trace_probe(pair.a, flow_match(daddr=VIP, dport=80), send=lambda: connect(pair.a, VIP, 80))
    assert f"inet {TABLE} output packet" in text, text
    assert "ip nat OUTPUT rule" in text and f"dnat to {BACKEND}:8080" in text, text
    assert "unknown rule" not in text, text
    assert TABLE not in tables(pair.a), "the trace table must be removed"


def test_trace_without_matching_traffic_says_so(pair: Pair) -> None:
    text = trace_probe(pair.a, flow_match(daddr=VIP, dport=81), send=lambda: connect(pair.a, VIP, 80),
                       duration=0.5)
    assert text.startswith("(no packet matched"), text


def test_bad_match_is_an_error_and_leaves_nothing(pair: Pair) -> None:
    with pytest.raises(TraceError, match="refused the trace rule"):
        trace_probe(pair.a, "ip daddr not-an-address", send=lambda: None)
    assert TABLE not in tables(pair.a)


@pytest.mark.skipif(not shutil.which("iptables-legacy"), reason="needs iptables-legacy")
def test_legacy_rules_appear_as_counter_deltas(pair: Pair) -> None:
    dnat("iptables-legacy", pair.a)
    text = trace_probe(pair.a, flow_match(daddr=VIP, dport=80), send=lambda: connect(pair.a, VIP, 80))
    # The nft trace sees our chain only; the legacy DNAT rule shows up by its counters.
    assert f"inet {TABLE} output packet" in text, text
    assert "ip nat OUTPUT" not in text, text
    assert "iptables-legacy rules are not in the nft trace" in text, text
    assert f"--to-destination {BACKEND}:8080" in text.split("counters grew")[1], text


def test_attach_trace_adds_evidence(pair: Pair, request: pytest.FixtureRequest) -> None:
    dnat("iptables-nft", pair.a)
    attach_trace(request, pair.a, flow_match(daddr=VIP, dport=80), send=lambda: connect(pair.a, VIP, 80))
    [(title, text)] = request.node.stash[ATTACHMENTS]
    assert title == f"packet trace, {pair.a}: ip daddr {VIP} tcp dport 80"
    assert f"dnat to {BACKEND}:8080" in text
    request.node.stash[ATTACHMENTS].clear()
