"""Where the suite is: the conformance checks, the scenario library, the known-gaps files
and the Go module that builds real Kubernetes binaries.

Two layouts, one shape. In a source checkout the suite root is the repository
(``conformance/``, ``scenarios/``, ``known-gaps/``, ``gobuild/`` beside ``harness/``). In an
installed wheel they are package data under ``svc_conformance_suite/`` in site-packages
(``setup.py`` maps them there; ``known-gaps`` becomes ``known_gaps``, a package name).
pytest runs with the suite root as its rootdir either way, so node ids
(``conformance/test_nodeport.py::test_x``) and behaviour ids are the same in both.

``describe()`` is what every report states about the suite: its version, where it came
from, and the behaviour ids it contains (read from the source, as ``scan_behaviour_ids``
does, so a run of a few checks still names the whole suite).
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

DISTRIBUTION = "svc-conformance"
#: the package the wheel installs the suite's data under
SUITE_PACKAGE = "svc_conformance_suite"
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Suite:
    """The suite's directories; ``root`` is the rootdir pytest runs with."""

    root: Path
    #: "checkout" (a source tree) or "wheel" (installed package data)
    source: str
    conformance: Path
    scenarios: Path
    known_gaps: Path
    gobuild: Path

    def known_gaps_file(self, name: str) -> Path:
        """``known-gaps/<name>.yaml`` of this suite (``name`` may carry the suffix)."""
        return self.known_gaps / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")


def _checkout() -> Suite | None:
    root = _HERE.parent
    if (root / "conformance").is_dir() and (root / "pyproject.toml").is_file():
        return Suite(root, "checkout", root / "conformance", root / "scenarios",
                     root / "known-gaps", root / "gobuild")
    return None


def _installed() -> Suite | None:
    try:
        spec = importlib.util.find_spec(SUITE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    # beside the harness package (same site-packages) first, then wherever Python finds it
    for root in [_HERE.parent / SUITE_PACKAGE, *map(Path, locations)]:
        if (root / "conformance").is_dir():
            return Suite(root, "wheel", root / "conformance", root / "scenarios",
                         root / "known_gaps", root / "gobuild")
    return None


@cache
def locate() -> Suite:
    """The suite this harness belongs to: its own checkout, else the installed package."""
    found = _checkout() or _installed()
    if found is None:
        raise FileNotFoundError(
            f"the conformance checks are neither beside the harness ({_HERE.parent}) nor "
            f"installed as {SUITE_PACKAGE}; reinstall the package (pip install svc-conformance) "
            "or run from a checkout")
    return found


def suite_version() -> str:
    """The installed distribution's version (a checkout adds its git commit)."""
    try:
        v = version(DISTRIBUTION)
    except PackageNotFoundError:
        v = "unknown (not installed)"
    suite = _checkout()
    if suite is not None:
        try:
            r = subprocess.run(["git", "-C", str(suite.root), "describe", "--always", "--dirty"],
                               capture_output=True, text=True, check=False, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return v  # no git here: the version alone
        if r.returncode == 0 and r.stdout.strip():
            v += f"+git.{r.stdout.strip()}"
    return v


# --- behaviour ids, read from the source --------------------------------------------------

def _behaviour_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "behavior" and n.args
            and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)]


def scan_check_ids(conformance: Path) -> set[str]:
    """Behaviour ids of the checks (``pytest.mark.behavior("id", ...)`` with a literal id in
    ``test_*.py``)."""
    ids: set[str] = set()
    for f in sorted(conformance.glob("test_*.py")):
        try:
            tree = ast.parse(f.read_text(), str(f))
        except (OSError, SyntaxError):
            continue  # pytest reports a broken module itself
        ids.update(c.args[0].value for c in _behaviour_calls(tree))  # type: ignore[attr-defined]
    return ids


def scan_scenario_ids(scenarios: Path) -> set[str]:
    """Behaviour ids of the scenario files: ``scenario/<path under scenarios, no suffix>``,
    as ``harness.scenario_plugin`` names them (``dumps/`` hold objects, not scenarios)."""
    ids = set()
    for f in scenarios.rglob("*"):
        rel = f.relative_to(scenarios)
        if f.suffix in (".yaml", ".yml") and "dumps" not in rel.parts:
            ids.add("scenario/" + rel.with_suffix("").as_posix())
    return ids


def behaviour_ids(suite: Suite | None = None) -> list[str]:
    """Every behaviour id the suite contains, sorted: the checks' and the scenarios'."""
    suite = suite or locate()
    return sorted(scan_check_ids(suite.conformance) | scan_scenario_ids(suite.scenarios))


def describe() -> dict[str, Any]:
    """The suite as a report states it (``environment.suite`` in report.json)."""
    try:
        suite = locate()
    except FileNotFoundError as exc:
        return {"version": suite_version(), "error": str(exc)}
    ids = behaviour_ids(suite)
    return {
        "version": suite_version(),
        "source": suite.source,
        "root": str(suite.root),
        "behaviours": len(ids),
        "behaviour_ids": ids,
    }
