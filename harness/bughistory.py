"""The bug library against kube-proxy's history: which releases prove each reproduction.

For a scenario whose ``history:`` names a kube-proxy fix, the *pair* is the release before
the fix (``last_buggy``) and the first release with it that can be run: the fix release
itself (``fixed_in``, or the first cherry-pick after ``last_buggy``) when built, else the
oldest built release that has the fix. ``pair_for`` says which, or why there is none, and
in which mode: a bug of nftables mode only runs with kube-proxy-nft, any other with
kube-proxy (iptables mode).
``run_scenario_on`` runs one scenario against one release over the API control plane and
returns its record from the run's report.json.

Used by tests/selftest/test_bug_history.py (``bash run.sh history``) and for
docs/bug-history.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import kubebins
from harness.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parent.parent
BUGS = ROOT / "scenarios" / "bugs"

#: the oldest minor the Go module proxy and today's Go can build (docs/bug-history.md says
#: why older ones cannot be built)
OLDEST_BUILDABLE_MINOR = 15
#: modes the suite runs kube-proxy in (harness.proxiers): kube-proxy, kube-proxy-nft
SUITE_MODES = ("iptables", "nftables")


@dataclass(frozen=True)
class Pair:
    scenario: str
    buggy: str | None
    fixed: str | None
    why_not: str = ""  # why there is no runnable pair
    proxier: str = "kube-proxy"  # the suite's adapter for the bug's mode (proxier_for)

    @property
    def runnable(self) -> bool:
        return not self.why_not


def bug_scenarios() -> list[Scenario]:
    return [load_scenario(p) for p in sorted(BUGS.glob("*.yaml"))]


def proxier_for(sc: Scenario) -> str:
    """The adapter that runs ``sc``'s bug: kube-proxy-nft for a bug of nftables mode only
    (iptables mode never had it), else kube-proxy (iptables mode)."""
    modes = set(sc.history.modes) if sc.history is not None and sc.history.modes else set()
    return "kube-proxy-nft" if "nftables" in modes and "iptables" not in modes else "kube-proxy"


def pair_for(sc: Scenario, built: list[str] | None = None) -> Pair:
    """The before/after releases for ``sc`` among ``built`` (default: the cache's)."""
    h = sc.history
    built = kubebins.built_versions() if built is None else built
    if h is None:
        return Pair(sc.name, None, None, "no history")
    if h.component != "kube-proxy":
        return Pair(sc.name, None, None, f"a {h.component} bug" if h.component != "none"
                    else "not a bug (working as intended or configuration)")
    if h.fixed_in is None and not h.cherry_picks:
        return Pair(sc.name, None, None, f"no fix release (fixed_in: {h.fixed_in_text})")
    if h.modes and not set(h.modes) & set(SUITE_MODES):
        return Pair(sc.name, None, None, f"{'/'.join(h.modes)} mode only; the suite runs "
                    "kube-proxy in iptables and nftables modes")
    if h.last_buggy is None:
        return Pair(sc.name, None, None, f"no buggy release known (last_buggy: {h.last_buggy_text})")
    buggy = str(h.last_buggy)
    if h.last_buggy.minor < OLDEST_BUILDABLE_MINOR:
        return Pair(sc.name, buggy, None, f"last buggy release {buggy} is older than v1."
                    f"{OLDEST_BUILDABLE_MINOR}, the oldest buildable minor")
    candidates = sorted([v for v in [h.fixed_in, *h.cherry_picks] if v is not None and v > h.last_buggy])
    fixed = next((str(v) for v in candidates if str(v) in built), None)
    if fixed is None:
        later = sorted(kubebins.Version.parse(b) for b in built if h.has_fix(b)
                        and kubebins.Version.parse(b) > h.last_buggy)
        fixed = str(later[0]) if later else None
    missing = [r for r in (buggy, fixed) if r is None or r not in built]
    if fixed is None:
        want = str(candidates[0]) if candidates else h.fixed_in_text
        return Pair(sc.name, buggy, None, f"no built release with the fix (build {want})")
    if missing:
        return Pair(sc.name, buggy, fixed, f"not built: {', '.join(missing)} "
                    f"(bash run.sh build-kube {' '.join(missing)})")
    return Pair(sc.name, buggy, fixed, proxier=proxier_for(sc))


def needed_releases() -> list[str]:
    """The releases the before/after pairs need (buggy and fix release), oldest first."""
    out = set()
    for sc in bug_scenarios():
        pair = pair_for(sc, [])
        if pair.buggy is None or "oldest buildable" in pair.why_not:
            continue
        h = sc.history
        out.add(h.last_buggy)
        built = pair_for(sc).fixed  # a release with the fix already built will do
        fixes = sorted(v for v in [h.fixed_in, *h.cherry_picks] if v is not None and v > h.last_buggy)
        if built is not None:
            out.add(kubebins.Version.parse(built))
        elif fixes:
            out.add(fixes[0])
    return [str(v) for v in sorted(out)]


def run_scenario_on(name: str, release: str, workdir: Path, mode: str = "kube-proxy",
                    timeout: float = 900) -> tuple[dict[str, Any], str]:
    """Run scenarios/bugs/<name>.yaml against kube-proxy ``release`` over the API; the
    scenario's record (grade, message) and the tail of pytest's output."""
    report_dir = workdir / f"{name}-{release}"
    cmd = [sys.executable, "-m", "pytest", str(BUGS / f"{name}.yaml"), "-p", "no:cacheprovider",
           "-q", f"--proxier={mode}", "--control-plane=api", f"--kube-proxy-version={release}",
           f"--report-dir={report_dir}", "--known-bugs=fail"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    try:
        checks = json.loads((report_dir / "report.json").read_text())["checks"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        checks = []
    record = checks[0] if checks else {"grade": "error", "message": None}
    return record, proc.stdout[-4000:] + proc.stderr[-2000:]


def failing_flow(record: dict[str, Any]) -> str | None:
    """The flow a failed scenario names (``flow 'NAME': ...``), None for other failures."""
    import re

    m = re.search(r"^flow '([^']+)'", record.get("message") or "", re.M)
    return m.group(1) if m else None
