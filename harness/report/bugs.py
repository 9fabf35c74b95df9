"""The bug library's table: which bug reproductions a run's proxier fails.

Scenario records carry their history (``properties.history``, from the scenario file's
``history:``); for a kube-proxy build (``environment.proxier_release``) each row also says
whether that release has the fix, so a failure is told apart as expected (the release
predates the fix) or not.

    python -m harness.report bugs reports/bugs/report.json      # Markdown table on stdout
"""

from __future__ import annotations

import re
from typing import Any

#: what a grade means for a bug reproduction
VERDICTS = {"fail": "reproduces the bug", "pass": "does not reproduce it",
            "skip": "not run", "xfail": "known gap", "informational": "measured"}


def _link(check: dict[str, Any]) -> str:
    props = check.get("properties") or {}
    refs = props.get("bug_references") or ([check["ref"]] if check.get("ref") else [])
    issues = [r for r in refs if "/issues/" in r]
    return (issues or refs or [""])[0]


def bug_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scenario with a history, sorted by bug name."""
    from harness.scenario import history_from_dict

    env = report.get("environment") or {}
    release = env.get("proxier_release")
    mode = "nftables" if str(env.get("proxier") or "").endswith("-nft") else "iptables"
    rows = []
    for c in report.get("checks", []):
        hist = (c.get("properties") or {}).get("history")
        if not hist:
            continue
        h = history_from_dict(hist)
        fixed = hist.get("fixed_in", "unknown")
        if h.cherry_picks:
            fixed += " (also " + ", ".join(str(v) for v in h.cherry_picks) + ")"
        row = {"bug": str(c.get("nodeid", "")).rsplit("::", 1)[-1], "link": _link(c),
               "grade": c.get("grade"), "outcome": VERDICTS.get(c.get("grade"), c.get("grade")),
               "reason": c.get("reason") or "", "component": h.component, "fixed_in": fixed,
               "anchor": c.get("anchor") or "", "expected": None}
        m = re.match(r"https://github.com/[^/]+/([^/]+)/(?:issues|pull)/(\d+)", row["link"])
        row["link_text"] = f"{m.group(1)}#{m.group(2)}" if m else row["link"]
        if release:
            row["expected"] = h.status(release, mode)
        rows.append(row)
    return sorted(rows, key=lambda r: r["bug"])


def render_markdown(report: dict[str, Any]) -> str:
    rows = bug_rows(report)
    env = report.get("environment") or {}
    release = env.get("proxier_release")
    head = f"Bug reproductions against {env.get('proxier') or '?'}" + (f" {release}" if release else "")
    lines = [head, "", "| bug | link | outcome | component | fixed in |"
             + (" this release |" if release else ""),
             "|---|---|---|---|---|" + ("---|" if release else "")]
    for r in rows:
        lines.append(f"| {r['bug']} | {r['link']} | {r['outcome']} | {r['component']} | {r['fixed_in']} |"
                     + (f" {r['expected'] or '-'} |" if release else ""))
    n = sum(r["grade"] == "fail" for r in rows)
    lines += ["", f"{n} of {len(rows)} bug reproductions fail on this proxier."]
    return "\n".join(lines) + "\n"


def render_matrix_markdown(reports: list[dict[str, Any]]) -> str:
    """Bug x run: one column per report (its proxier and release), each cell the outcome
    ("bug" = the reproduction fails, "ok" = it passes), with the release's standing to
    the fix where the history tells it (e.g. "bug (before the fix)")."""
    cols = []
    for rep in reports:
        env = rep.get("environment") or {}
        cols.append((f"{env.get('proxier') or '?'} {env.get('proxier_release') or ''}".strip(),
                     {r["bug"]: r for r in bug_rows(rep)}))
    bugs = sorted({b for _, rows in cols for b in rows})
    short = {"fail": "bug", "pass": "ok", "skip": "skipped", "xfail": "known gap"}
    lines = ["| bug | fixed in | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for b in bugs:
        fixed = next((rows[b]["fixed_in"] for _, rows in cols if b in rows), "")
        cells = []
        for _, rows in cols:
            r = rows.get(b)
            if r is None:
                cells.append("-")
                continue
            cell = short.get(r["grade"], r["grade"])
            if r.get("expected") == "before the fix":
                cell += " (before the fix)"
            cells.append(cell)
        lines.append(f"| {b} | {fixed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
