"""The benchmarks' HTML page: plots of the JSON the proxier measurements print (one file
each: ``benchmarks/convergence.py``, ``dataplane_cost.py``, ``proxier_cost.py``,
``ref_vs_kube_proxy.py`` with ``--out``). Self-contained: inline SVG, no JavaScript.

    python -m harness.report.bench reports/bench/*.json -o reports/bench.html

A file that is not one of these benchmarks' results is listed as skipped, not an error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from html import escape
from pathlib import Path
from typing import Any

from harness.report.templates import CSS

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#6e7781", "#bf3989"]
DASH = {"start": "", "middle": "6 3", "end": "2 2"}
KIND_ORDER = ("create", "add", "remove", "delete")

EXTRA_CSS = """
svg.chart .grid{stroke:#eaeef2}svg.chart .med{stroke:#1d2329;stroke-width:2}
svg.chart .p95{stroke:#cf222e;stroke-width:2}svg.chart .one{stroke:#1d2329;stroke-width:1;stroke-dasharray:3 3}
.lg span{display:inline-block;margin-right:1em}.lg i{display:inline-block;width:1.6em;height:.25em;vertical-align:middle;margin-right:.3em}
td.good{background:#dafbe1}td.bad{background:#ffd8d3}
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "\u2013"
    if isinstance(v, float):
        if v and abs(v) < 0.01:
            return f"{v:.2g}"
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return escape(str(v))


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        out = []
        e = math.floor(math.log10(lo))
        while 10 ** e <= hi * 1.0001:
            for m in (1, 2, 5):
                v = m * 10 ** e
                if lo * 0.9999 <= v <= hi * 1.0001:
                    out.append(v)
            e += 1
        return out or [lo, hi]
    span = hi - lo or 1.0
    step = 10 ** math.floor(math.log10(span / 4))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    v = math.ceil(lo / step) * step
    out = []
    while v <= hi + 1e-12:
        out.append(round(v, 12))
        v += step
    return out


class Axis:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False) -> None:
        if log:
            lo, hi = max(lo, 1e-9), max(hi, lo * 1.0001)
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        elif hi <= lo:
            hi = lo + 1.0
        self.lo, self.hi, self.a, self.b, self.log = lo, hi, a, b, log

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.a + (self.b - self.a) * f

    def ticks(self) -> list[float]:
        return _ticks(self.lo, self.hi, self.log)


def _svg_open(w: int, h: int, label: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{escape(label)}">']


def line_chart(series: list[dict[str, Any]], xlabel: str, ylabel: str, *, xlog: bool = True,
               ylog: bool = False, width: int = 720, height: int = 320) -> str:
    """``series``: {label, color, dash, points: [(x, y, lo, hi)]}; error bars lo..hi."""
    pts = [p for s in series for p in s["points"] if p[1] is not None]
    if not pts:
        return ""
    left, right, top, bottom = 64, 16, 12, 40
    xs = [p[0] for p in pts]
    ys = [v for p in pts for v in (p[1], p[2], p[3]) if v is not None]
    ax = Axis(min(xs), max(xs), left, width - right, xlog)
    ay = Axis(0 if not ylog else min(ys), max(ys) * 1.08, height - bottom, top, ylog)
    out = _svg_open(width, height, ylabel)
    for t in ay.ticks():
        y = ay(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="ax">{_fmt(float(t))}</text>')
    for t in sorted(set(xs)):
        x = ax(t)
        out.append(f'<text x="{x:.1f}" y="{height - bottom + 14}" text-anchor="middle" class="ax">{t:,.0f}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle" class="ax">{escape(xlabel)}</text>')
    out.append(f'<text x="12" y="{top + (height - bottom - top) / 2:.0f}" text-anchor="middle" class="ax" '
               f'transform="rotate(-90 12 {top + (height - bottom - top) / 2:.0f})">{escape(ylabel)}</text>')
    for s in series:
        p = sorted((q for q in s["points"] if q[1] is not None), key=lambda q: q[0])
        if not p:
            continue
        d = " ".join(f"{ax(q[0]):.1f},{ay(q[1]):.1f}" for q in p)
        dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{s["color"]}" stroke-width="2"{dash}>'
                   f'<title>{escape(s["label"])}</title></polyline>')
        for q in p:
            x, y = ax(q[0]), ay(q[1])
            if q[2] is not None and q[3] is not None:
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{ay(q[2]):.1f}" y2="{ay(q[3]):.1f}" '
                           f'stroke="{s["color"]}" stroke-width="1.2"/>')
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s["color"]}"><title>'
                       f'{escape(s["label"])}: {q[0]:,.0f} Services: {_fmt(q[1])}'
                       + (f" (95% interval {_fmt(q[2])}-{_fmt(q[3])})" if q[2] is not None else "")
                       + "</title></circle>")
    out.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{s["color"]}"></i>{escape(s["label"])}</span>' for s in series)
    return "".join(out) + f'<div class="lg meta">{legend}</div>'


