"""Run registry and reaper: what a killed run left behind is removed by the next run.

Layout: ``/run/svc-conformance/runs/<prefix>/`` holds ``owner`` ("<pid> <starttime>") and
``pids/<pid>`` files (helper processes outside any of our namespaces, e.g. the echo
server, with their start time). Every namespace of the run is named ``<prefix>-...``.
A run is stale when its owner is no longer alive (pid gone, or reused by another process:
the start time differs). The reaper then kills the run's helper processes and every process
inside its namespaces, deletes the namespaces and the directory. It only ever touches
namespaces whose name starts with a registered stale prefix.

The registry directory is written *before* the first namespace is created, so there is no
window in which a namespace exists without a record that leads a later run to it.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import netns as pr_netns

from .nsutil import (
    NETNS_RUN_DIR,
    kill_pids,
    netns_inode,
    pids_in_netns,
    process_start_time,
)

RUNS_DIR = Path("/run/svc-conformance/runs")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,15}$")


def make_prefix(worker: str | None = None) -> str:
    """A fresh run prefix: ``sc`` + 4 hex digits + a worker tag (``w3`` for xdist ``gw3``)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    tag = "w" + re.sub(r"\D", "", worker) if worker else ""
    while True:
        prefix = f"sc{secrets.token_hex(2)}{tag}"
        if not (RUNS_DIR / prefix).exists() and not any(
            n.startswith(prefix + "-") for n in _list_netns()
        ):
            return prefix


def _list_netns() -> list[str]:
    try:
        return os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []


@contextmanager
def _lock() -> Iterator[None]:
    # Serialises reaping between parallel xdist workers; registration of a new run is
    # cheap and also happens under the lock so a reaper never sees a half-written owner.
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(RUNS_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class Registration:
    """This run's record in the registry (see module docstring)."""

    prefix: str
    path: Path

    @classmethod
    def create(cls, prefix: str) -> Registration:
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"run prefix {prefix!r} must match {PREFIX_RE.pattern}")
        with _lock():
            path = RUNS_DIR / prefix
            (path / "pids").mkdir(parents=True, exist_ok=False)
            pid = os.getpid()
            (path / "owner").write_text(f"{pid} {process_start_time(pid)}\n")
        return cls(prefix, path)

    def add_pid(self, pid: int) -> None:
        """Record a helper process that a reaper must kill if this run dies."""
        (self.path / "pids" / str(pid)).write_text(f"{process_start_time(pid)}\n")

    def remove_pid(self, pid: int) -> None:
        (self.path / "pids" / str(pid)).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _owner_alive(path: Path) -> bool:
    try:
        pid_s, start_s = (path / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    start = process_start_time(int(pid_s))
    return start is not None and str(start) == start_s


def remove_run_namespaces(prefix: str) -> list[str]:
    """Kill every process in the ``<prefix>-*`` namespaces and delete them; names removed."""
    names = [n for n in _list_netns() if n.startswith(prefix + "-")]
    inodes = {n: netns_inode(n) for n in names}
    by_inode = pids_in_netns(i for i in inodes.values() if i is not None)
    kill_pids(p for pids in by_inode.values() for p in pids)
    for name in names:
        try:
            pr_netns.remove(name)
        except OSError:
            pass  # already gone: another reaper or the owner got there first
    return names


def reap_stale_runs() -> list[str]:
    """Remove what dead runs left behind. Returns the prefixes that were reaped."""
    reaped: list[str] = []
    if not RUNS_DIR.exists():
        return reaped
    with _lock():
        for path in sorted(RUNS_DIR.iterdir()):
            if not path.is_dir() or not PREFIX_RE.match(path.name) or _owner_alive(path):
                continue
            helpers = []
            for f in (path / "pids").glob("*"):
                try:
                    pid, start = int(f.name), f.read_text().strip()
                except (OSError, ValueError):
                    continue
                if str(process_start_time(pid)) == start:
                    helpers.append(pid)
            kill_pids(helpers)
            remove_run_namespaces(path.name)
            shutil.rmtree(path, ignore_errors=True)
            reaped.append(path.name)
    return reaped


if __name__ == "__main__":  # ``python -m harness.topology.registry``: reap by hand (root)
    for prefix in reap_stale_runs():
        print(f"reaped {prefix}")
