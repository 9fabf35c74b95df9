"""Reports: one JSON record per check as it ends and one index per run (the source of
truth), written under ``--report-dir``. Registered by ``harness.plugin``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from harness.proxiers import ProxierConfigError


def _spec(config: pytest.Config) -> Any:
    from harness.plugin import _spec as spec

    return spec(config)


def _seed(config: pytest.Config) -> int:
    from harness.plugin import _SEED

    return config.stash[_SEED]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    props = dict(report.user_properties)
    record = {
        "nodeid": report.nodeid,
        "behavior": props.get("behavior"),
        "must": props.get("must"),
        "outcome": "xfail" if hasattr(report, "wasxfail") else report.outcome,
        "duration": round(report.duration, 4),
        "message": None if report.passed else str(report.longrepr)[-4000:],
        "evidence": {title: text for title, text in report.sections if not title.startswith("Captured")}
        if report.failed else {},
        "observations": props.get("observations"),
    }
    _CONTROLLER_RECORDS.append(record)


_CONTROLLER_RECORDS: list[dict[str, Any]] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return
    report_dir = config.getoption("report_dir")
    if not report_dir:
        return
    path = Path(report_dir)
    path.mkdir(parents=True, exist_ok=True)
    spec = None
    try:
        spec = _spec(config)
    except ProxierConfigError:
        pass
    index = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": _seed(config),
        "exitstatus": int(exitstatus),
        "environment": environment(config, spec),
        "checks": _CONTROLLER_RECORDS,
    }
    fd, tmp = tempfile.mkstemp(dir=path, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(index, f, indent=1, default=str)
    os.replace(tmp, path / "report.json")


def _version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    r = subprocess.run(argv, capture_output=True, text=True)
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else None


def environment(config: pytest.Config, spec: Any) -> dict[str, Any]:
    """What the run ran on: kernel, iptables and nft versions, proxier, pod network."""
    return {
        "kernel": platform.release(),
        "iptables_legacy": _version(["iptables-legacy", "--version"]),
        "iptables_nft": _version(["iptables-nft", "--version"]),
        "nft": _version(["nft", "--version"]),
        "conntrack": _version(["conntrack", "--version"]),
        "iptables_flavour": config.getoption("iptables"),
        "proxier": spec.name if spec else None,
        "proxier_command": spec.command if spec else None,
        "capabilities": sorted(spec.capabilities) if spec else None,
        "pod_network": config.getoption("pod_network"),
        "nodes": config.getoption("nodes"),
    }
