"""Wall time of the core conformance suite against the reference proxier (issue 4's goal:
<= 60 s with ``pytest -n 2`` on a 2-core machine).

Runs ``pytest conformance/ -m "<core markers>" -n 2`` as a child process ``--runs`` times
(default 1) and prints one JSON object on its last line: wall times, pass/fail counts per
run, and the flavour. Needs root. Usage::

    .venv/bin/python benchmarks/core_suite.py [--runs 20] [--iptables nft|legacy]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "dnat or distribution or affinity or nodeport or no_endpoints or masquerade"


def one_run(iptables: str, workers: int) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/", "-q", "-p", "no:cacheprovider",
         "-n", str(workers), "-m", CORE, f"--iptables={iptables}"],
        cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    return {"wall_s": round(wall, 2), "exit": proc.returncode, **counts,
            "failed_tests": re.findall(r"^FAILED (\S+)", proc.stdout, re.M)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--iptables", choices=("nft", "legacy"), default="nft")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run(args.iptables, args.workers)
        runs.append(r)
        print(f"run {i + 1}/{args.runs}: {r['wall_s']} s, exit {r['exit']}, "
              f"{r.get('passed', 0)} passed, {r.get('failed', 0)} failed {r['failed_tests']}", flush=True)
    walls = [r["wall_s"] for r in runs]
    print(json.dumps({
        "benchmark": "core_suite",
        "iptables": args.iptables,
        "workers": args.workers,
        "runs": len(runs),
        "clean_runs": sum(1 for r in runs if r["exit"] == 0),
        "wall_s_median": statistics.median(walls),
        "wall_s_max": max(walls),
        "goal_s": 60,
        "per_run": runs,
    }))
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
