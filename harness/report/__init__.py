"""Render reports from the JSON records (``report.json``, written by ``harness.reporting``).

    python -m harness.report html REPORT.json -o OUT.html
    python -m harness.report matrix RUN1.json RUN2.json ... -o matrix.html --markdown matrix.md

The HTML is one self-contained file: inline CSS and SVG, no JavaScript, no network.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2

from harness.report import templates
from harness.report.svg import distribution_svg
from harness.report.timelines import PlotDataError, affinity_svg, churn_svg

GRADES = ("pass", "fail", "skip", "xfail", "informational")
# Which grade a matrix cell shows when a behaviour's checks disagree: the worst news first.
_PRECEDENCE = ("fail", "xfail", "pass", "informational", "skip")
_PROBES_SHOWN = 200
_STAT_FIELDS = ("expected", "observed", "passed", "statistic", "p_value", "alpha",
                "sample_size", "power", "failures", "notes")


class ReportError(ValueError):
    """A report file that cannot be read."""


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``report.json``. If the run did not finish (``complete`` false) and a
    ``checks.jsonl`` lies beside it, its records are taken instead (they are written as
    each check ends). Older records without ``grade`` get one from ``outcome``."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read report: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("checks", []), list):
        raise ReportError(f"{path}: not a report.json (expected an object with 'checks')")
    jsonl = path.with_name("checks.jsonl")
    if report.get("complete") is False and jsonl.exists():
        checks = []
        for line in jsonl.read_text().splitlines():
            try:
                checks.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by the kill; everything before it is whole
        report["checks"] = checks
    for c in report.setdefault("checks", []):
        c.setdefault("grade", _grade_from_outcome(c.get("outcome")))
    report.setdefault("environment", {})
    return report


def _grade_from_outcome(outcome: Any) -> str:
    return {"passed": "pass", "failed": "fail", "skipped": "skip", "xfail": "xfail"}.get(
        str(outcome), "fail")


def summarize(checks: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(GRADES, 0)
    for c in checks:
        counts[c.get("grade", "fail")] = counts.get(c.get("grade", "fail"), 0) + 1
    return counts


def _anchor(nodeid: str) -> str:
    return "c-" + re.sub(r"[^A-Za-z0-9_-]+", "-", nodeid).strip("-")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "; ".join(_fmt(v) for v in value) if value else "\u2013"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "\u2013"
    return str(value)


def _probe_line(i: int, p: Any) -> str:
    if not isinstance(p, dict):
        return f"{i:>4} {p}"
    src = f"{p.get('src') or '?'}:{p.get('sport') or '?'}"
    dst = f"{p.get('dst') or '?'}:{p.get('dport') or '?'}"
    extra = f" seen-src={p['seen_src']}" if p.get("seen_src") else ""
    return (f"{i:>4} {p.get('proto') or '':<4} {src:>22} -> {dst:<22} "
            f"{p.get('outcome') or '?':<10} {p.get('pod') or '-'}{extra}")


def _stats_view(stats: Any) -> dict[str, Any]:
    if not isinstance(stats, dict):
        return {"check": None, "svg": "", "fields": [("value", _fmt(stats))], "probes": [],
                "probes_total": 0}
    probes = stats.get("probes") if isinstance(stats.get("probes"), list) else []
    return {
        "check": stats.get("check"),
        "svg": distribution_svg(stats),
        "fields": [(k, _fmt(stats[k])) for k in _STAT_FIELDS if stats.get(k) not in (None, [], {})],
        "probes": [_probe_line(i, p) for i, p in enumerate(probes[:_PROBES_SHOWN])],
        "probes_total": len(probes),
    }


# Plots drawn from a check's properties: (property, title, how to read it, renderer).
_PLOTS = (
    ("affinity_timeline", "affinity over time",
     "One row per client address, one mark per new connection; the letter and colour name "
     "the endpoint that answered (hollow red \u00d7: no reply). With ClientIP affinity a row "
     "keeps one letter while its connections come within timeoutSeconds; after a vertical "
     "marker (the timeout elapsed) each client chooses afresh, so some rows change letter. "
     "The count at the right of a row is how many endpoints that client reached.",
     affinity_svg),
    ("churn_timeline", "probes during endpoint churn",
     "Each tick is one new connection, at the time it started, in the lane of the endpoint "
     "that answered (or in the refused / no-reply lanes). Green: an endpoint of the set "
     "published at that moment; amber: a removed endpoint before the proxier acknowledged "
     "the change (still converging); red: a removed endpoint after the acknowledgement. "
     "Shading: while the endpoint is in the published set. Dashed line: change published; "
     "solid line: proxier acknowledged; from the dashed line to the first tick in a newly "
     "shaded lane is the convergence time.",
     churn_svg),
)


def _plots_view(props: Any) -> list[dict[str, Any]]:
    """The timelines a check recorded, drawn; a record that cannot be drawn gives a short
    note instead of a plot (the report renders whatever a test recorded)."""
    if not isinstance(props, dict):
        return []
    plots = []
    for key, title, caption, draw in _PLOTS:
        if key not in props:
            continue
        try:
            svg, alt = draw(props[key])
        except PlotDataError as exc:
            plots.append({"key": key, "title": title, "svg": "", "caption": "", "alt": "",
                          "note": f"{key}: cannot plot ({exc})"})
            continue
        except Exception as exc:  # noqa: BLE001 - a bad record must not break the report
            plots.append({"key": key, "title": title, "svg": "", "caption": "", "alt": "",
                          "note": f"{key}: cannot plot ({type(exc).__name__}: {exc})"})
            continue
        plots.append({"key": key, "title": title, "svg": svg, "caption": caption, "alt": alt,
                      "note": None})
    return plots


def _env() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined,
                              trim_blocks=False, lstrip_blocks=False)


def _rank(grade: str) -> int:
    return _PRECEDENCE.index(grade) if grade in _PRECEDENCE else 0


def _behaviors(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A feature's checks grouped by behaviour id (one MUST, many parametrisations), the
    worst news first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        groups.setdefault(c.get("behavior") or str(c.get("nodeid", "?")).split("[")[0], []).append(c)
    out = []
    for key, members in groups.items():
        members.sort(key=lambda c: (_rank(c["grade"]), str(c.get("nodeid"))))
        first = members[0]
        out.append({
            "key": key, "behavior": first.get("behavior"), "must": first.get("must"),
            "ref": first.get("ref"), "grade": aggregate([c["grade"] for c in members]),
            "counts": {g: n for g, n in summarize(members).items() if n},
            "checks": members,
        })
    out.sort(key=lambda b: (_rank(b["grade"]), str(b["key"])))
    return out


def render_html(report: dict[str, Any], bench_link: str | None = None) -> str:
    """The HTML report for a loaded ``report.json``; ``bench_link``: the benchmarks' page."""
    from harness.features import FEATURE_MARKERS

    checks = []
    for c in report.get("checks", []):
        c = dict(c)
        c["anchor"] = _anchor(str(c.get("nodeid", "")))
        c["name"] = str(c.get("nodeid", "?")).rsplit("::", 1)[-1]
        c["features"] = list(c.get("features") or []) or ["other"]
        c["evidence"] = c.get("evidence") or {}
        c["captured"] = c.get("captured") or {}
        stats = c.get("statistics") or []
        c["stats"] = [_stats_view(s) for s in (stats if isinstance(stats, list) else [stats])]
        c["plots"] = _plots_view(c.get("properties"))
        # a scenario's flows, one row each (harness.flowcheck.FlowResult.to_dict)
        flows = c.get("flows")
        c["flows"] = [f for f in flows if isinstance(f, dict)] if isinstance(flows, list) else []
        c["flow_counts"] = dict(Counter(str(f.get("outcome")) for f in c["flows"]))
        if c.get("observations") is not None and not isinstance(c["observations"], str):
            c["observations"] = json.dumps(c["observations"], indent=1, default=str)
        checks.append(c)
    # Counts per feature include every feature a check carries; the listing shows each
    # check once, under its main feature (the module's marker).
    order = list(FEATURE_MARKERS) + ["other"]
    names = sorted({f for c in checks for f in c["features"]},
                   key=lambda n: (order.index(n) if n in order else len(order), n))
    features = []
    for name in names:
        mine = [c for c in checks if name in c["features"]]
        features.append({
            "name": name, "doc": FEATURE_MARKERS.get(name, ""),
            "counts": summarize(mine), "total": len(mine),
            "behaviors": _behaviors([c for c in mine if c["features"][0] == name]),
        })
    from harness.report.bugs import bug_rows

    bugs = bug_rows({**report, "checks": checks})
    return _env().from_string(templates.REPORT).render(
        bugs=bugs, release=(report.get("environment") or {}).get("proxier_release"),
        report=report, env=_env_view(report.get("environment") or {}), checks=checks,
        features=features,
        failures=[c for c in checks if c["grade"] == "fail"], summary=summarize(checks),
        grades=GRADES, css=templates.CSS, label=run_label(report), bench_link=bench_link)


