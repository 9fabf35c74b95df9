"""pytest plugin: the progress display of ``svc-conformance run`` (loaded with
``-p harness.progress``).

``--progress tty``: one status line redrawn in place (checks done of total, counts per
grade, elapsed time, the check most recently started), with a permanent line for every
failure as it happens. ``--progress plain``: one line per finished check, for CI logs
(``[ 12/136] PASS  0.8s  service/nodeport/... conformance/test_nodeport.py::test_x``).
Either way pytest's own dots are left out; its failure details and counts follow as
usual, and the checks that did not pass are listed by node id relative to the suite root. Works on the xdist controller, which receives every worker's reports.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

_STYLE = pytest.StashKey[str]()
WORDS = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "xfail": "XFAIL", "error": "ERROR",
         "xpass": "XPASS"}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("svc-conformance")
    g.addoption("--progress", choices=("tty", "plain"), default=None,
                help="progress display: a status line redrawn in place (tty) or one line per "
                     "finished check (plain, for CI logs); default: pytest's own")


def pytest_configure(config: pytest.Config) -> None:
    style = config.getoption("progress", None)
    if style and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Progress(config, style), "svc-conformance-progress")


def _grade(phases: dict[str, Any]) -> str:
    for when in ("setup", "call", "teardown"):
        r = phases.get(when)
        if r is None:
            continue
        if hasattr(r, "wasxfail"):
            return "xfail" if r.skipped else "xpass"
        if r.failed:
            return "fail" if when == "call" else "error"
        if r.skipped:
            return "skip"
    return "pass"


class Progress:
    """The controller's view of the run: counts and the display."""

    def __init__(self, config: pytest.Config, style: str) -> None:
        self.config = config
        self.style = style
        self.total: int | None = None
        self.done = 0
        self.counts: dict[str, int] = {}
        self.phases: dict[str, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.current = ""
        self.out = sys.stdout
        self.status_shown = False
        #: (word, behaviour, nodeid, first line of the failure) of checks that did not pass
        self.problems: list[tuple[str, str | None, str, str]] = []

    # --- how many ---------------------------------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.total = max(self.total or 0, len(ids))

    # --- silence pytest's per-test letters ------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: Any, config: pytest.Config) -> Any:
        # pytest's categories and words (its short summary says "FAILED x"), no letter
        category, word = report.outcome, report.outcome.upper()
        if hasattr(report, "wasxfail"):
            category, word = ("xfailed", "XFAIL") if report.skipped else ("xpassed", "XPASS")
        elif report.when != "call" and report.passed:
            category, word = "", ""
        elif report.when != "call" and report.failed:
            category, word = "error", "ERROR"
        return category, "", word

    # --- what happens -------------------------------------------------------------------------
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.current = nodeid
        if self.style == "tty":
            self._status()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        phases = self.phases.setdefault(report.nodeid, {})
        phases[report.when] = report
        if report.when != "teardown":
            return
        phases = self.phases.pop(report.nodeid)
        grade = _grade(phases)
        self.done += 1
        self.counts[grade] = self.counts.get(grade, 0) + 1
        duration = sum(r.duration for r in phases.values())
        behaviour = next((v for k, v in report.user_properties if k == "behavior"), None)
        if grade in ("fail", "error", "xpass"):
            crash = next((getattr(getattr(r.longrepr, "reprcrash", None), "message", "")
                          for r in phases.values() if r.failed), "")
            self.problems.append((WORDS[grade], behaviour, report.nodeid,
                                  (crash or "").strip().split("\n")[0][:200]))
        if self.style == "plain":
            self._line(self._finished(grade, duration, report.nodeid, behaviour))
        elif grade in ("fail", "error", "xpass"):
            self._line(self._finished(grade, duration, report.nodeid, behaviour))
        else:
            self._status()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.style == "tty" and self.status_shown:
            self._status(final=True)
            self.out.write("\n")
            self.out.flush()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """The checks that did not pass, by node id relative to the suite root (pytest's
        short summary, left out by svc-conformance run, names them from the current
        directory: a long way into site-packages for an installed suite)."""
        if not self.problems:
            return
        terminalreporter.section("checks that did not pass", sep="=")
        for word, behaviour, nodeid, crash in self.problems:
            about = f"{behaviour}  {nodeid}" if behaviour else nodeid
            terminalreporter.write_line(f"{word:<5} {about}" + (f"  - {crash}" if crash else ""))

    # --- output ----------------------------------------------------------------------------------
    def _count(self) -> str:
        width = len(str(self.total)) if self.total else 3
        total = self.total if self.total is not None else "?"
        return f"[{self.done:>{width}}/{total}]"

    def _finished(self, grade: str, duration: float, nodeid: str, behaviour: str | None) -> str:
        word = WORDS.get(grade, grade.upper())
        about = f"{behaviour}  {nodeid}" if behaviour else nodeid
        return f"{self._count()} {word:<5} {duration:6.1f}s  {about}"

    def _line(self, text: str) -> None:
        if self.style == "tty":
            self.out.write("\r\x1b[K" + text + "\n")
            self._status()
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def _status(self, final: bool = False) -> None:
        elapsed = int(time.monotonic() - self.started)
        counts = " ".join(f"{self.counts[g]} {g}" for g in WORDS if self.counts.get(g))
        text = f"{self._count()} {counts or 'starting'}  {elapsed // 60}:{elapsed % 60:02d}"
        if not final and self.current:
            text += f"  {self.current}"
        width = 200
        try:
            import shutil

            width = shutil.get_terminal_size().columns
        except OSError:
            pass
        self.out.write("\r\x1b[K" + text[: max(20, width - 1)])
        self.out.flush()
        self.status_shown = True
