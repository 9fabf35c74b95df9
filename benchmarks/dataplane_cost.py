"""Data-plane cost per connection at scale (root): new-connection rate and first-packet
latency through a Service at the start, middle and end of the ruleset, for several
proxiers (default: the reference in iptables and nftables mode) side by side.

Each proxier gets its own one-node cluster; all are up at once, so the samples of every
(proxier, position) are interleaved in random order, round after round (``--rounds``).
The bulk grows in the same clusters (default 100, 1,000, 10,000 Services x 10 endpoints,
every endpoint a real pod on the node). From the node itself (the nat OUTPUT path, the
same KUBE-SERVICES or service-ips lookup as forwarded traffic), one sample is ``--conns``
sequential TCP connections to a Service: connect (SYN to SYN-ACK: the first packet, the
one that walks the Service rules; later packets follow conntrack), read the pod's
greeting, close with RST. Rate = connections / wall time of the sample; latency = the
median connect time of the sample.

Positions: for iptables-mode proxiers, the order of the Services' rules in the nat
KUBE-SERVICES chain as ``iptables-save`` lists it (kube-proxy's order is its Go map's, so
it is read, not assumed): the first, middle and last bulk Service. nftables-mode proxiers
look Services up in a map, and positions are the creation order (first, middle, last).

Reported per size, proxier and position: medians over rounds with 95% bootstrap intervals,
and paired ratios inside each round (end / start; each proxier / the first one at the
same position).

Usage: sudo .venv/bin/python benchmarks/dataplane_cost.py [--proxiers reference,reference-nft]
       [--iptables legacy|nft] [--sizes 100,1000,10000] [--rounds 10] [--conns 200]
       [--quick] [--out FILE]
Progress on stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import socket
import statistics
import struct
import time
from typing import Any

import _cluster as bc

POSITIONS = ("start", "middle", "end")
LINGER0 = struct.pack("ii", 1, 0)
_RULE = re.compile(r"^-A KUBE-SERVICES -d (\S+?)/32 ")


def connect_loop(dst: str, port: int, n: int, timeout: float) -> tuple[list[float], float, int]:
    """``n`` sequential connections: (connect seconds of each, wall seconds, failures)."""
    lat: list[float] = []
    fail = 0
    t_all = time.perf_counter()
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            t0 = time.perf_counter()
            s.connect((dst, port))
            lat.append(time.perf_counter() - t0)
            buf = b""
            while b"\n" not in buf:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
            if b"\n" not in buf:
                fail += 1
        except OSError:
            fail += 1
        finally:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            s.close()
    return lat, time.perf_counter() - t_all, fail


def positions(cluster: bc.BenchCluster) -> dict[str, Any]:
    """The probed Service at each position, and how positions were found."""
    n = cluster.bulk
    bulk = cluster.bulk_ips()
    if cluster.spec.netfilter == "iptables":
        node = cluster.env.nodes[0]
        out = node.run([f"iptables-{cluster.iptables}-save", "-t", "nat"], check=True,
                       capture_output=True, text=True, timeout=600)
        index = {ip: k for k, ip in enumerate(bulk)}
        order = []
        rules = 0
        for line in out.stdout.splitlines():
            if line.startswith("-A KUBE-SERVICES "):
                rules += 1
                m = _RULE.match(line)
                if m and m.group(1) in index:
                    order.append((m.group(1), rules))
        if len(order) >= n:
            picks = {"start": order[0], "middle": order[len(order) // 2], "end": order[-1]}
            return {"how": "KUBE-SERVICES rule order (iptables-save)", "chain_rules": rules,
                    **{p: {"ip": ip, "rule": k} for p, (ip, k) in picks.items()}}
    return {"how": "creation order (map lookup, or no KUBE-SERVICES chain)",
            "start": {"ip": bulk[0], "rule": None}, "middle": {"ip": bulk[n // 2], "rule": None},
            "end": {"ip": bulk[-1], "rule": None}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bc.add_proxier_args(ap, many=True)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=200, help="connections per sample")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="100 Services, 3 rounds of 50")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    bc.require_root()
    bc.install_signal_handlers()
    if args.quick:
        args.sizes, args.rounds, args.conns, args.settle = "100", 3, 50, 1.0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    names = [p for p in (args.proxiers or "reference,reference-nft").split(",") if p]
    specs = [bc.proxier_spec(n, kube_proxy_version=args.kube_proxy_version) for n in names]
    labels = [bc.spec_label(s, args.iptables) for s in specs]
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "benchmark": "dataplane_cost", "proxiers": labels, "iptables": args.iptables,
        "control_plane": args.control_plane, "rounds": args.rounds, "conns": args.conns,
        "per_service": args.per_service, "environment": bc.environment(), "sizes": {}}
    bc.log(f"dataplane cost: {', '.join(labels)}; sizes {sizes}; {args.rounds} rounds of "
           f"{args.conns} connections per (proxier, position)")
    with contextlib.ExitStack() as stack:
        clusters = []
        for spec in specs:
            c = stack.enter_context(bc.BenchCluster(
                spec, iptables=args.iptables, control_plane=args.control_plane, nodes=1,
                bulk_pods=max(10, args.per_service), per_service=args.per_service))
            clusters.append(c)
        for size in sizes:
            for lab, c in zip(labels, clusters, strict=True):
                c.put_bulk(size)
                t = c.start() if not c.env.proxiers else c.sync()
                bc.log(f"{lab}: {size} Services applied in {t:.2f} s")
            time.sleep(args.settle)
            pos = [positions(c) for c in clusters]
            for lab, p in zip(labels, pos, strict=True):
                bc.log(f"{lab}: {p['how']}: " + ", ".join(
                    f"{k} {p[k]['ip']}" + (f" (rule {p[k]['rule']})" if p[k]["rule"] else "")
                    for k in POSITIONS))
            combos = [(i, k) for i in range(len(clusters)) for k in POSITIONS]
            samples: dict[tuple[int, str], dict[str, list[float]]] = {
                c: {"rate": [], "lat": [], "all_lat": [], "fail": []} for c in combos}
            for i, c in enumerate(clusters):  # warm-up: caches, ARP, echo server
                for k in POSITIONS:
                    c.env.nodes[0].call(connect_loop, pos[i][k]["ip"], 80, 20, 2.0)
            la0 = bc.loadavg()
            for r in range(args.rounds):
                order = combos[:]
                rng.shuffle(order)
                for i, k in order:
                    node = clusters[i].env.nodes[0]
                    lat, wall, fail = node.call(connect_loop, pos[i][k]["ip"], 80,
                                                args.conns, 2.0)
                    s = samples[(i, k)]
                    s["rate"].append(len(lat) / wall)
                    s["lat"].append(statistics.median(lat) if lat else float("nan"))
                    s["all_lat"] += lat
                    s["fail"].append(fail)
                bc.log(f"  size {size} round {r + 1}/{args.rounds}: " + "; ".join(
                    f"{labels[i]} {k} {samples[(i, k)]['rate'][-1]:.0f}/s "
                    f"{samples[(i, k)]['lat'][-1] * 1e6:.0f} us" for i, k in combos))
            la1 = bc.loadavg()
            out: dict[str, Any] = {"loadavg": [la0, la1], "proxiers": {}}
            for i, lab in enumerate(labels):
                per: dict[str, Any] = {"positions": pos[i], "at": {}}
                for k in POSITIONS:
                    s = samples[(i, k)]
                    rate_ci = bc.bootstrap_ci(s["rate"])
                    lat_ci = bc.bootstrap_ci(s["lat"])
                    per["at"][k] = {
                        "rate_per_s": round(statistics.median(s["rate"]), 1),
                        "rate_ci95": [round(x, 1) for x in rate_ci],
                        "rate_spread": [round(min(s["rate"]), 1), round(max(s["rate"]), 1)],
                        "latency_us": round(statistics.median(s["lat"]) * 1e6, 1),
                        "latency_ci95_us": [round(x * 1e6, 1) for x in lat_ci],
                        "latency_p95_us": round(bc.pct(s["all_lat"], 0.95) * 1e6, 1),
                        "failures": sum(s["fail"]), "rates": [round(x, 1) for x in s["rate"]],
                        "latencies_us": [round(x * 1e6, 1) for x in s["lat"]]}
                # paired inside each round: end / start
                ratios = [e / st for e, st in zip(samples[(i, "end")]["lat"],
                                                  samples[(i, "start")]["lat"], strict=True)]
                per["latency_end_over_start"] = {
                    "median": round(statistics.median(ratios), 3),
                    "ci95": [round(x, 3) for x in bc.bootstrap_ci(ratios)]}
                rr = [e / st for e, st in zip(samples[(i, "end")]["rate"],
                                              samples[(i, "start")]["rate"], strict=True)]
                per["rate_end_over_start"] = {
                    "median": round(statistics.median(rr), 3),
                    "ci95": [round(x, 3) for x in bc.bootstrap_ci(rr)]}
                if i > 0:
                    per["latency_vs_first"] = {}
                    for k in POSITIONS:
                        q = [a / b for a, b in zip(samples[(i, k)]["lat"], samples[(0, k)]["lat"], strict=True)]
                        per["latency_vs_first"][k] = {
                            "median": round(statistics.median(q), 3),
                            "ci95": [round(x, 3) for x in bc.bootstrap_ci(q)]}
                out["proxiers"][lab] = per
                bc.log(f"size {size} {lab}: " + ", ".join(
                    f"{k} {per['at'][k]['rate_per_s']:.0f}/s {per['at'][k]['latency_us']:.0f} us"
                    for k in POSITIONS)
                    + f"; latency end/start {per['latency_end_over_start']['median']}")
            result["sizes"][str(size)] = out
    bc.emit(result, args.out)


if __name__ == "__main__":
    main()