def _env_view(env: dict[str, Any]) -> dict[str, Any]:
    """The environment as the HTML table shows it: the suite in one line, not its id list."""
    suite = env.get("suite")
    if not isinstance(suite, dict):
        return env
    text = f"svc-conformance {suite.get('version', '?')}"
    if suite.get("source"):
        text += f" ({suite['source']})"
    if suite.get("behaviours") is not None:
        text += f", {suite['behaviours']} behaviours"
    return {**env, "suite": text}


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def render_html_file(report_json: str | Path, out: str | Path) -> Path:
    """Render ``report_json`` to ``out`` (written atomically); returns ``out``."""
    out = Path(out)
    atomic_write(out, render_html(load_report(report_json), bench_link_for(out)))
    return out


# --- compatibility matrix --------------------------------------------------------------------

def run_label(report: dict[str, Any]) -> str:
    """proxier + iptables flavour or nftables (+ IP family, + API or kube-apiserver control
    plane) + kernel,
    e.g. ``reference / iptables-nft / IPv6 / 6.1.0-18`` or ``reference-nft / nftables / IPv4
    / API / 6.1.0-18`` (older reports lack the parts they did not record)."""
    env = report.get("environment") or {}
    flavour = env.get("iptables_flavour")
    rules = ("nftables" if env.get("netfilter") == "nftables"
             else f"iptables-{flavour}" if flavour else "iptables-?")
    parts = [str(env.get("proxier") or "?"), rules]
    if env.get("ip_family"):
        parts.append({"ipv4": "IPv4", "ipv6": "IPv6"}.get(env["ip_family"], env["ip_family"]))
    if env.get("control_plane") == "api":
        parts.append("API")
    elif env.get("control_plane") == "kube-apiserver":
        parts.append("kube-apiserver")
    return " / ".join([*parts, str(env.get("kernel") or "?")])


