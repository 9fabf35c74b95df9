"""Reports: one JSON record per check as it ends and one index per run (the source of
truth), written under ``--report-dir``; the HTML report is rendered from that JSON at
session end. Registered by ``harness.plugin``.

Files in ``--report-dir``:

``report.json``
    The index: environment, seed, summary counts and every check's record. Written at
    session start with ``"complete": false`` (so a killed run still says what it ran on)
    and rewritten at session end.
``checks.jsonl``
    One JSON line per check, appended and flushed as each check ends (after teardown),
    so a killed run leaves partial results. ``python -m harness.report html`` merges it
    into an incomplete ``report.json``.
``report.html``
    Rendered from ``report.json`` (``harness.report``).

A check's record: ``nodeid``, ``behavior``, ``must``, ``ref``, ``features`` (feature
markers), ``grade`` (pass | fail | skip | xfail | informational), ``reason`` (why it was
skipped or xfailed, or the known-gap link), ``outcome`` (pytest's word: passed, failed,
skipped, xfail; kept for existing consumers), ``phase`` (the phase that decided the
grade), ``duration`` (all phases, seconds), ``message``, ``summary`` (a failure's one line), ``evidence`` (title -> text:
proxier logs, rules, packet traces), ``statistics`` (list of ``Verdict.to_dict()``),
``observations``, ``properties`` (other ``record_property`` values), ``known_gap``.

Markers and options added here: ``informational`` (the check measures and never fails;
an assertion failure becomes grade ``informational`` with its message) and
``--known-gaps FILE`` (behaviour ids in the file become strict xfails; format in
``harness.report.gaps``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from harness.features import FEATURE_MARKERS
from harness.plugin import proxier_spec_of, run_seed_of
from harness.report import GRADES

# Properties that have a field of their own in the record; the rest go to "properties".
_OWN_PROPS = {"behavior", "must", "ref", "features", "informational", "informational_message",
              "known_gap", "statistics", "observations", "flows"}


@dataclass
class _RunState:
    """Everything the report needs during a run, kept in ``config.stash`` (not globals) so
    that in-process pytest runs (pytester, nested sessions) don't share records."""

    report_dir: Path | None
    started: float = field(default_factory=time.time)
    records: list[dict[str, Any]] = field(default_factory=list)
    # nodeid -> phase -> phase info; a check is finished when its teardown report arrives.
    pending: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    jsonl: IO[str] | None = None
    known_gaps: dict[str, Any] = field(default_factory=dict)
    known_gaps_file: str | None = None
    #: the file is the adapter's own (not --known-gaps): it covers the whole suite, so a run
    #: of a part of it (scenarios only, one file) does not hold every id it names
    known_gaps_default: bool = False
    html_path: Path | None = None
    html_error: str | None = None


_STATE = pytest.StashKey[_RunState]()


def _spec(config: pytest.Config) -> Any:
    """The proxier under test, or None if the selection is bad (the fixtures say why)."""
    try:
        return proxier_spec_of(config)
    except pytest.UsageError:
        return None


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# --- options and markers -------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("svc-conformance")
    g.addoption("--known-gaps", default=None, metavar="FILE",
                help="YAML list of {behavior, reason, link}: these behaviour ids become strict "
                     "xfails (known gaps of the proxier under test, e.g. known-gaps/NAME.yaml)")


def _default_known_gaps(config: pytest.Config) -> str | None:
    """The adapter's own known-gaps file (real kube-proxy: one per mode and release), used
    when ``--known-gaps`` is not given."""
    spec = _spec(config)  # None: the proxier fixture reports why
    return spec.known_gaps if spec is not None else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "informational: the check measures and reports; it never fails (graded informational)",
    )
    report_dir = config.getoption("report_dir", None)
    state = _RunState(report_dir=Path(report_dir) if report_dir else None)
    gaps_file = config.getoption("known_gaps", None)
    if not gaps_file:
        gaps_file = _default_known_gaps(config)
        state.known_gaps_default = gaps_file is not None
    if gaps_file:
        from harness.report.gaps import KnownGapsError, load_known_gaps

        try:
            state.known_gaps = {g.behavior: g for g in load_known_gaps(gaps_file)}
        except KnownGapsError as exc:
            raise pytest.UsageError(str(exc)) from None
        state.known_gaps_file = str(gaps_file)
    config.stash[_STATE] = state
    if not _is_worker(config):
        config.pluginmanager.register(_Recorder(config), "svc-conformance-recorder")


