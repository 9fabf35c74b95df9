"""Packet traces for failing probes, from nftables' trace facility inside a node's namespace.

``trace_probe(netns, match, send)`` adds a table ``inet svcconf_trace`` to the namespace
with two chains at priority raw - 10 (-310, before iptables-nft's raw table and
conntrack) on the prerouting and output hooks, each with one rule ``<match> meta nftrace
set 1``; it runs ``nft monitor`` in the namespace, calls ``send()`` to make the traffic,
and returns the trace lines (``trace id ... <table> <chain> rule ... (verdict ...)``)
read for a bounded time. The table is removed afterwards, also on errors. The packet's
trace flag stays set for the rest of its path (nat, filter, forward, postrouting).

What you see depends on the flavour of the rules:

* **nftables and iptables-nft**: iptables-nft rules are nf_tables rules underneath, so the
  trace names each iptables chain (``ip nat KUBE-SERVICES``) and the rule that decided
  (``... dnat to 10.0.1.5:8080 (verdict accept)``); xt matches nft cannot print show as
  ``# xt_...``.
* **iptables-legacy**: legacy tables are not nf_tables chains, so the trace shows only our
  own chains; the legacy rules the packet crossed do not appear. The legacy way (a
  ``-j TRACE`` rule in the raw table) logs through nf_log to the kernel log, which is not
  per namespace: it needs ``sysctl net.netfilter.nf_log_all_netns=1`` on the host and
  reading the host's ``dmesg``, mixed with every other namespace, so the harness does not
  do it. Instead, when the namespace has legacy rules, the trace text ends with the legacy
  rules whose packet counters changed while ``send()`` ran (``iptables-legacy-save -c``
  before and after): which rules matched, without their order.

Attach a trace to a failing check with ``attach_trace(request, netns, match, send)``: the
text appears in report.json's ``evidence`` and folded under the check in report.html::

    def test_x(cluster, request):
        ...
        if not verdict.passed:
            attach_trace(request, node.netns, flow_match(daddr=svc.cluster_ip, dport=80),
                         send=lambda: probe(source, svc.cluster_ip, 80, "tcp", count=1))
        expect(verdict, f"from {source.name}")

Needs root and ``nft``. One trace at a time per namespace (the table name is fixed).
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness.evidence import attach

TABLE = "svcconf_trace"
PRIORITY = -310  # raw (-300) - 10: before iptables-nft's raw table and conntrack (-200)


class TraceError(RuntimeError):
    """The trace could not be set up (bad match expression, no nft, no namespace)."""


def flow_match(daddr: str | None = None, dport: int | None = None, proto: str = "tcp",
               saddr: str | None = None, sport: int | None = None) -> str:
    """An nft match expression for one flow, e.g. ``ip daddr 10.96.0.10 tcp dport 80``."""
    parts = []
    for field, addr in (("saddr", saddr), ("daddr", daddr)):
        if addr:
            parts.append(f"{'ip6' if ':' in addr else 'ip'} {field} {addr}")
    if proto:
        if sport is not None:
            parts.append(f"{proto} sport {int(sport)}")
        if dport is not None:
            parts.append(f"{proto} dport {int(dport)}")
        if sport is None and dport is None:
            parts.append(f"meta l4proto {proto}")
    return " ".join(parts)


def _ns(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def _nft(netns: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_ns(netns, "nft", "-f", "-"), input=script, capture_output=True,
                          text=True, timeout=30)


def _ruleset(match: str) -> str:
    # "add" then "delete" clears a table left by a killed run without failing if absent.
    chains = "".join(
        f"  chain {name} {{ type filter hook {hook} priority {PRIORITY}; policy accept;\n"
        f"    {match} meta nftrace set 1\n  }}\n"
        for name, hook in (("prerouting", "prerouting"), ("output", "output")))
    return (f"add table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n{chains}}}\n")


def _legacy_counters(netns: str) -> dict[str, str] | None:
    """Legacy rules with their counters, keyed by table and rule; None without legacy rules."""
    try:
        r = subprocess.run(_ns(netns, "iptables-legacy-save", "-c"), capture_output=True,
                           text=True, timeout=30)
    except FileNotFoundError:
        return None
    if r.returncode != 0 or " -A " not in r.stdout:  # "-c" lines read "[pkts:bytes] -A ..."
        return None
    out, table = {}, ""
    for line in r.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("["):
            counters, _, rule = line.partition(" ")
            out[f"{table}: {rule}"] = counters
    return out


def _counter_delta(before: dict[str, str], after: dict[str, str]) -> list[str]:
    def packets(c: str | None) -> int:
        try:
            return int((c or "[0:0]").strip("[]").split(":")[0])
        except ValueError:
            return 0
    return [f"+{packets(c) - packets(before.get(k))} pkts  {k}"
            for k, c in after.items() if packets(c) > packets(before.get(k))]


def trace_probe(netns: str, match: str, send: Callable[[], Any] | None = None, *,
                duration: float = 2.0, quiet: float = 0.5, ready_timeout: float = 5.0) -> str:
    """Trace packets matching ``match`` (an nft expression) in ``netns`` while ``send()``
    runs; return the trace lines as text.

    Without ``send`` it traces whatever traffic arrives for ``duration`` seconds. With it,
    reading stops ``quiet`` seconds after the last trace line once ``send`` has returned,
    and at the latest ``duration`` seconds after it returned. Raises ``TraceError`` if the
    table cannot be added (the message has nft's error, e.g. for a bad match).
    """
    # The table goes in before the monitor starts: nft monitor resolves the rules of trace
    # events from the cache it builds at start, and rules added later print as "unknown
    # rule handle". It has no ready signal either, so once it runs we add and delete a
    # chain and wait to see that event: from then on no trace event is missed.
    r = _nft(netns, _ruleset(match))
    if r.returncode != 0:
        _nft(netns, f"add table inet {TABLE}\ndelete table inet {TABLE}\n")
        raise TraceError(f"nft in {netns} refused the trace rule for match {match!r}: "
                         f"{r.stderr.strip()}")
    try:
        mon = subprocess.Popen(_ns(netns, "nft", "monitor"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    except FileNotFoundError as exc:
        _nft(netns, f"add table inet {TABLE}\ndelete table inet {TABLE}\n")
        raise TraceError(f"cannot run nft in {netns}: {exc}") from None
    lines: list[str] = []
    ready = threading.Event()
    last = [time.monotonic()]

    def reader() -> None:
        assert mon.stdout is not None
        for line in mon.stdout:
            line = line.rstrip("\n")
            if line.startswith(f"add chain inet {TABLE} ready"):
                ready.set()
            if line.startswith("trace id"):
                lines.append(line)
                last[0] = time.monotonic()

    thread = threading.Thread(target=reader, name=f"nft-monitor-{netns}", daemon=True)
    thread.start()
    legacy_before = None
    try:
        deadline = time.monotonic() + ready_timeout
        while not ready.is_set():
            if time.monotonic() > deadline or mon.poll() is not None:
                raise TraceError(f"nft monitor in {netns} did not start within {ready_timeout}s")
            _nft(netns, f"add chain inet {TABLE} ready\ndelete chain inet {TABLE} ready\n")
            ready.wait(0.2)
        legacy_before = _legacy_counters(netns)
        if send is not None:
            send()
            done = time.monotonic()
            while time.monotonic() - done < duration:
                if lines and time.monotonic() - last[0] >= quiet:
                    break
                time.sleep(0.05)
        else:
            time.sleep(duration)
    finally:
        mon.terminate()
        try:
            mon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            mon.kill()
            mon.wait()
        thread.join(timeout=5)
        _nft(netns, f"add table inet {TABLE}\ndelete table inet {TABLE}\n")
    text = "\n".join(lines) if lines else f"(no packet matched {match!r} in {netns})"
    if legacy_before is not None:
        after = _legacy_counters(netns) or {}
        delta = _counter_delta(legacy_before, after)
        text += ("\n\n# iptables-legacy rules are not in the nft trace; legacy rules whose "
                 "packet counters grew meanwhile (any traffic, not only this flow):\n"
                 + ("\n".join(delta) if delta else "(none)"))
    return text


def attach_trace(request: pytest.FixtureRequest, netns: str, match: str,
                 send: Callable[[], Any] | None = None, **kwargs: Any) -> str:
    """``trace_probe`` and attach its text as ``packet trace, <netns>: <match>``; returns
    the text. A trace that cannot be taken is attached as the reason why, so that the
    check's own failure is what the report leads with."""
    title = f"packet trace, {netns}: {match}"
    try:
        text = trace_probe(netns, match, send, **kwargs)
    except (TraceError, subprocess.SubprocessError, OSError) as exc:
        text = f"(no trace: {exc})"
    attach(request, title, f"$ {shlex.join(_ns(netns, 'nft', 'monitor', 'trace'))}\n{text}")
    return text
