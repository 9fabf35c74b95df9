"""One proxier process per node, started inside the node's namespace, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from harness.proxiers import ProxierSpec


class ProxierCrashed(RuntimeError):
    """The proxier under test exited on its own; the message carries its last log lines."""


class ProxierProcess:
    """The proxier under test running on one node.

    Output goes to ``log_path``; ``check_alive`` turns an early exit into a ``ProxierCrashed``
    that names the node and quotes the end of the log.
    """

    def __init__(self, spec: ProxierSpec, node: str, netns: str, values: dict[str, str],
                 log_path: Path) -> None:
        self.spec = spec
        self.node = node
        self.netns = netns
        self.argv = spec.argv(**values)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProxierCrashed(
                f"could not start proxier {self.spec.name!r} on node {self.node}: {exc}; "
                f"command: {' '.join(self.argv)}"
            ) from None
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ProxierCrashed(
                f"proxier {self.spec.name!r} on node {self.node} exited with status "
                f"{self._proc.returncode}; command: {' '.join(self.argv)}\n"
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        return proc.returncode

    def restart(self) -> None:
        self.stop()
        self.start()