# --- collection: what the record needs from the item (reports carry only user_properties) --

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: see every collected item before -k/-m/--behavior deselect some, so a known
    # gap for a deselected check is not mistaken for an unknown id.
    state = config.stash[_STATE]
    if state.known_gaps and not state.known_gaps_default:
        _check_gap_ids(state, items)
    for item in items:
        names = [m.name for m in item.iter_markers()]
        # iter_markers yields the closest first; the module's feature (its pytestmark) is
        # the check's main feature, so reverse and keep first occurrences.
        features = list(dict.fromkeys(n for n in reversed(names) if n in FEATURE_MARKERS))
        props = [("features", features)]
        behavior = item.get_closest_marker("behavior")
        if behavior is not None and behavior.kwargs.get("ref"):
            props.append(("ref", behavior.kwargs["ref"]))
        if item.get_closest_marker("informational") is not None:
            props.append(("informational", True))
        bid = behavior.args[0] if behavior is not None and behavior.args else None
        gap = state.known_gaps.get(bid) if bid else None
        if gap is not None:
            reason = f"known gap ({state.known_gaps_file}): {gap.reason}"
            if gap.link:
                reason += f" [{gap.link}]"
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
            props.append(("known_gap", gap.to_dict()))
        item.user_properties.extend(props)


def _check_gap_ids(state: _RunState, items: list[pytest.Item]) -> None:
    from harness.report.gaps import KnownGapsError, scan_behavior_ids

    known = {m.args[0] for it in items for m in [it.get_closest_marker("behavior")]
             if m is not None and m.args}
    # A run of a few files still knows the ids of their sibling test modules.
    known |= scan_behavior_ids({Path(str(it.path)).parent for it in items})
    # ... and of the suite's conformance checks: an adapter's default gaps file (real
    # kube-proxy's) names them even when only scenarios run (bash run.sh bugs)
    known |= scan_behavior_ids({Path(__file__).resolve().parents[1] / "conformance"})
    for bid, gap in state.known_gaps.items():
        if bid not in known:
            raise pytest.UsageError(str(KnownGapsError(
                state.known_gaps_file or "?", gap.line,
                f"entry behavior {bid!r} is not the behaviour id of any check "
                f"({len(known)} known ids; check for a typo or a renamed id)")))


# --- worker side: informational checks (evidence: harness.evidence) --------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if (report.when == "call" and report.failed and not hasattr(report, "wasxfail")
            and item.get_closest_marker("informational") is not None):
        # An informational check never fails the run: keep what it measured and why it
        # would have failed, and hand pytest a pass. The report's list is the item's own
        # list, so copy before adding.
        text = _XDIST_HEADER.sub("", report.longreprtext, count=1)
        report.user_properties = [*report.user_properties, ("informational_message", text[-8000:])]
        report.outcome = "passed"
        report.longrepr = None
    return report


# --- controller side: one record per check ---------------------------------------------------

def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _is_worker(config):
        return
    state = config.stash[_STATE]
    if state.report_dir is None:
        return
    state.report_dir.mkdir(parents=True, exist_ok=True)
    state.jsonl = open(state.report_dir / "checks.jsonl", "w", buffering=1)  # noqa: SIM115
    _write_index(config, state, exitstatus=None)


# xdist prefixes a worker's failure text with "[gw0] linux -- Python 3.11 /path"; noise here.
_XDIST_HEADER = re.compile(r"\A\[gw\d+\] [^\n]*\n")


def _phase_info(report: pytest.TestReport) -> dict[str, Any]:
    longrepr = report.longrepr
    skip_reason = None
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3:
        skip_reason = str(longrepr[2]).removeprefix("Skipped: ")
    return {
        "when": report.when,
        "outcome": report.outcome,
        "wasxfail": getattr(report, "wasxfail", None),
        "skip_reason": skip_reason,
        "text": None if report.passed else _XDIST_HEADER.sub("", report.longreprtext, count=1),
        "duration": report.duration,
        "sections": list(report.sections),
        # the one line pytest prints in its short summary ("AssertionError: 3 of 300 ...")
        "crash": getattr(getattr(longrepr, "reprcrash", None), "message", None),
        "props": list(report.user_properties),
    }


