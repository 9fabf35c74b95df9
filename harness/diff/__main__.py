"""``python -m harness.diff A B [--budget 10m] [--seed N]``: differential testing of two
proxiers (``harness.diff``). A and B are proxier names (``harness.proxiers``: reference,
reference-nft, kube-proxy, kube-proxy-nft, or a label for ``--a-cmd``/``--b-cmd``). Writes
shrunk scenarios, ``summary.json``, ``findings.json`` and ``report.html`` to ``--out``;
the last line of output is the JSON summary. Exit status 1 when there are undeclared
disagreements, 0 when none, 2 on a usage error."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
from dataclasses import replace
from pathlib import Path

from harness.diff.campaign import Campaign, Side
from harness.diff.declared import DeclaredError, load_declared
from harness.diff.report import render
from harness.diff.run import options_for
from harness.options import ClusterOptions
from harness.proxiers import ProxierConfigError

_MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:  # a forked helper (a probe in a namespace): die as before
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")


def budget_seconds(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"budget {text!r}: write e.g. 90s, 10m or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.diff", description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="proxier A (a name, or the label of --a-cmd)")
    p.add_argument("b", help="proxier B")
    p.add_argument("--budget", type=budget_seconds, default=600.0, help="time budget (10m)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default: random, printed)")
    p.add_argument("--max-cases", type=int, default=None, help="stop after this many cases")
    p.add_argument("--shrink-runs", type=int, default=30,
                   help="at most this many re-runs (of both proxiers) to shrink one finding")
    for side in ("a", "b"):
        p.add_argument(f"--{side}-cmd", default=None, help=f"proxier {side.upper()}'s command "
                       "(as --proxier-cmd; placeholders {node}, {state_dir}, ...)")
        p.add_argument(f"--{side}-caps", default=None, help=f"proxier {side.upper()}'s "
                       "capabilities with --{side}-cmd (as --proxier-capabilities)")
    p.add_argument("--kube-proxy-version", default=None)
    p.add_argument("--iptables", default="nft", choices=("nft", "legacy"))
    p.add_argument("--control-plane", default=None, choices=("statedir", "api", "kube-apiserver"),
                   help="default: api when either proxier reads only from an API, else statedir")
    p.add_argument("--declared", default=None,
                   help="declared differences file (default: known-gaps/diff/declared.yaml)")
    p.add_argument("--out", default="reports/diff", help="output directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("harness.diff: needs root (network namespaces, netfilter)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    base = ClusterOptions(kube_proxy_version=args.kube_proxy_version, iptables=args.iptables)
    try:
        declared = load_declared(args.declared)
        sides = []
        for name, cmd, caps in ((args.a, args.a_cmd, args.a_caps), (args.b, args.b_cmd, args.b_caps)):
            opts = options_for(name, base, cmd, caps)
            # the control plane is chosen below, for both sides; validate with one that works
            sides.append((name, opts, replace(opts, control_plane="api").proxier_spec()))
    except (ProxierConfigError, DeclaredError) as e:
        print(f"harness.diff: {e}", file=sys.stderr)
        return 2
    plane = args.control_plane or ("api" if any(s.needs_api for _, _, s in sides) else "statedir")
    a, b = (Side(name, replace(opts, control_plane=plane), spec.capabilities)
            for name, opts, spec in sides)
    out = Path(args.out)
    print(f"harness.diff: {a.name} vs {b.name}, seed {seed}, budget {args.budget:.0f} s, "
          f"control plane {plane}, output in {out}", flush=True)
    camp = Campaign(a, b, seed, args.budget, out / "cases", declared, args.shrink_runs,
                    args.max_cases, say=lambda t: print(t, flush=True))
    # SIGTERM as Ctrl-C: the cluster being run is torn down, the summary still written
    signal.signal(signal.SIGTERM, _interrupt)
    camp.run()
    summary = camp.summary()
    findings = [f.to_dict() for f in camp.findings]
    out.mkdir(parents=True, exist_ok=True)
    (out / "findings.json").write_text(json.dumps(findings, indent=1, default=str))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "report.html").write_text(render(summary, findings))
    print(f"harness.diff: report in {out / 'report.html'}")
    print(json.dumps(summary), flush=True)
    return 1 if summary["disagreements"] else 0


if __name__ == "__main__":
    sys.exit(main())
