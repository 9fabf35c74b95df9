"""Sync cost of the reference proxier: nftables mode vs iptables-legacy (root).

For N Services x 10 endpoints (ClusterIP, TCP; default N = 1,000 and 10,000), and each mode:

* full sync: render the whole ruleset and apply it to an empty throwaway namespace
  (nftables: ``refproxier.nft_exec.Nft.apply``, which commits a new table in a few
  ``nft -f`` transactions, see below / ``iptables-legacy-restore --noflush``);
* one-endpoint update: one endpoint of one Service changes; render the partial sync
  (nftables: in place against the previous state; iptables: only that Service's chains,
  kube-proxy's MinimizeIPTablesRestore) and apply it on top of the full ruleset;
* nftables only: a full sync in place (kube-proxy's periodic full resync: every chain
  flushed and rewritten, maps flushed and refilled, one transaction) back to the first
  state on top of the updated table.

Render and apply times are reported separately (medians over ``--rounds``); the proxy
state is built directly (no YAML), so this measures rule generation and the kernel
interface only. The built-in chains' jump rules are not installed for iptables (a few
``iptables -C/-I`` calls per full sync, independent of N). Every namespace is
``nft-test-bench-<pid>-<n>`` and is deleted at the end.

Finding (kernel 6.18, nft 1.0.6): the cost of kube-proxy's table is in the rules that bind
an anonymous set, the per-service ``numgen random mod N vmap { ... }``. For each one the
kernel walks the whole transaction so far (``__nft_set_trans_bind``) and every set of the
table a few times (naming the new anonymous set, looking it up). Rendered as before (every
``add chain`` first, then every rule, in one transaction), each of the 10,000 binds walked
more than 110,000 transaction entries: 202 s at 10,000 Services. The renderer now writes
those rules before everything that does not have to precede them, and a new table is
committed in parts (empty chains and sets first, then the per-service rules a few thousand
Services at a time, then the rest), so the walks are short. What is left grows with the
number of sets in the table, which every bind also walks (about 10 s at 10,000 Services),
and is the same for kube-proxy. A full sync in place (one transaction: it must be atomic)
still pays for the walks, but no longer behind every flush and element.

Usage: sudo .venv/bin/python benchmarks/sync_nft_vs_iptables.py [--sizes 1000,10000] [--rounds 3]
Last line of output: one JSON object.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refproxier import iptables, nft_exec, nftables  # noqa: E402
from refproxier.config import ProxierConfig  # noqa: E402
from refproxier.memo import PortMemo  # noqa: E402
from refproxier.nft_exec import Nft  # noqa: E402
from refproxier.nftables import render_nft  # noqa: E402
from refproxier.proxystate import EndpointInfo, ProxyState, ServicePortInfo  # noqa: E402

ENDPOINTS_PER_SERVICE = 10
# The daemon gives nft 120 s; a benchmark should measure a slow apply, not fail on it.
nft_exec._TIMEOUT = 1800.0
_counter = itertools.count()
CFG = ProxierConfig(hostname="node1", node_ips=("192.0.2.1",), cluster_cidrs=("10.128.0.0/9",),
                    service_cidrs=("10.96.0.0/12",), localhost_nodeports=False)


def state(n: int, changed_index: int | None = None) -> ProxyState:
    base_svc = int(ipaddress.ip_address("10.96.0.0"))
    base_ep = int(ipaddress.ip_address("10.128.0.0"))
    ports = []
    for i in range(n):
        eps = []
        for j in range(ENDPOINTS_PER_SERVICE):
            k = i * ENDPOINTS_PER_SERVICE + j
            if changed_index == i and j == 0:
                k = n * ENDPOINTS_PER_SERVICE + 1  # the one endpoint that moved
            eps.append(EndpointInfo(str(ipaddress.ip_address(base_ep + k)), 8080))
        eps.sort(key=lambda e: e.address)
        sp = ServicePortInfo(f"ns{i // 100}", f"svc{i}", "http", "TCP",
                             str(ipaddress.ip_address(base_svc + 1 + i)), 80)
        ports.append(replace(sp, endpoints=tuple(eps), cluster_endpoints=tuple(eps),
                             all_reachable_endpoints=tuple(eps), has_endpoints=True))
    ports.sort(key=lambda sp: (sp.port_name_string, sp.protocol))
    return ProxyState("node1", 4, tuple(ports))


def sh(*argv: str, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed: {p.stderr[:500]}")
    return p


class Netns:
    def __init__(self) -> None:
        self.name = f"nft-test-bench-{os.getpid()}-{next(_counter)}"
        sh("ip", "netns", "add", self.name)

    def run(self, *argv: str, input: str | None = None) -> float:
        t0 = time.perf_counter()
        sh("ip", "netns", "exec", self.name, *argv, input=input)
        return time.perf_counter() - t0

    def nft(self) -> Nft:
        """refproxier.nft_exec.Nft running nft in this namespace."""
        wrapper = Path(f"/tmp/{self.name}-nft")
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} nft "$@"\n')
        wrapper.chmod(0o755)
        self.wrapper = wrapper
        return Nft(4, str(wrapper))

    def close(self) -> None:
        if getattr(self, "wrapper", None):
            self.wrapper.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def timed(f):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    v = f()
    return v, time.perf_counter() - t0


def bench_nft(s1: ProxyState, s2: ProxyState, key: str) -> dict[str, float]:
    # Start cold: the renderer keeps the last models. The update then reuses s1's model,
    # as in the daemon (the previous sync's state is the same object).
    nftables._MODEL_CACHE.clear()
    ns = Netns()

    def apply(nft: Nft, script: str) -> float:
        res, t = timed(lambda: nft.apply(script))
        if not res.ok:
            raise RuntimeError(f"nft failed: {res.describe()[:500]}")
        return t

    try:
        nft = ns.nft()
        memo: PortMemo = PortMemo()  # the daemon's: ports equal to the last sync's are reused
        full, t_render = timed(lambda: render_nft(s1, CFG, memo=memo))
        t_apply = apply(nft, full)
        part, t_render_p = timed(lambda: render_nft(s2, CFG, changed={key}, previous=s1, memo=memo))
        t_apply_p = apply(nft, part)
        back, t_render_b = timed(lambda: render_nft(s1, CFG, changed=None, previous=s2, memo=memo))
        t_apply_b = apply(nft, back)
    finally:
        ns.close()
    return {"full_render_s": t_render, "full_apply_s": t_apply, "full_lines": full.count("\n"),
            "update_render_s": t_render_p, "update_apply_s": t_apply_p, "update_lines": part.count("\n"),
            "inplace_full_render_s": t_render_b, "inplace_full_apply_s": t_apply_b}


def bench_ipt(s1: ProxyState, s2: ProxyState, key: str) -> dict[str, float]:
    ns = Netns()
    restore = ["iptables-legacy-restore", "-w", "--noflush", "--counters"]
    try:
        memo: PortMemo = PortMemo()
        full, t_render = timed(lambda: iptables.render(s1, CFG, memo=memo))
        t_apply = ns.run(*restore, input=full)
        chains = frozenset(
            line.split()[0][1:] for line in sh("ip", "netns", "exec", ns.name, "iptables-legacy-save", "-t", "nat")
            .stdout.splitlines() if line.startswith(":")
        )
        part, t_render_p = timed(lambda: iptables.render(s2, CFG, changed={key}, existing_nat_chains=chains,
                                                          memo=memo))
        t_apply_p = ns.run(*restore, input=part)
    finally:
        ns.close()
    return {"full_render_s": t_render, "full_apply_s": t_apply, "full_lines": full.count("\n"),
            "update_render_s": t_render_p, "update_apply_s": t_apply_p, "update_lines": part.count("\n")}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    results: dict[str, dict[str, dict[str, float]]] = {}
    for n in (int(x) for x in args.sizes.split(",")):
        changed = n // 2
        s1, s2 = state(n), state(n, changed)
        key = next(sp.service_key for sp in s1.service_ports if sp.name == f"svc{changed}")
        res = {}
        for mode, fn in (("nftables", bench_nft), ("iptables-legacy", bench_ipt)):
            res[mode] = median_of([fn(s1, s2, key) for _ in range(args.rounds)])
            print(f"{n} services x {ENDPOINTS_PER_SERVICE}: {mode}: {res[mode]}", flush=True)
        results[str(n)] = res
    env = {"kernel": platform.release(),
           "nft": sh("nft", "--version").stdout.strip(),
           "iptables": sh("iptables-legacy", "--version").stdout.strip(),
           "python": platform.python_version(), "rounds": args.rounds}
    print(json.dumps({"benchmark": "sync_nft_vs_iptables", "endpoints_per_service": ENDPOINTS_PER_SERVICE,
                      "env": env, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