class _Recorder:
    """The controller's per-report hook, bound to its config (module-level
    ``pytest_runtest_logreport`` gets no config). Under xdist the controller receives every
    worker's reports through this hook, with ``user_properties`` and ``sections``."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self.config.stash[_STATE]
        phases = state.pending.setdefault(report.nodeid, {})
        phases[report.when] = _phase_info(report)
        # teardown ends a check; xdist reports a crashed worker's test once, as "???"
        if report.when not in ("setup", "call"):
            finish(state, report.nodeid)


def finish(state: _RunState, nodeid: str) -> None:
    """Grade a check from the phases seen so far, keep it and write its JSON line."""
    record = grade_record(nodeid, state.pending.pop(nodeid))
    state.records.append(record)
    if state.jsonl is not None:
        state.jsonl.write(json.dumps(record, default=str) + "\n")


def grade_record(nodeid: str, phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One check's record from its phase infos (``setup``, ``call``, ``teardown``)."""
    setup, call, teardown = phases.get("setup"), phases.get("call"), phases.get("teardown")
    props_list: list[tuple[str, Any]] = []
    for p in (setup, call, teardown):
        if p:
            props_list.extend(tuple(kv) for kv in p["props"])
    props: dict[str, Any] = {}
    statistics: list[Any] = []
    for key, value in props_list:
        if key == "statistics":
            if value not in statistics:
                statistics.append(value)
        else:
            props[key] = value

    # The deciding phase: a setup that did not pass decides; else the call; a failing
    # teardown turns a passing check into a failure (something was left broken).
    decider = setup if setup and setup["outcome"] != "passed" else (call or setup or teardown)
    # xdist's "???" report: the worker crashed while running the check; that decides.
    decider = phases.get("???") or decider or next(iter(phases.values()))
    reason = None
    message = decider["text"]
    outcome = "xfail" if decider["wasxfail"] is not None and decider["outcome"] == "skipped" \
        else decider["outcome"]
    if decider["outcome"] == "failed":
        grade = "fail"
    elif decider["outcome"] == "skipped":
        if decider["wasxfail"] is not None:
            grade, reason = "xfail", decider["wasxfail"] or "expected to fail"
        else:
            grade, reason = "skip", decider["skip_reason"] or message
            message = None
    elif props.get("informational"):
        grade = "informational"
        message = props.get("informational_message")
    else:
        grade = "pass"
        if decider["wasxfail"] is not None:
            reason = f"unexpectedly passed (non-strict xfail): {decider['wasxfail']}"
    phase = decider["when"]
    if teardown and teardown["outcome"] == "failed" and grade != "fail":
        grade, outcome, phase = "fail", "failed", "teardown"
        message = "error in teardown:\n" + (teardown["text"] or "")
    if grade == "fail" and phase == "setup":
        message = "error in setup:\n" + (message or "")

    evidence: dict[str, str] = {}
    captured: dict[str, str] = {}
    for p in (setup, call, teardown):
        for title, text in (p["sections"] if p else ()):
            if title.startswith("Captured"):
                captured[title] = text[-8000:]
            else:
                evidence[title] = text
    if grade not in ("fail", "informational", "xfail"):
        # Evidence is for explaining failures; a passing check keeps only attached traces.
        evidence = {t: v for t, v in evidence.items() if t.startswith("packet trace")}
        captured = {}
    return {
        "nodeid": nodeid,
        "behavior": props.get("behavior"),
        "must": props.get("must"),
        "ref": props.get("ref"),
        "features": props.get("features") or [],
        "grade": grade,
        "reason": reason,
        "outcome": outcome,
        "phase": phase,
        "duration": round(sum(p["duration"] for p in (setup, call, teardown) if p), 4),
        "message": message[-8000:] if message else None,
        "summary": _first_line((phases.get(phase) or {}).get("crash")) if grade == "fail" else None,
        "evidence": evidence,
        "captured": captured,
        "statistics": statistics,
        "observations": props.get("observations"),
        # a scenario's flows: [{name, step, line, outcome, expected, observed, failures}]
        "flows": props.get("flows"),
        "known_gap": props.get("known_gap"),
        "properties": {k: v for k, v in props.items() if k not in _OWN_PROPS},
    }


