"""Run a Python module under cProfile in every thread (the reference proxier does its
syncs on threads, which ``python -m cProfile`` does not see), and write one merged
pstats file when it exits (SIGTERM included: the daemon exits 0 on it). SIGUSR1 writes
a snapshot so far to OUT.snapshot (``diff_stats`` then gives what came after it).

Usage: python benchmarks/_profiled.py OUT.pstats MODULE [ARGS...]
"""

from __future__ import annotations

import cProfile
import marshal
import os
import pstats
import runpy
import signal
import sys
import tempfile
import threading
from typing import Any

profiles: list[cProfile.Profile] = []
_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    prof = cProfile.Profile()
    profiles.append(prof)
    prof.enable()
    try:
        _run(self)
    finally:
        prof.disable()


def merged(profs: list[cProfile.Profile]) -> pstats.Stats | None:
    """Every profile's data so far, merged, without stopping any of them."""
    stats = None
    for p in profs:
        try:
            p.snapshot_stats()
        except (TypeError, ValueError):
            continue
        with tempfile.NamedTemporaryFile(suffix=".pstats", delete=False) as f:
            marshal.dump(p.stats, f)  # type: ignore[attr-defined]
        try:
            if stats is None:
                stats = pstats.Stats(f.name)
            else:
                stats.add(f.name)
        finally:
            os.unlink(f.name)
    return stats


def diff_stats(after: dict[Any, Any], before: dict[Any, Any]) -> dict[Any, tuple[int, int, float, float]]:
    """Per function (ncalls, primitive calls, own time, cumulative time) between two
    ``pstats.Stats(...).stats`` dicts."""
    out = {}
    for fn, (cc, nc, tt, ct, _callers) in after.items():
        b = before.get(fn, (0, 0, 0.0, 0.0, {}))
        d = (nc - b[1], cc - b[0], tt - b[2], ct - b[3])
        if d[0] > 0 or d[3] > 1e-6:
            out[fn] = d
    return out


def main() -> None:
    out, module, *args = sys.argv[1:]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    sys.argv = [module, *args]
    main_prof = cProfile.Profile()
    profiles.insert(0, main_prof)
    main_prof.enable()

    def snapshot(signum: int, frame: Any) -> None:
        stats = merged(profiles)
        if stats is not None:
            stats.dump_stats(out + ".snapshot")

    signal.signal(signal.SIGUSR1, snapshot)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        main_prof.disable()
        stats = pstats.Stats(main_prof)
        for p in profiles[1:]:
            try:
                stats.add(p)
            except (TypeError, ValueError):  # a thread that never ran
                pass
        stats.dump_stats(out)


if __name__ == "__main__":
    main()
