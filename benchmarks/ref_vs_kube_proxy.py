"""The reference proxier against real kube-proxy (root): same ruleset, same machine, one
run, interleaved. Full sync to applied at N x 10 (default 10,000 x 10) and one-endpoint
updates, in iptables mode on iptables-legacy and on iptables-nft, and in nftables mode.

Each measurement is ``proxier_cost.measure_sync`` on a fresh one-node cluster over the
same control plane (the harness's API server: both proxiers list and watch the same
objects) and is timed the same way for both (the sentinel Service answers; the updated
Service forwards to its new pod), never by a proxier's own word. Within a round the two
proxiers of a mode run back to back, the order alternating between rounds. Ratios are
reference / kube-proxy inside each round (below 1: the reference is faster or smaller).

``--profile DIR``: afterwards, one more (untimed) run of the reference per mode under
cProfile (``python -m cProfile -o DIR/...``), and the top functions by own time and by
cumulative time in the JSON: where the reference's time goes.

Usage: sudo .venv/bin/python benchmarks/ref_vs_kube_proxy.py [--size 10000] [--rounds 1]
       [--modes iptables-legacy,iptables-nft,nftables] [--kube-proxy-version v1.37.2]
       [--budget 900] [--profile DIR] [--quick] [--out FILE]
Progress on stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import signal
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _cluster as bc
from proxier_cost import measure_sync

MODES = {  # mode: (reference, kube-proxy, iptables flavour)
    "iptables-legacy": ("reference", "kube-proxy", "legacy"),
    "iptables-nft": ("reference", "kube-proxy", "nft"),
    "nftables": ("reference-nft", "kube-proxy-nft", "legacy"),
}


def figures(r: dict[str, Any]) -> dict[str, float | None]:
    full = r.get("full") or {}
    up = r.get("update") or {}
    mem = r.get("memory") or {}
    return {"full_s": full.get("seconds"), "full_cpu_s": full.get("cpu_s_settled"),
            "update_s": (up.get("seconds") or {}).get("median"),
            "update_cpu_s": up.get("cpu_s_settled_median"),
            "vmhwm_mib": mem.get("vmhwm_mib"), "tree_peak_rss_mib": mem.get("tree_peak_rss_mib")}


def update_profile(path: Path, snapshot: Path, n: int = 25) -> list[str]:
    """What the profiled reference spent on its update(s) only: the final profile minus
    the snapshot taken after the full sync, by cumulative time."""
    from _profiled import diff_stats

    after = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    before = pstats.Stats(str(snapshot)).stats  # type: ignore[attr-defined]
    d = diff_stats(after, before)
    rows = sorted(d.items(), key=lambda kv: -kv[1][3])[:n]
    lines = [f"{'ncalls':>9} {'tottime':>8} {'cumtime':>8}  function"]
    for (file, line, name), (nc, _cc, tt, ct) in rows:
        lines.append(f"{nc:9d} {tt:8.3f} {ct:8.3f}  {Path(file).name}:{line}({name})")
    return lines


def top_functions(path: Path, n: int = 30) -> dict[str, list[str]]:
    out = {}
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        st = pstats.Stats(str(path), stream=buf)
        st.strip_dirs().sort_stats(key).print_stats(n)
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
        out[key] = lines[start:start + n + 1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--kube-proxy-version", default=None)
    ap.add_argument("--control-plane", default="api", choices=["api"])
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--settle-update", type=float, default=2.0)
    ap.add_argument("--budget", type=float, default=900.0,
                    help="seconds a full sync may take before it is reported as not done")
    ap.add_argument("--profile", default=None, help="directory: profile the reference too")
    ap.add_argument("--profile-only", action="store_true",
                    help="with --profile: skip the comparison, only profile the reference")
    ap.add_argument("--quick", action="store_true", help="200 Services, 3 updates")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    bc.require_root()
    bc.install_signal_handlers()
    if args.quick:
        args.size, args.updates, args.settle, args.settle_update = 200, 3, 1.0, 0.5
    modes = [m for m in args.modes.split(",") if m]
    result: dict[str, Any] = {"benchmark": "ref_vs_kube_proxy", "size": args.size,
                              "per_service": args.per_service, "rounds": args.rounds,
                              "environment": bc.environment(), "modes": {}}
    for m in modes:
        result["modes"][m] = {"reference": [], "kube-proxy": [], "ratios": []}
    for rnd in range(0 if args.profile_only else args.rounds):
        for m in modes:
            ref_name, kp_name, flavour = MODES[m]
            pair = [("reference", ref_name), ("kube-proxy", kp_name)]
            if rnd % 2:
                pair.reverse()
            got = {}
            for who, name in pair:
                spec = bc.proxier_spec(name, kube_proxy_version=args.kube_proxy_version)
                label = f"{bc.spec_label(spec, flavour)} round {rnd + 1}"
                if who == "kube-proxy":
                    result.setdefault("kube_proxy_version", spec.version)
                else:
                    result.setdefault("reference_version", spec.version)
                bc.log(f"{label}: {args.size} x {args.per_service}")
                r = measure_sync(spec, flavour, args.control_plane, args.size,
                                 args.per_service, args.updates, args.settle,
                                 args.settle_update, args.budget, label)
                result["modes"][m][who].append(r)
                got[who] = figures(r)
            ratio = {k: (round(got["reference"][k] / got["kube-proxy"][k], 3)
                         if got["reference"][k] and got["kube-proxy"][k] else None)
                     for k in got["reference"]}
            result["modes"][m]["ratios"].append(ratio)
            bc.log(f"{m} round {rnd + 1}: reference / kube-proxy: {ratio}")
    table = []
    for m in modes:
        d = result["modes"][m]
        row: dict[str, Any] = {"mode": m}
        for who in ("reference", "kube-proxy"):
            figs = [figures(r) for r in d[who]]
            row[who] = {k: (statistics.median([f[k] for f in figs if f[k] is not None])
                            if any(f[k] is not None for f in figs) else None)
                        for k in figs[0]} if figs else {}
            row[f"{who}_errors"] = [r["error"] for r in d[who] if r.get("error")]
        ratios = d["ratios"]
        if not ratios:
            continue
        row["ratio"] = {k: ({"median": statistics.median([x[k] for x in ratios if x[k]]),
                             "spread": [min(x[k] for x in ratios if x[k]),
                                        max(x[k] for x in ratios if x[k])]}
                            if any(x[k] for x in ratios) else None)
                        for k in (ratios[0] if ratios else {})}
        table.append(row)
    result["table"] = table
    if args.profile:
        pdir = Path(args.profile).resolve()
        pdir.mkdir(parents=True, exist_ok=True)
        result["profiles"] = {}
        for m in modes:
            ref_name, _, flavour = MODES[m]
            spec = bc.proxier_spec(ref_name)
            prof = pdir / f"reference-{m}-{{node}}.pstats"
            spec = replace(spec, command=spec.command.replace(
                "{python} -m refproxier",
                f"{{python}} {Path(__file__).parent / '_profiled.py'} {prof} refproxier"))
            bc.log(f"profiling the reference, {m}: {args.size} x {args.per_service}")
            path = pdir / f"reference-{m}-node1.pstats"
            snap = Path(str(path) + ".snapshot")
            for old in (path, snap):
                old.unlink(missing_ok=True)

            def mark(pid: int) -> None:
                # the sentinel answers as soon as the rules are in; the daemon's sync call
                # may still be finishing (health checks, listing chains): wait until the
                # proxier is idle, so the snapshot holds the whole full sync
                last = bc.cpu_seconds(pid)
                for _ in range(120):
                    time.sleep(1.0)
                    now = bc.cpu_seconds(pid)
                    if now - last < 0.05:
                        break
                    last = now
                os.kill(pid, signal.SIGUSR1)
                time.sleep(3.0)

            r = measure_sync(spec, flavour, args.control_plane, args.size, args.per_service,
                             1, 1.0, 1.0, args.budget * 2, f"profile {m}", before_updates=mark)
            if path.exists():
                result["profiles"][m] = {"file": str(path), "run": figures(r), **top_functions(path)}
                if snap.exists():
                    result["profiles"][m]["update_only"] = update_profile(path, snap)
                    bc.log("\n".join(result["profiles"][m]["update_only"]))
    bc.emit(result, args.out)


if __name__ == "__main__":
    main()
