"""The svc-conformance command (harness/cli.py), the suite locator (harness/suite.py) and
the progress display (harness/progress.py), without root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness import cli, suite

ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str):
    args = cli.parser().parse_args(["run", *argv])
    args.pytest_args = []
    return args


def test_the_checkout_is_the_suite_root() -> None:
    s = suite.locate()
    assert s.source == "checkout" and s.root == ROOT
    assert s.known_gaps == ROOT / "known-gaps" and s.gobuild == ROOT / "gobuild"
    from harness import kubebins
    from harness.proxiers import KNOWN_GAPS_DIR

    assert kubebins.MODULE_DIR == ROOT / "gobuild" and KNOWN_GAPS_DIR == ROOT / "known-gaps"


def test_behaviour_ids_from_the_source_match_the_collected_ones() -> None:
    """The report's list (read from the source) is what ``list`` collects with pytest."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "list", "--ids"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    collected = proc.stdout.split()
    assert collected == suite.behaviour_ids()
    assert len(collected) > 50 and any(i.startswith("scenario/bugs/") for i in collected)


def test_describe_states_version_and_ids() -> None:
    info = suite.describe()
    assert info["behaviours"] == len(info["behaviour_ids"]) > 0
    assert info["version"].startswith("0.") and info["source"] == "checkout"


def test_run_builds_one_pytest_command_from_a_checkout() -> None:
    s = suite.locate()
    cmd = cli.pytest_command(_args("--proxier-cmd", "my {node}", "-k", "target_port", "-n", "3",
                                   "--ip-family", "ipv6", "--progress", "plain",
                                   "--report-dir", "out"), [str(s.conformance)], s)
    assert cmd[:4] == [sys.executable, "-m", "pytest", str(s.conformance)]
    joined = " ".join(cmd)
    assert f"--rootdir {ROOT}" in joined and f"-c {ROOT / 'pyproject.toml'}" in joined
    assert "--proxier-cmd=my {node}" in cmd and "--ip-family=ipv6" in cmd
    assert cmd[cmd.index("-k") + 1] == "target_port" and cmd[cmd.index("-n") + 1] == "3"
    assert "--report-dir=out" in cmd and "--junitxml=out/junit.xml" in cmd
    assert "--progress=plain" in cmd and "--preflight=on" in cmd
    assert "-p" in cmd and "harness.plugin" in cmd
    assert "--proxier" not in " ".join(c.split("=")[0] for c in cmd if c.startswith("--proxier="))


def test_an_installed_suite_gets_its_own_pytest_config_and_cache(tmp_path: Path) -> None:
    s = replace(suite.locate(), source="wheel", root=tmp_path)
    cmd = cli.pytest_command(_args("--progress", "pytest"), [str(tmp_path / "conformance")], s)
    assert cmd[cmd.index("-c") + 1] == str(cli.SUITE_INI) and cli.SUITE_INI.is_file()
    assert any(c.startswith("cache_dir=") for c in cmd)
    assert not any(c.startswith("--progress") for c in cmd)


def test_known_gaps_by_name(tmp_path: Path) -> None:
    s = suite.locate()
    assert cli.known_gaps_path("reference", s) == str(ROOT / "known-gaps" / "reference.yaml")
    with pytest.raises(SystemExit, match="shipped: .*reference"):
        cli.known_gaps_path("no-such", s)


def test_progress_style() -> None:
    assert cli.progress_style("auto", {"CI": "true"}, isatty=True) == "plain"
    assert cli.progress_style("auto", {}, isatty=False) == "plain"
    assert cli.progress_style("auto", {}, isatty=True) == "tty"
    assert cli.progress_style("pytest", {}) is None


def test_arguments_after_the_double_dash_go_to_pytest(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--dry-run", "--suite", "conformance", "--", "-x", "--lf"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("svc-conformance: ") and err.rstrip().endswith("-x --lf")


def test_scenario_by_name_or_path(tmp_path: Path) -> None:
    s = suite.locate()
    assert cli.scenario_path("k8s-59368", s) == ROOT / "scenarios" / "bugs" / "k8s-59368.yaml"
    assert cli.scenario_path("scenario/bugs/k8s-59368", s) == ROOT / "scenarios/bugs/k8s-59368.yaml"
    mine = tmp_path / "repro.yaml"
    mine.write_text("{}")
    assert cli.scenario_path(str(mine), s) == mine
    with pytest.raises(SystemExit, match="no scenario file"):
        cli.scenario_path("k8s-0", s)


def test_list_json_carries_the_fault_that_proves_each_behaviour() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "list", "--json", "-k", "affinity"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    by_id = {b["id"]: b for b in data["behaviours"]}
    sticky = by_id["service/affinity/clientip/sticky-within-timeout"]
    assert "no-affinity" in sticky["faults"] and sticky["requires"] == ["affinity"]
    assert sticky["must"] and sticky["nodeids"][0].startswith("conformance/test_affinity.py::")
    assert data["faults"].startswith("faults read from")


PROGRESS_TESTS = '''
import pytest

def test_ok():
    pass

def test_bad():
    assert 1 == 2

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass
'''


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_plain_progress_is_one_line_per_check(tmp_path: Path, xdist: list[str]) -> None:
    (tmp_path / "test_p.py").write_text(PROGRESS_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "test_p.py", "-p", "no:cacheprovider",
                           "-q", "-o", "console_output_style=classic", "-p", "harness.progress",
                           "--progress=plain", *xdist],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stdout
    lines = [line for line in proc.stdout.splitlines() if re.match(r"\[\s*\d+/\d+\]", line)]
    assert len(lines) == 3, proc.stdout
    words = sorted(line.split()[1] for line in lines)
    assert words == ["FAIL", "PASS", "SKIP"]
    assert lines[-1].startswith("[3/3]")
    assert "1 failed, 1 passed, 1 skipped" in proc.stdout
    assert not re.search(r"^[.FsEx]+\s*$", proc.stdout, re.M)  # pytest's own dots are left out
    assert "FAILED test_p.py::test_bad" in proc.stdout  # and its short summary is intact
    assert "checks that did not pass" in proc.stdout
    assert "FAIL  test_p.py::test_bad  - assert 1 == 2" in proc.stdout


def test_the_html_report_states_the_suite_in_one_line() -> None:
    from harness.report import render_html

    html = render_html({"environment": {"suite": {"version": "0.1.0", "source": "wheel",
                                                  "behaviours": 2, "behaviour_ids": ["a/b", "c/d"]}},
                        "checks": [], "summary": {}})
    assert "svc-conformance 0.1.0 (wheel), 2 behaviours" in html and "a/b" not in html
