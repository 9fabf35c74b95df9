"""Proof from outside the repository: the wheel, built with the standard tools and installed
into a fresh virtual environment, runs the suite from an empty directory.

The wheel is built once (``python -m build``: sdist, then the wheel from it, so the sdist is
complete too) and installed once into a venv under pytest's temporary directory, shared by
the xdist workers (a lock file). Every command then runs from an empty directory with the
venv's ``svc-conformance``, so nothing of the checkout is on its path: ``doctor``, ``list``,
a short ``run`` against the reference proxier (the report it writes is checked against
``list``), a scenario, and ``doctor`` and ``run`` on a PATH without conntrack.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.unit.test_doctor import path_without

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the suite runs in "
                                "network namespaces (sudo bash run.sh tests)")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this session sees (the parent of their basetemps)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")
           and not k.startswith("PYTEST_")}
    return {**env, **extra}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout (built once per session)."""
    shared = _shared(tmp_path_factory)
    dist = shared / "dist"
    with _locked(shared / "wheel.lock"):
        found = sorted(dist.glob("svc_conformance-*.whl"))
        if not found:
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                                  capture_output=True, text=True, timeout=900, env=_clean_env())
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            found = sorted(dist.glob("svc_conformance-*.whl"))
            (shared / "wheel-seconds").write_text(f"{time.monotonic() - start:.1f}")
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the wheel (and its dependencies) installed."""
    shared = _shared(tmp_path_factory)
    venv = shared / "venv"
    with _locked(shared / "venv.lock"):
        if not (venv / ".installed").is_file():
            start = time.monotonic()
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
            proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                                  capture_output=True, text=True, timeout=1200, env=_clean_env())
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            (venv / ".installed").write_text(f"{time.monotonic() - start:.1f}")
    return venv


def svc(venv: Path, cwd: Path, *args: str, path: str | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``svc-conformance ARGS`` from the venv, run in ``cwd`` (an empty directory)."""
    env = _clean_env(CI="true")
    if path is not None:
        env["PATH"] = path
    return subprocess.run([str(venv / "bin" / "svc-conformance"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


def test_the_wheel_holds_the_checks_scenarios_gaps_and_go_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    suite = "svc_conformance_suite/"
    for f in (ROOT / "conformance").glob("test_*.py"):
        assert f"{suite}conformance/{f.name}" in names
    for f in (ROOT / "scenarios").rglob("*.yaml"):
        assert f"{suite}scenarios/{f.relative_to(ROOT / 'scenarios').as_posix()}" in names
    for f in (ROOT / "known-gaps").rglob("*.yaml"):  # diff/declared.yaml too (harness.diff)
        assert f"{suite}known_gaps/{f.relative_to(ROOT / 'known-gaps').as_posix()}" in names
    for f in (ROOT / "gobuild").rglob("*"):
        if f.is_file():
            assert f"{suite}gobuild/{f.relative_to(ROOT / 'gobuild').as_posix()}" in names
    assert "harness/suite.ini" in names and "refproxier/cli.py" in names
    assert not any(n.startswith("tests/") for n in names)  # the self-test stays in the repository
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "[pytest11]\nharness.plugin = harness.plugin" in entry_points
    assert "svc-conformance = harness.cli:main" in entry_points


@needs_root
def test_doctor_from_the_installed_wheel(venv: Path, empty: Path) -> None:
    proc = svc(venv, empty, "doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("root", "network namespaces", "iptables (nft flavour)", "nft", "conntrack",
                 "kernel: conntrack", "kernel: statistic match", "API ports", "Go toolchain"):
        assert f" {name}" in proc.stdout, (name, proc.stdout)
    assert "every prerequisite of this run is there" in proc.stdout


@needs_root
@pytest.mark.parametrize(("binary", "package"), [("conntrack", "conntrack"), ("nft", "nftables"),
                                                 ("iptables-nft", "iptables")])
def test_doctor_names_a_binary_missing_from_path(venv: Path, empty: Path, tmp_path: Path,
                                                 binary: str, package: str) -> None:
    proc = svc(venv, empty, "doctor", path=path_without(tmp_path, binary))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{binary} " in proc.stdout and f"apt-get install {package}" in proc.stdout
    assert "prerequisite(s) of this run missing" in proc.stdout


@needs_root
def test_a_run_without_conntrack_stops_at_once(venv: Path, empty: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    proc = svc(venv, empty, "run", "-k", "target_port", "--report-dir", "r",
               path=path_without(tmp_path, "conntrack"))
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert "conntrack: conntrack is not on PATH; install it: apt-get install conntrack" in proc.stderr
    assert time.monotonic() - start < 60 and not (empty / "r" / "report.json").exists()


def _list_ids(venv: Path, cwd: Path) -> list[str]:
    proc = svc(venv, cwd, "list", "--ids")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_list_from_the_installed_wheel(venv: Path, empty: Path) -> None:
    ids = _list_ids(venv, empty)
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    from harness.suite import behaviour_ids

    assert ids == behaviour_ids()  # the same behaviours as this checkout
    listing = svc(venv, empty, "list", "--json")
    data = json.loads(listing.stdout)
    assert data["suite"]["source"] == "wheel" and "not installed with the wheel" in data["faults"]
    by_id = {b["id"]: b for b in data["behaviours"]}
    assert by_id["scenario/bugs/k8s-59368"]["faults"] == ["udp-cleanup-skipped"]  # from its YAML
    assert by_id["service/affinity/clientip/sticky-within-timeout"]["requires"] == ["affinity"]
    # node ids as in the repository: pytest's rootdir is the installed suite root
    nodeids = [n for b in data["behaviours"] for n in b["nodeids"]]
    assert all(n.startswith(("conformance/test_", "scenarios/bugs/", "scenarios/diff/")) for n in nodeids)
    text = svc(venv, empty, "list").stdout
    assert "fault     (not installed)" in text and "MUST" in text


@needs_root
def test_a_short_run_from_the_installed_wheel_writes_its_report(venv: Path, empty: Path) -> None:
    proc = svc(venv, empty, "run", "-k", "target_port", "--suite", "conformance",
               "--report-dir", "out", timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    report = json.loads((empty / "out" / "report.json").read_text())
    assert report["complete"] is True and report["exitstatus"] == 0
    env = report["environment"]
    from importlib.metadata import version

    assert env["suite"]["version"] == version("svc-conformance")  # no git suffix: a wheel
    assert env["suite"]["source"] == "wheel" and env["proxier"] == "reference"
    ids = _list_ids(venv, empty)
    assert env["suite"]["behaviour_ids"] == ids and env["suite"]["behaviours"] == len(ids)
    checks = report["checks"]
    assert len(checks) >= 2 and {c["grade"] for c in checks} == {"pass"}
    assert {c["behavior"] for c in checks} <= set(ids)
    assert all(c["nodeid"].startswith("conformance/test_clusterip_dnat.py::") for c in checks)
    assert (empty / "out" / "junit.xml").is_file() and (empty / "out" / "report.html").is_file()
    # CI is set: one plain line per check
    assert f"[{len(checks)}/{len(checks)}] PASS" in proc.stdout
    rendered = svc(venv, empty, "report", "out/report.json", "-o", "again.html")
    assert rendered.returncode == 0 and (empty / "again.html").is_file()
    assert "2 pass" in rendered.stdout or f"{len(checks)} pass" in rendered.stdout


@needs_root
def test_a_scenario_replays_from_the_installed_wheel(venv: Path, empty: Path) -> None:
    proc = svc(venv, empty, "scenario", "k8s-59368", "--report-dir", "sc", "-n", "0", timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    report = json.loads((empty / "sc" / "report.json").read_text())
    [check] = report["checks"]
    assert check["behavior"] == "scenario/bugs/k8s-59368" and check["grade"] == "pass"
    assert check["nodeid"] == "scenarios/bugs/k8s-59368.yaml::k8s-59368"
