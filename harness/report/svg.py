"""Inline SVG plots for the HTML report: no JavaScript, no network, one file."""

from __future__ import annotations

import math
from html import escape
from statistics import NormalDist
from typing import Any

from markupsafe import Markup

DEFAULT_ALPHA = 0.01


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def distribution_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-endpoint rows with an acceptance band, from a ``Verdict.to_dict()`` record.

    The band is where a correct proxier's count for that endpoint falls with probability
    1 - alpha (normal approximation of the binomial, Bonferroni over the endpoints, alpha
    the check's own). The check itself is a chi-square test over all endpoints, so the band
    is a reading aid, not the verdict. Missing or malformed fields give fewer rows, not an
    error: the report must render whatever a test recorded.
    """
    raw = stats.get("per_endpoint") or []
    rows = []
    for r in raw if isinstance(raw, list) else []:
        if not isinstance(r, dict):
            continue
        obs, exp = _num(r.get("observed")), _num(r.get("expected"))
        if obs is None and exp is None:
            continue
        rows.append({"endpoint": str(r.get("endpoint", "?")), "observed": obs or 0.0,
                     "expected": exp})
    if not rows:
        return []
    total = sum(r["expected"] or 0.0 for r in rows) or _num(stats.get("sample_size")) \
        or sum(r["observed"] for r in rows)
    alpha = _num(stats.get("alpha"))
    alpha = alpha if alpha and 0 < alpha < 1 else DEFAULT_ALPHA
    k = sum(1 for r in rows if r["expected"]) or 1
    z = NormalDist().inv_cdf(1 - alpha / (2 * k))
    for r in rows:
        e = r["expected"]
        if e is None or not total:
            r["lo"] = r["hi"] = None
            r["inside"] = True
            continue
        p = min(max(e / total, 0.0), 1.0)
        sd = math.sqrt(total * p * (1 - p))
        r["lo"], r["hi"] = max(0.0, e - z * sd), e + z * sd
        r["inside"] = r["lo"] <= r["observed"] <= r["hi"]
    return rows


def distribution_svg(stats: dict[str, Any], width: int = 640) -> Markup:
    """Horizontal bars of observed counts per endpoint; the expected count as a tick and
    the acceptance band shaded behind it. Bars outside their band are red."""
    rows = distribution_rows(stats)
    if not rows:
        return Markup("")
    label_w, value_w, row_h, top = 170, 110, 22, 24
    plot_w = width - label_w - value_w
    vmax = max(max(r["observed"], r["hi"] or 0.0, r["expected"] or 0.0) for r in rows) * 1.05 or 1.0
    height = top + row_h * len(rows) + 30

    def x(v: float) -> float:
        return label_w + plot_w * v / vmax

    alpha = _num(stats.get("alpha")) or DEFAULT_ALPHA
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="observed vs expected per endpoint">',
        f'<text x="4" y="14" class="ax">observed connections per endpoint '
        f'(tick: expected; shaded: a correct proxier&#39;s range, 1-{alpha:g})</text>',
    ]
    for i, r in enumerate(rows):
        y = top + i * row_h
        label = r["endpoint"] if len(r["endpoint"]) <= 28 else r["endpoint"][:27] + "\u2026"
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="lb">'
                     f'<title>{escape(r["endpoint"])}</title>{escape(label)}</text>')
        if r["lo"] is not None:
            parts.append(f'<rect x="{x(r["lo"]):.1f}" y="{y + 1}" width="{max(x(r["hi"]) - x(r["lo"]), 1):.1f}" '
                         f'height="{row_h - 2}" class="band"/>')
        cls = "bar" if r["inside"] else "bar bad"
        parts.append(f'<rect x="{label_w}" y="{y + 5}" width="{max(x(r["observed"]) - label_w, 0):.1f}" '
                     f'height="{row_h - 10}" class="{cls}"><title>{escape(r["endpoint"])}: observed '
                     f'{r["observed"]:g}, expected {r["expected"] if r["expected"] is not None else "?"}'
                     f'</title></rect>')
        if r["expected"] is not None:
            xe = x(r["expected"])
            parts.append(f'<line x1="{xe:.1f}" x2="{xe:.1f}" y1="{y + 1}" y2="{y + row_h - 1}" class="exp"/>')
        exp_txt = f' / {r["expected"]:.1f}' if r["expected"] is not None else ""
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + 15}" class="lb">{r["observed"]:g}{exp_txt}</text>')
    base = top + row_h * len(rows)
    parts.append(f'<line x1="{label_w}" x2="{label_w + plot_w}" y1="{base}" y2="{base}" class="axis"/>')
    for t in range(5):
        v = vmax * t / 4
        parts.append(f'<text x="{x(v):.1f}" y="{base + 14}" text-anchor="middle" class="ax">{v:.0f}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