def _first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0][:300] if text and text.strip() else None


def summarize(records: list[dict[str, Any]]) -> dict[str, int]:
    """Counts per grade (every grade present, zero if none)."""
    counts = dict.fromkeys(GRADES, 0)
    for r in records:
        counts[r.get("grade", "fail")] = counts.get(r.get("grade", "fail"), 0) + 1
    return counts


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _is_worker(config):
        return
    state = config.stash.get(_STATE, None)
    if state is None or state.report_dir is None:
        return
    for nodeid in list(state.pending):
        # Started but never torn down (interrupted): record what is known.
        finish(state, nodeid)
    if state.jsonl is not None:
        state.jsonl.close()
        state.jsonl = None
    path = _write_index(config, state, exitstatus=int(exitstatus))
    from harness.report import render_html_file

    try:
        state.html_path = render_html_file(path, state.report_dir / "report.html")
    except Exception as exc:  # noqa: BLE001 - report.json is written; say why HTML is missing
        state.html_error = f"{type(exc).__name__}: {exc}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or state.report_dir is None or _is_worker(config):
        return
    counts = summarize(state.records)
    terminalreporter.write_line(
        "svc-conformance report: " + ", ".join(f"{counts[g]} {g}" for g in GRADES)
        + f" -> {state.report_dir / 'report.json'}")
    if state.html_path is not None:
        terminalreporter.write_line(f"svc-conformance report: {state.html_path}")
    if state.html_error is not None:
        terminalreporter.write_line(f"svc-conformance report: HTML not rendered: {state.html_error}",
                                    red=True)


def _write_index(config: pytest.Config, state: _RunState, exitstatus: int | None) -> Path:
    assert state.report_dir is not None
    spec = _spec(config)
    index = {
        "schema": 2,
        "complete": exitstatus is not None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started)),
        "duration": round(time.time() - state.started, 3),
        "seed": run_seed_of(config),
        "exitstatus": exitstatus,
        "known_gaps_file": state.known_gaps_file,
        "environment": environment(config, spec),
        "summary": summarize(state.records),
        "checks": state.records,
    }
    state.report_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=state.report_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(index, f, indent=1, default=str)
    path = state.report_dir / "report.json"
    os.replace(tmp, path)
    return path


def _version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    r = subprocess.run(argv, capture_output=True, text=True)
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else None


def environment(config: pytest.Config, spec: Any) -> dict[str, Any]:
    """What the run ran on: kernel, iptables and nft versions, proxier, pod network."""
    from harness.suite import describe

    return {
        # the suite's version and every behaviour id it contains (harness.suite)
        "suite": describe(),
        "kernel": platform.release(),
        "iptables_legacy": _version(["iptables-legacy", "--version"]),
        "iptables_nft": _version(["iptables-nft", "--version"]),
        "nft": _version(["nft", "--version"]),
        "conntrack": _version(["conntrack", "--version"]),
        # a proxier writing native nftables uses no iptables flavour: none is claimed
        "iptables_flavour": (config.getoption("iptables", None)
                             if getattr(spec, "netfilter", "iptables") == "iptables" else None),
        "netfilter": getattr(spec, "netfilter", None),
        "proxier": spec.name if spec else None,
        "proxier_command": spec.command if spec else None,
        "proxier_version": spec.version if spec else None,
        # a kube-proxy build's release: the bug table says which fixes it has
        "proxier_release": getattr(spec, "release", None) if spec else None,
        "capabilities": sorted(spec.capabilities) if spec else None,
        "pod_network": config.getoption("pod_network", None),
        "ip_family": config.getoption("ip_family", None),
        "control_plane": config.getoption("control_plane", None),
        "nodes": config.getoption("nodes", None),
    }