def aggregate(grades: list[str]) -> str:
    """The grade a behaviour gets in one run from its checks' grades."""
    for g in _PRECEDENCE:
        if g in grades:
            return g
    return "fail"


def build_matrix(paths: list[str | Path]) -> dict[str, Any]:
    """Behaviours x runs. Checks without a behaviour id appear under their test function."""
    runs: list[dict[str, Any]] = []
    seen_labels: dict[str, int] = {}
    per_run: list[dict[str, list[str]]] = []
    musts: dict[str, str] = {}
    for p in paths:
        report = load_report(p)
        label = run_label(report)
        seen_labels[label] = seen_labels.get(label, 0) + 1
        if seen_labels[label] > 1:
            label = f"{label} #{seen_labels[label]}"
        runs.append({"label": label, "path": str(p), "started": report.get("started"),
                     "summary": summarize(report["checks"])})
        grades: dict[str, list[str]] = {}
        for c in report["checks"]:
            bid = c.get("behavior") or str(c.get("nodeid", "?")).split("[")[0]
            grades.setdefault(bid, []).append(c.get("grade", "fail"))
            if c.get("must"):
                musts.setdefault(bid, c["must"])
        per_run.append(grades)
    rows = []
    for bid in sorted({b for g in per_run for b in g}):
        cells = []
        for grades in per_run:
            if bid not in grades:
                cells.append(None)
                continue
            counts = {g: grades[bid].count(g) for g in GRADES if g in grades[bid]}
            cells.append({"grade": aggregate(grades[bid]),
                          "title": ", ".join(f"{n} {g}" for g, n in counts.items())})
        rows.append({"behavior": bid, "must": musts.get(bid), "cells": cells})
    return {"runs": runs, "rows": rows}


def bench_link_for(out: str | Path) -> str | None:
    """``bench.html`` when the benchmarks' page (``python -m harness.report.bench``) is
    beside ``out``: the report and the matrix link to it."""
    return "bench.html" if (Path(out).parent / "bench.html").is_file() else None


def render_matrix_html(matrix: dict[str, Any], bench_link: str | None = None) -> str:
    return _env().from_string(templates.MATRIX).render(css=templates.CSS, bench_link=bench_link,
                                                      **matrix)


def render_matrix_markdown(matrix: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| behaviour | " + " | ".join(cell(r["label"]) for r in matrix["runs"]) + " |"
    lines = [head, "|" + "---|" * (len(matrix["runs"]) + 1)]
    for row in matrix["rows"]:
        cells = [c["grade"] if c else "\u2013" for c in row["cells"]]
        lines.append(f"| `{cell(row['behavior'])}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
