"""Low-level helpers for running code inside a named network namespace.

Why threads: ``setns(CLONE_NEWNET)`` changes the namespace of the calling *thread* only.
A worker thread that entered a namespace once can create sockets there; a socket keeps the
namespace it was created in, so the caller may use it from any thread. The pytest main
thread never leaves the root namespace, so nothing the harness does by accident (a stray
``socket()``, a sysctl write) can touch the root namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    """The bind-mount path of a named namespace (as ``ip netns`` uses)."""
    return NETNS_RUN_DIR / name


def setns_fd(fd: int) -> None:
    """Move the calling thread into the network namespace behind ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter_netns(name: str) -> None:
    """Move the calling thread into the named network namespace."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_fd(fd)
    finally:
        os.close(fd)


class NetnsThread:
    """One worker thread living in a named namespace; ``call`` runs a function there.

    Example::

        worker = NetnsThread("sc1a2b-node1")
        sock = worker.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"netns-{name}",
            initializer=enter_netns,
            initargs=(name,),
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` inside the namespace and return its result."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        """Stop the thread (it no longer pins the namespace)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def write_sysctl(key: str, value: str | int) -> None:
    """Write ``/proc/sys/<key>`` (dots or slashes); call it inside a NetnsThread.

    /proc/sys/net is resolved against the *calling thread's* network namespace.
    """
    path = Path("/proc/sys") / key.replace(".", "/")
    path.write_text(f"{value}\n")


def read_sysctl(key: str) -> str | None:
    """Read ``/proc/sys/<key>``, None if it does not exist in this namespace."""
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def netns_inode(name: str) -> int | None:
    """Inode of a named namespace, None if it is gone."""
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(inodes: Iterable[int]) -> dict[int, set[int]]:
    """Processes (by any of their threads) whose network namespace is one of ``inodes``.

    Like ``ip netns pids`` but in one /proc scan for many namespaces, and looking at every
    thread (a process whose helper thread sits in a namespace keeps it alive too).
    """
    wanted = set(inodes)
    found: dict[int, set[int]] = {ino: set() for ino in wanted}
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                ino = os.stat(f"/proc/{pid}/task/{tid}/ns/net").st_ino
            except OSError:
                continue
            if ino in wanted:
                found[ino].add(pid)
                break
    return found


def kill_pids(pids: Iterable[int], grace: float = 0.5) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; tolerates already-dead pids."""
    pids = set(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        if pids:
            time.sleep(0.01)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # reap our own children so they do not linger as zombies
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (field 22 of /proc/pid/stat); None if gone.

    Stored next to a pid so a reused pid is not mistaken for the original owner.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def run_in_netns(name: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``ip netns exec <name> argv...`` with text output captured by default."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(["ip", "netns", "exec", name, *argv], **kwargs)


def is_gone_error(exc: BaseException) -> bool:
    """True for errors that mean "already removed" (tolerated during cleanup)."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    return isinstance(exc, FileNotFoundError | ProcessLookupError) or code in (
        errno.ENODEV,
        errno.ENOENT,
        errno.ESRCH,
        errno.EADDRNOTAVAIL,
    )