def strip_chart(rows: list[dict[str, Any]], xlabel: str, width: int = 760) -> str:
    """One row per {label, values}: every value a dot, the median and 95th percentile as
    ticks; log x axis (convergence times span milliseconds to seconds)."""
    vals = [v for r in rows for v in r["values"] if v is not None and v > 0]
    if not vals:
        return ""
    label_w, right, row_h, top, bottom = 230, 20, 20, 8, 34
    height = top + row_h * len(rows) + bottom
    ax = Axis(min(vals), max(vals), label_w, width - right, log=True)
    out = _svg_open(width, height, xlabel)
    for t in ax.ticks():
        x = ax(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{height - bottom + 13}" text-anchor="middle" class="ax">{_fmt(float(t))}</text>')
    out.append(f'<text x="{(label_w + width) / 2:.0f}" y="{height - 4}" text-anchor="middle" class="ax">{escape(xlabel)}</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        if i % 2:
            out.append(f'<rect x="0" y="{top + i * row_h}" width="{width}" height="{row_h}" class="zebra"/>')
        out.append(f'<text x="{label_w - 6}" y="{y + 4:.1f}" text-anchor="end" class="lb">{escape(r["label"])}</text>')
        vs = sorted(v for v in r["values"] if v is not None and v > 0)
        color = r.get("color", PALETTE[0])
        for v in vs:
            out.append(f'<circle cx="{ax(v):.1f}" cy="{y:.1f}" r="2.6" fill="{color}" opacity=".55">'
                       f'<title>{v:.3f} s</title></circle>')
        if vs:
            med = vs[len(vs) // 2] if len(vs) % 2 else (vs[len(vs) // 2 - 1] + vs[len(vs) // 2]) / 2
            k = (len(vs) - 1) * 0.95
            p95 = vs[math.floor(k)] + (vs[math.ceil(k)] - vs[math.floor(k)]) * (k - math.floor(k))
            for v, cls in ((med, "med"), (p95, "p95")):
                out.append(f'<line x1="{ax(v):.1f}" x2="{ax(v):.1f}" y1="{y - 7:.1f}" y2="{y + 7:.1f}" class="{cls}">'
                           f'<title>{"median" if cls == "med" else "95th percentile"} {v:.3f} s</title></line>')
    out.append("</svg>")
    return "".join(out)


def ratio_chart(rows: list[dict[str, Any]], width: int = 720) -> str:
    """Horizontal bars of ratios on a log axis around 1: {label, ratio, lo, hi}."""
    vals = [v for r in rows for v in (r["ratio"], r.get("lo"), r.get("hi")) if v]
    if not vals:
        return ""
    label_w, right, row_h, top, bottom = 260, 20, 20, 8, 34
    height = top + row_h * len(rows) + bottom
    ax = Axis(min(min(vals), 0.5), max(max(vals), 2.0), label_w, width - right, log=True)
    out = _svg_open(width, height, "ratios")
    for t in ax.ticks():
        x = ax(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{height - bottom + 13}" text-anchor="middle" class="ax">{_fmt(float(t))}</text>')
    x1 = ax(1.0)
    out.append(f'<text x="{(label_w + width) / 2:.0f}" y="{height - 4}" text-anchor="middle" class="ax">'
               'reference / kube-proxy (left of 1: the reference is faster or smaller)</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" class="lb">{escape(r["label"])}</text>')
        if not r["ratio"]:
            out.append(f'<text x="{x1 + 4:.1f}" y="{y + 14}" class="ax">not measured</text>')
            continue
        x = ax(r["ratio"])
        color = "#1a7f37" if r["ratio"] <= 1 else "#cf222e"
        out.append(f'<rect x="{min(x, x1):.1f}" y="{y + 4}" width="{abs(x - x1):.1f}" height="{row_h - 8}" '
                   f'fill="{color}"><title>{r["ratio"]:.3f}</title></rect>')
        if r.get("lo") and r.get("hi") and r["lo"] != r["hi"]:
            out.append(f'<line x1="{ax(r["lo"]):.1f}" x2="{ax(r["hi"]):.1f}" y1="{y + row_h / 2}" '
                       f'y2="{y + row_h / 2}" stroke="#1d2329" stroke-width="1.5"/>')
        out.append(f'<text x="{max(x, x1) + 4:.1f}" y="{y + 14}" class="lb">{r["ratio"]:.2f}</text>')
    out.append(f'<line x1="{x1:.1f}" x2="{x1:.1f}" y1="{top}" y2="{height - bottom}" class="one"/>')
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------------- sections


def _env_line(d: dict[str, Any]) -> str:
    e = d.get("environment") or {}
    la = [e.get("loadavg_start"), e.get("loadavg_end")]
    return (f'<p class="meta">{escape(str(e.get("started", "")))} · kernel {escape(str(e.get("kernel", "")))} · '
            f'{escape(str(e.get("iptables", "")))} · {escape(str(e.get("nft", "")))} · {e.get("cpus", "?")} CPUs · '
            f'load average at start / end: {escape(str(la[0]))} / {escape(str(la[1]))}</p>')


def convergence_section(docs: list[dict[str, Any]]) -> str:
    out = ["<h2>Convergence: published change to every node forwarding (probes)</h2>",
           '<p class="meta">Each dot is one change; black tick the median, red tick the 95th '
           'percentile. Seconds from publishing to the last node forwarding as the new state says.</p>']
    table = ["<table><tr><th>proxier</th><th>Services</th><th>changes</th><th>median s</th>"
             "<th>p95 s</th><th>max s</th><th>create / add / remove / delete median s</th></tr>"]
    for j, d in enumerate(docs):
        rows = []
        for size, s in d.get("sizes", {}).items():
            rows.append({"label": f"{int(size):,} Services: all", "color": PALETTE[j % len(PALETTE)],
                         "values": [r["seconds"] for r in s.get("records", [])]})
            for k in KIND_ORDER:
                rows.append({"label": f"{k}", "color": PALETTE[j % len(PALETTE)],
                             "values": [r["seconds"] for r in s.get("records", []) if r["kind"] == k]})
            a = s.get("all", {})
            bk = s.get("by_kind", {})
            table.append(f"<tr><td>{escape(d.get('label', ''))}</td><td class=n>{int(size):,}</td>"
                         f"<td class=n>{s.get('converged')}/{s.get('changes')}</td>"
                         f"<td class=n>{_fmt(a.get('median'))}</td><td class=n>{_fmt(a.get('p95'))}</td>"
                         f"<td class=n>{_fmt(a.get('max'))}</td><td class=n>"
                         + " / ".join(_fmt(bk.get(k, {}).get("median")) for k in KIND_ORDER) + "</td></tr>")
        out.append(f"<h3>{escape(d.get('label', ''))}</h3>" + _env_line(d))
        out.append(f'<figure class="plot">{strip_chart(rows, "seconds (log scale)")}</figure>')
    table.append("</table>")
    # medians against size, one line per proxier
    series = [{"label": d.get("label", ""), "color": PALETTE[j % len(PALETTE)], "dash": "",
               "points": [(int(z), s["all"].get("median"), None, None) for z, s in d.get("sizes", {}).items()
                          if s.get("all", {}).get("n")]} for j, d in enumerate(docs)]
    series += [{"label": d.get("label", "") + " p95", "color": PALETTE[j % len(PALETTE)], "dash": "4 3",
                "points": [(int(z), s["all"].get("p95"), None, None) for z, s in d.get("sizes", {}).items()
                           if s.get("all", {}).get("n")]} for j, d in enumerate(docs)]
    out.append("<h3>Median and 95th percentile against the number of Services</h3>")
    out.append(f'<figure class="plot">{line_chart(series, "Services (x 10 endpoints)", "seconds", ylog=True)}</figure>')
    out.append("".join(table))
    return "".join(out)


def dataplane_section(docs: list[dict[str, Any]]) -> str:
    out = ["<h2>Data-plane cost per new connection</h2>"]
    for d in docs:
        labels = d.get("proxiers", [])
        out.append(_env_line(d))
        out.append(f'<p class="meta">{d.get("rounds")} rounds x {d.get("conns")} connections per '
                   '(proxier, position), interleaved in random order; medians over rounds, bars: 95% '
                   'bootstrap interval. Solid: start of the ruleset, dashed: middle, dotted: end.</p>')
        for metric, key, ci, ylab in (("latency", "latency_us", "latency_ci95_us", "first-packet (connect) latency, µs"),
                                      ("rate", "rate_per_s", "rate_ci95", "new connections per second")):
            series = []
            for j, lab in enumerate(labels):
                for pos in ("start", "middle", "end"):
                    pts = []
                    for size, s in d.get("sizes", {}).items():
                        at = ((s.get("proxiers", {}).get(lab) or {}).get("at") or {}).get(pos)
                        if at:
                            lo, hi = (at.get(ci) or [None, None])
                            pts.append((int(size), at.get(key), lo, hi))
                    series.append({"label": f"{lab} {pos}", "color": PALETTE[j % len(PALETTE)],
                                   "dash": DASH[pos], "points": pts})
            out.append(f"<h3>{escape(metric)}</h3>")
            out.append(f'<figure class="plot">{line_chart(series, "Services (x 10 endpoints)", ylab)}</figure>')
        t = ["<table><tr><th>Services</th><th>proxier</th><th>latency start / middle / end µs</th>"
             "<th>end / start (paired)</th><th>rate start / middle / end per s</th><th>load average</th></tr>"]
        for size, s in d.get("sizes", {}).items():
            for lab, p in s.get("proxiers", {}).items():
                at = p.get("at", {})
                r = p.get("latency_end_over_start", {})
                t.append(f"<tr><td class=n>{int(size):,}</td><td>{escape(lab)}</td><td class=n>"
                         + " / ".join(_fmt(at.get(k, {}).get("latency_us")) for k in ("start", "middle", "end"))
                         + f"</td><td class=n>{_fmt(r.get('median'))} ({_fmt((r.get('ci95') or [None])[0])}-"
                         f"{_fmt((r.get('ci95') or [None, None])[1])})</td><td class=n>"
                         + " / ".join(_fmt(at.get(k, {}).get("rate_per_s")) for k in ("start", "middle", "end"))
                         + f"</td><td>{escape(str(s.get('loadavg')))}</td></tr>")
        t.append("</table>")
        out.append("".join(t))
    return "".join(out)


def cost_section(docs: list[dict[str, Any]]) -> str:
    out = ["<h2>Cost of the proxier</h2>",
           "<table><tr><th>proxier</th><th>Services</th><th>full sync s</th><th>CPU s (settled)</th>"
           "<th>VmHWM MiB</th><th>tree peak RSS MiB</th><th>update s median (p95)</th>"
           "<th>update CPU s (settled)</th><th>load average</th></tr>"]
    for d in docs:
        for r in d.get("runs", []):
            f, u, m = r.get("full") or {}, r.get("update") or {}, r.get("memory") or {}
            us = u.get("seconds") or {}
            out.append(f"<tr><td>{escape(r.get('label', ''))}</td><td class=n>{r.get('size', 0):,}</td>"
                       f"<td class=n>{_fmt(f.get('seconds'))}</td><td class=n>{_fmt(f.get('cpu_s'))} "
                       f"({_fmt(f.get('cpu_s_settled'))})</td><td class=n>{_fmt(m.get('vmhwm_mib'))}</td>"
                       f"<td class=n>{_fmt(m.get('tree_peak_rss_mib'))}</td><td class=n>{_fmt(us.get('median'))} "
                       f"({_fmt(us.get('p95'))})</td><td class=n>{_fmt(u.get('cpu_s_median'))} "
                       f"({_fmt(u.get('cpu_s_settled_median'))})</td><td>{escape(str(r.get('loadavg')))}"
                       + (f" <b>{escape(r['error'])}</b>" if r.get("error") else "") + "</td></tr>")
    out.append("</table>")
    return "".join(out)


FIG_NAMES = {"full_s": "full sync, s", "full_cpu_s": "full sync, CPU s", "update_s": "one-endpoint update, s",
             "update_cpu_s": "update, CPU s", "vmhwm_mib": "peak memory (VmHWM), MiB",
             "tree_peak_rss_mib": "peak RSS with children, MiB"}


def ref_vs_kp_section(docs: list[dict[str, Any]]) -> str:
    out = ["<h2>The reference proxier against kube-proxy</h2>"]
    for d in docs:
        out.append(_env_line(d))
        out.append(f'<p class="meta">{d.get("size", 0):,} Services x {d.get("per_service")} endpoints, '
                   f'{d.get("rounds")} round(s), {escape(str(d.get("reference_version")))} vs '
                   f'{escape(str(d.get("kube_proxy_version")))}; ratios inside each round.</p>')
        rows = []
        t = ["<table><tr><th>mode</th><th>figure</th><th>reference</th><th>kube-proxy</th>"
             "<th>reference / kube-proxy</th></tr>"]
        for row in d.get("table", []):
            for k, name in FIG_NAMES.items():
                rat = (row.get("ratio") or {}).get(k)
                rv, kv = (row.get("reference") or {}).get(k), (row.get("kube-proxy") or {}).get(k)
                cls = "" if not rat else (' class="n good"' if rat["median"] <= 1 else ' class="n bad"')
                t.append(f"<tr><td>{escape(row['mode'])}</td><td>{escape(name)}</td><td class=n>{_fmt(rv)}</td>"
                         f"<td class=n>{_fmt(kv)}</td><td{cls or ' class=n'}>"
                         + (f"{rat['median']:.2f}" + (f" ({rat['spread'][0]:.2f}-{rat['spread'][1]:.2f})"
                                                       if rat["spread"][0] != rat["spread"][1] else "")
                            if rat else "\u2013") + "</td></tr>")
                rows.append({"label": f"{row['mode']}: {name}", "ratio": rat["median"] if rat else None,
                             "lo": rat["spread"][0] if rat else None, "hi": rat["spread"][1] if rat else None})
            errs = row.get("reference_errors", []) + row.get("kube-proxy_errors", [])
            if errs:
                t.append(f"<tr><td>{escape(row['mode'])}</td><td colspan=4>{escape('; '.join(errs))}</td></tr>")
        t.append("</table>")
        out.append(f'<figure class="plot">{ratio_chart(rows)}</figure>')
        out.append("".join(t))
        for mode, p in (d.get("profiles") or {}).items():
            if p.get("update_only"):
                out.append(f"<details><summary>profile of the reference, {escape(mode)}: the one-endpoint "
                           f"update only</summary><pre>{escape(chr(10).join(p['update_only']))}</pre></details>")
            out.append(f"<details><summary>profile of the reference, {escape(mode)}: whole run (by cumulative time)"
                       f"</summary><pre>{escape(chr(10).join(p.get('cumulative', [])))}</pre>"
                       f"<pre>{escape(chr(10).join(p.get('tottime', [])))}</pre></details>")
    return "".join(out)


SECTIONS = (("convergence", convergence_section), ("dataplane_cost", dataplane_section),
            ("proxier_cost", cost_section), ("ref_vs_kube_proxy", ref_vs_kp_section))


def render(docs: list[dict[str, Any]], skipped: list[str] = ()) -> str:
    body = []
    for name, fn in SECTIONS:
        mine = [d for d in docs if d.get("benchmark") == name]
        if mine:
            body.append(fn(mine))
    if not body:
        body.append("<p>No benchmark results.</p>")
    if skipped:
        body.append('<p class="meta">Not benchmark results, skipped: ' + escape(", ".join(skipped)) + "</p>")
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Service proxy measurements</title><style>{CSS}{EXTRA_CSS}</style></head><body>"
            "<h1>Service proxy measurements</h1><p class=meta>Rendered from the benchmarks' JSON "
            "(<code>benchmarks/README.md</code>). Comparisons are ratios measured side by side in one run.</p>"
            + "".join(body) + "</body></html>\n")


def load(paths: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    docs, skipped = [], []
    for p in paths:
        try:
            lines = [ln for ln in Path(p).read_text().splitlines() if ln.strip()]
            d = json.loads(lines[-1])  # a file or a benchmark's whole output: the last line
        except (OSError, ValueError, IndexError):
            skipped.append(str(p))
            continue
        if isinstance(d, dict) and d.get("benchmark") in dict(SECTIONS):
            docs.append(d)
        else:
            skipped.append(str(p))
    return docs, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.report.bench", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="JSON files written by the benchmarks (--out)")
    ap.add_argument("-o", "--output", default="reports/bench.html")
    args = ap.parse_args(argv)
    docs, skipped = load(args.results)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(render(docs, skipped))
    tmp.replace(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
