"""Timelines recorded by the affinity and endpoint-churn checks, and their inline SVG plots.

The checks record compact JSON-able dicts with ``record_property`` (they land in the
check's ``properties`` in ``report.json``); the HTML report draws them from the record
alone. Both are capped at ``MAX_POINTS`` marks.

``affinity_timeline`` (``AffinityTimeline.to_dict()``)::

    {"x": "s" | "connection",        # seconds since the first connection, or its number
     "clients": ["10.0.0.1", ...],   # one row each, in order
     "endpoints": ["pod-a", ...],    # letter A, B, ... in this order
     "points": {"10.0.0.1": [[t, "pod-a"], [t, null], [t, "pod-b", "NodePort"]], ...},
     "timeout_s": 2,                 # the Service's timeoutSeconds
     "markers": [{"t": 3.1, "label": "timeout elapsed"}],
     "total": 22}                    # connections made (points beyond the cap are dropped)

``churn_timeline`` (``churn_timeline()``)::

    {"points": [[t, kind, pod or null], ...],  # t: seconds since the first probe
     "kinds": {kind: count over all probes},   # kinds: KINDS
     "total": 1234,                            # probes made (points shown: len(points))
     "initial": ["pod-a", ...],                # endpoints before the first change
     "changes": [{"published": t, "acked": t, "endpoints": [...], "removed": [...],
                  "added": [...]}]}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from markupsafe import Markup

MAX_POINTS = 400
MAX_ROWS = 60

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), with the
# letter colour that reads on each.
_PALETTE = [("#E69F00", "#1d2329"), ("#56B4E9", "#1d2329"), ("#009E73", "#ffffff"),
            ("#F0E442", "#1d2329"), ("#0072B2", "#ffffff"), ("#D55E00", "#ffffff"),
            ("#CC79A7", "#1d2329"), ("#999999", "#1d2329")]

# Churn probe outcomes, in lane/legend order: (kind, legend text, colour).
KINDS = (
    ("current", "reached a current endpoint", "#1a7f37"),
    ("removed", "reached a removed endpoint before the ack", "#bf8700"),
    ("removed-after-ack", "reached a removed endpoint after the ack", "#cf222e"),
    ("refused", "refused (reset or ICMP)", "#8250df"),
    ("timeout", "no reply (timeout)", "#57606a"),
    ("error", "probe error", "#1d2329"),
)
_KIND_COLOUR = {k: c for k, _, c in KINDS}


def _natural(name: str) -> list[Any]:
    """Sort key: pod9 before pod10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class PlotDataError(ValueError):
    """A recorded timeline the report cannot draw (the report shows this message)."""


# --- recording (used by the conformance checks) ----------------------------------------------

class AffinityTimeline:
    """Collects which endpoint answered each connection, per client address.

    ``x="s"``: each ``add`` gives the monotonic time of the connection, plotted as seconds
    since the first; ``x="connection"``: connections are numbered in the order added.
    """

    def __init__(self, endpoints: Iterable[str], *, x: str = "s",
                 timeout_s: float | None = None) -> None:
        if x not in ("s", "connection"):
            raise ValueError(f"x must be 's' or 'connection', not {x!r}")
        self.endpoints = list(endpoints)
        self.x, self.timeout_s = x, timeout_s
        self.t0: float | None = None
        self.points: dict[str, list[list[Any]]] = {}
        self.markers: list[dict[str, Any]] = []
        self.total = 0

    def _t(self, t: float | None) -> float:
        if self.x == "connection":
            return float(self.total)
        if t is None:
            raise ValueError("a time-based affinity timeline needs the connection's time")
        if self.t0 is None:
            self.t0 = t
        return round(t - self.t0, 4)

    def add(self, observations: Any, t: float | None = None, via: str | None = None) -> None:
        """One observation or a sequence of them (from ``probe``), made at ``t``."""
        obs = observations if isinstance(observations, (list, tuple)) else [observations]
        for o in obs:
            point = [self._t(t), o.pod]
            if via:
                point.append(via)
            self.total += 1
            self.points.setdefault(o.src, []).append(point)
            if o.pod is not None and o.pod not in self.endpoints:
                self.endpoints.append(o.pod)

    def mark(self, t: float, label: str) -> None:
        """A vertical marker at monotonic time ``t`` (time-based timelines only)."""
        if self.x == "s" and self.t0 is not None:
            self.markers.append({"t": round(t - self.t0, 4), "label": label})

    def to_dict(self, cap: int = MAX_POINTS) -> dict[str, Any]:
        points, kept = {}, 0
        for client, pts in self.points.items():
            take = pts[:max(cap - kept, 0)]
            kept += len(take)
            if take:
                points[client] = take
        return {"x": self.x, "clients": list(points), "endpoints": self.endpoints,
                "points": points, "timeout_s": self.timeout_s, "markers": self.markers,
                "total": self.total}


def churn_timeline(records: Sequence[tuple[float, float, Any]],
                   changes: Sequence[tuple[float, float, set[str], set[str]]],
                   initial: Iterable[str], cap: int = MAX_POINTS) -> dict[str, Any]:
    """The churn check's probes, classified, from its ``(start, end, Observation)`` records
    and ``(published, acked, endpoints now, removed)`` changes (monotonic times).

    A reply is ``current`` if its pod is in the endpoint set published last before the
    probe started. Otherwise it is ``removed`` if the change that last removed the pod was
    not yet acknowledged when the probe started (the proxier may still be converging), and
    ``removed-after-ack`` if it was (or the pod was never an endpoint). Over the cap, every
    probe that failed or reached a removed endpoint after the ack is kept, and the others
    are thinned evenly over time.
    """
    initial = sorted(initial, key=_natural)
    sets = [set(initial)] + [set(now) for _, _, now, _ in changes]
    t0 = records[0][0] if records else (changes[0][0] if changes else 0.0)
    points: list[list[Any]] = []
    for start, _, o in records:
        i = sum(1 for published, *_ in changes if published <= start)  # changes in effect
        outcome = getattr(o.outcome, "value", o.outcome)
        if outcome == "reply":
            if o.pod in sets[i]:
                kind = "current"
            else:
                # the last change (published by now) that took this pod out of the set
                j = next((j for j in range(i, 0, -1) if o.pod in sets[j - 1]), None)
                kind = "removed" if j is not None and start < changes[j - 1][1] \
                    else "removed-after-ack"
        elif outcome in ("reset", "icmp"):
            kind = "refused"
        elif outcome == "timeout":
            kind = "timeout"
        else:
            kind = "error"
        points.append([round(start - t0, 4), kind, o.pod])
    kinds = {k: 0 for k, _, _ in KINDS}
    for p in points:
        kinds[p[1]] += 1
    if len(points) > cap:
        fine = ("current", "removed")
        keep = [p for p in points if p[1] not in fine][:cap]
        rest = [p for p in points if p[1] in fine]
        room = cap - len(keep)
        step = len(rest) / room if room > 0 else math.inf
        thinned = [rest[int(j * step)] for j in range(room)] if room > 0 else []
        points = sorted(keep + thinned, key=lambda p: p[0])
    out_changes, before = [], set(initial)
    for published, acked, now, removed in changes:
        out_changes.append({"published": round(published - t0, 4), "acked": round(acked - t0, 4),
                            "endpoints": sorted(now, key=_natural),
                            "removed": sorted(removed, key=_natural),
                            "added": sorted(set(now) - before, key=_natural)})
        before = set(now)
    return {"points": points, "kinds": kinds, "total": len(records), "initial": initial,
            "changes": out_changes}


# --- drawing -----------------------------------------------------------------------------------

def _num(value: Any, what: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise PlotDataError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(f):
        raise PlotDataError(f"{what} is not finite: {value!r}")
    return f


def _need(data: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(data, dict):
        raise PlotDataError(f"expected an object, got {type(data).__name__}")
    if key not in data:
        raise PlotDataError(f"missing {key!r}")
    if not isinstance(data[key], kind):
        raise PlotDataError(f"{key!r} has the wrong type ({type(data[key]).__name__})")
    return data[key]


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else str(i)


def _ticks(vmax: float, n: int = 5) -> list[float]:
    if vmax <= 0:
        return [0.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(vmax / step + 1e-9) + 1)]


def _fmt_t(v: float) -> str:
    return f"{v:g}" if abs(v - round(v)) < 1e-9 else f"{v:.2f}".rstrip("0")


def _legend(items: list[tuple[str, str, str, str]], x0: int, y0: int, width: int) -> tuple[list[str], int]:
    """Swatches with text, wrapped to ``width``; items: (fill, letter, letter colour, text).
    Returns the SVG parts and the y below the legend."""
    parts, x, y = [], x0, y0
    for fill, letter, ink, text in items:
        w = 18 + 6.2 * len(text) + 14
        if x + w > width and x > x0:
            x, y = x0, y + 18
        paint = 'class="noreply"' if fill == "none" else f'fill="{fill}"'
        parts.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" rx="2" {paint}/>')
        if letter:
            parts.append(f'<text x="{x + 6}" y="{y}" text-anchor="middle" class="mk" '
                         f'fill="{ink}">{escape(letter)}</text>')
        parts.append(f'<text x="{x + 16}" y="{y}" class="lb">{escape(text)}</text>')
        x += w
    return parts, y + 14


def _x_axis(parts: list[str], x: Any, left: float, right: float, base: float, vmax: float,
            unit: str) -> None:
    parts.append(f'<line x1="{left}" x2="{right}" y1="{base}" y2="{base}" class="axis"/>')
    for v in _ticks(vmax):
        parts.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{base}" y2="{base + 4}" class="axis"/>')
        parts.append(f'<text x="{x(v):.1f}" y="{base + 15}" text-anchor="middle" class="ax">'
                     f'{_fmt_t(v)}</text>')
    parts.append(f'<text x="{(left + right) / 2:.1f}" y="{base + 29}" text-anchor="middle" '
                 f'class="ax">{escape(unit)}</text>')


def affinity_svg(data: Any, width: int = 760) -> tuple[Markup, str]:
    """One row per client address, one lettered mark per connection (colour and letter:
    the endpoint that answered; a hollow red mark: no reply), vertical markers where the
    record has them. Returns the SVG and a one-paragraph text alternative. Raises
    ``PlotDataError`` for a record it cannot draw."""
    mode = data.get("x", "s") if isinstance(data, dict) else None
    if mode not in ("s", "connection"):
        raise PlotDataError(f"unknown x {mode!r}")
    clients = [str(c) for c in _need(data, "clients", list)]
    endpoints = [str(e) for e in _need(data, "endpoints", list)]
    points = _need(data, "points", dict)
    markers = data.get("markers") or []
    if not isinstance(markers, list):
        raise PlotDataError("'markers' is not a list")
    rows: list[tuple[str, list[tuple[float, str | None, str | None]]]] = []
    for client in clients[:MAX_ROWS]:
        pts = points.get(client, [])
        if not isinstance(pts, list):
            raise PlotDataError(f"points of {client} is not a list")
        row = []
        for p in pts[:MAX_POINTS]:
            if not isinstance(p, list) or len(p) < 2:
                raise PlotDataError(f"a point of {client} is not [t, endpoint]: {p!r}")
            ep = None if p[1] is None else str(p[1])
            if ep is not None and ep not in endpoints:
                endpoints.append(ep)
            row.append((_num(p[0], f"time of a point of {client}"), ep,
                        str(p[2]) if len(p) > 2 and p[2] else None))
        rows.append((client, row))
    marks = [(_num(m.get("t") if isinstance(m, dict) else None, "marker time"),
              str(m.get("label", ""))) for m in markers]
    n_points = sum(len(r) for _, r in rows)
    if not rows or not n_points:
        raise PlotDataError("no connections recorded")

    colour = {e: _PALETTE[i % len(_PALETTE)] for i, e in enumerate(endpoints)}
    letter = {e: _letter(i) for i, e in enumerate(endpoints)}
    label_w, right_w, row_h, mark = 150, 70, 18, 12
    plot_l, plot_r = label_w, width - right_w
    legend, top = _legend([(colour[e][0], letter[e], colour[e][1], e) for e in endpoints]
                          + [("none", "\u00d7", "#cf222e", "no reply")], 4, 14, width)
    if marks:
        top += 14
    vmax = max([t for _, r in rows for t, _, _ in r] + [t for t, _ in marks])
    if mode == "connection":
        span = max(vmax, 1.0)
        pad = (plot_r - plot_l) / (span + 1) / 2

        def x(v: float) -> float:
            return plot_l + pad + (plot_r - plot_l - 2 * pad) * v / span
    else:
        span = vmax * 1.03 or 1.0

        def x(v: float) -> float:
            return plot_l + mark / 2 + (plot_r - plot_l - mark) * v / span

    height = top + row_h * len(rows) + 36
    summary = _affinity_summary(rows, marks, endpoints, data)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<title>{escape(summary)}</title>', *legend]
    for i, (client, row) in enumerate(rows):
        y = top + i * row_h
        if i % 2:
            parts.append(f'<rect x="{plot_l}" y="{y}" width="{plot_r - plot_l}" height="{row_h}" class="zebra"/>')
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="lb client">'
                     f'<title>{escape(client)}</title>{escape(_short(client, 24))}</text>')
        distinct = {ep for _, ep, _ in row if ep is not None}
        parts.append(f'<text x="{plot_r + 6}" y="{y + 13}" class="ax">{len(distinct)} endpoint'
                     f'{"" if len(distinct) == 1 else "s"}</text>')
        for t, ep, via in row:
            cx = x(t)
            when = f"connection {t:g}" if mode == "connection" else f"t={t:.3f} s"
            tip = f"{client}, {when}{f' via {via}' if via else ''}: {ep or 'no reply'}"
            if ep is None:
                parts.append(f'<g class="conn"><title>{escape(tip)}</title><rect x="{cx - mark / 2:.1f}" '
                             f'y="{y + 3}" width="{mark}" height="{mark}" rx="2" class="noreply"/>'
                             f'<text x="{cx:.1f}" y="{y + 13}" text-anchor="middle" class="mk" '
                             f'fill="#cf222e">\u00d7</text></g>')
                continue
            fill, ink = colour[ep]
            parts.append(f'<g class="conn"><title>{escape(tip)}</title><rect x="{cx - mark / 2:.1f}" y="{y + 3}" '
                         f'width="{mark}" height="{mark}" rx="2" fill="{fill}" class="pt"/>'
                         f'<text x="{cx:.1f}" y="{y + 13}" text-anchor="middle" class="mk" '
                         f'fill="{ink}">{letter[ep]}</text></g>')
    base = top + row_h * len(rows)
    for t, label in marks:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{base}" class="marker">'
                     f'<title>{escape(label)}</title></line>')
        anchor = "end" if x(t) > (plot_l + plot_r) / 2 else "start"
        dx = -3 if anchor == "end" else 3
        parts.append(f'<text x="{x(t) + dx:.1f}" y="{top - 6}" text-anchor="{anchor}" class="ax">'
                     f'{escape(_short(label, 70))}</text>')
    unit = ("connection number, in the order made" if mode == "connection"
            else "seconds since the first connection")
    _x_axis(parts, x, plot_l, plot_r, base, span if mode == "s" else vmax, unit)
    parts.append("</svg>")
    return Markup("".join(parts)), summary


def _affinity_summary(rows: list[tuple[str, list[tuple[float, str | None, str | None]]]],
                      marks: list[tuple[float, str]], endpoints: list[str],
                      data: dict[str, Any]) -> str:
    n = sum(len(r) for _, r in rows)
    total = data.get("total")
    shown = f"{n} connections" + (f" (of {total})" if isinstance(total, int) and total > n else "")
    per: dict[int, int] = {}
    for _, r in rows:
        k = len({ep for _, ep, _ in r if ep is not None})
        per[k] = per.get(k, 0) + 1
    spread = ", ".join(f"{c} reached {k} endpoint{'' if k == 1 else 's'}" for k, c in sorted(per.items()))
    used = len({ep for _, r in rows for _, ep, _ in r if ep is not None})
    text = (f"{len(rows)} client addresses, {shown}, {used} of {len(endpoints)} endpoints "
            f"answered. Per client: {spread}.")
    noreply = sum(1 for _, r in rows for _, ep, _ in r if ep is None)
    if noreply:
        text += f" {noreply} connections got no reply."
    for t, label in marks:
        # the first connection after the marker against the last one before it
        both = [(next((ep for tt, ep, _ in r if tt > t), None),
                 next((ep for tt, ep, _ in reversed(r) if tt < t), None)) for _, r in rows]
        both = [(a, b) for a, b in both if a is not None and b is not None]
        changed = sum(1 for a, b in both if a != b)
        if both:
            text += (f" From before to after the marker ({label}): {changed} of {len(both)} "
                     "clients changed endpoint.")
    return text


def churn_svg(data: Any, width: int = 760) -> tuple[Markup, str]:
    """Probes over time, one lane per endpoint plus lanes for refusals and timeouts; each
    probe a tick coloured by its outcome; the endpoint's lane shaded while it is in the
    published set; per change a dashed line where it was published and a solid one where
    the proxier acknowledged it. Returns the SVG and a text alternative."""
    raw = _need(data, "points", list)
    changes = _need(data, "changes", list)
    initial = [str(e) for e in (data.get("initial") or [])]
    points: list[tuple[float, str, str | None]] = []
    for p in raw[:MAX_POINTS * 2]:
        if not isinstance(p, list) or len(p) < 2:
            raise PlotDataError(f"a point is not [t, kind, pod]: {p!r}")
        kind = str(p[1])
        if kind not in _KIND_COLOUR:
            raise PlotDataError(f"unknown outcome {kind!r}")
        points.append((_num(p[0], "probe time"), kind, str(p[2]) if len(p) > 2 and p[2] else None))
    chg = []
    for c in changes:
        if not isinstance(c, dict):
            raise PlotDataError(f"a change is not an object: {c!r}")
        chg.append({"published": _num(c.get("published"), "published time"),
                    "acked": _num(c.get("acked"), "acknowledged time"),
                    "endpoints": [str(e) for e in c.get("endpoints") or []]})
    if not points:
        raise PlotDataError("no probes recorded")

    pods = list(dict.fromkeys([*initial, *(e for c in chg for e in c["endpoints"]),
                               *(pod for _, k, pod in points if pod and k not in ("refused", "timeout", "error"))]))
    pods = pods[:MAX_ROWS]
    present = {k for _, k, _ in points}
    lanes = [("pod", p) for p in pods] + [("kind", "refused"), ("kind", "timeout")]
    if "error" in present:
        lanes.append(("kind", "error"))
    lane_of = {lane: i for i, lane in enumerate(lanes)}

    label_w, right_w, row_h = 150, 20, 16
    plot_l, plot_r = label_w, width - right_w
    kinds = data.get("kinds") if isinstance(data.get("kinds"), dict) else {}
    counts = {k: kinds.get(k, sum(1 for _, kk, _ in points if kk == k)) for k, _, _ in KINDS}
    items = [(colour, "", "", f"{text} ({counts[k]})") for k, text, colour in KINDS
             if k != "error" or counts[k]]
    legend, y = _legend(items, 4, 14, width)
    legend.append(f'<line x1="4" x2="16" y1="{y - 4}" y2="{y - 4}" class="pub"/>'
                  f'<text x="20" y="{y}" class="lb">change published</text>'
                  f'<line x1="134" x2="146" y1="{y - 4}" y2="{y - 4}" class="ack"/>'
                  f'<text x="150" y="{y}" class="lb">proxier acknowledged</text>'
                  f'<rect x="284" y="{y - 10}" width="12" height="12" class="member"/>'
                  f'<text x="300" y="{y}" class="lb">endpoint in the published set</text>')
    top = y + 24
    tmax = max([t for t, _, _ in points] + [c["acked"] for c in chg]) * 1.02 or 1.0

    def x(v: float) -> float:
        return plot_l + (plot_r - plot_l) * v / tmax

    height = top + row_h * len(lanes) + 36
    total = data.get("total")
    summary = _churn_summary(points, chg, counts, total, tmax)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<title>{escape(summary)}</title>', *legend]
    # membership: the endpoint set published at each moment
    sets = [(0.0, set(initial))] + [(c["published"], set(c["endpoints"])) for c in chg]
    for i, (kind, name) in enumerate(lanes):
        y = top + i * row_h
        if i % 2:
            parts.append(f'<rect x="{plot_l}" y="{y}" width="{plot_r - plot_l}" height="{row_h}" class="zebra"/>')
        if kind == "pod":
            for j, (start, members) in enumerate(sets):
                end = sets[j + 1][0] if j + 1 < len(sets) else tmax
                if name in members and end > start:
                    parts.append(f'<rect x="{x(start):.1f}" y="{y + 2}" width="{x(end) - x(start):.1f}" '
                                 f'height="{row_h - 4}" class="member"/>')
        text = name if kind == "pod" else {"refused": "refused", "timeout": "no reply",
                                            "error": "error"}[name]
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end" class="lb lane">'
                     f'<title>{escape(name)}</title>{escape(_short(text, 24))}</text>')
    base = top + row_h * len(lanes)
    for n, c in enumerate(chg, 1):
        xp, xa = x(c["published"]), x(c["acked"])
        parts.append(f'<line x1="{xp:.1f}" x2="{xp:.1f}" y1="{top - 12}" y2="{base}" class="pub">'
                     f'<title>change {n} published at t={c["published"]:.3f} s</title></line>')
        parts.append(f'<line x1="{xa:.1f}" x2="{xa:.1f}" y1="{top - 4}" y2="{base}" class="ack">'
                     f'<title>change {n} acknowledged at t={c["acked"]:.3f} s '
                     f'({(c["acked"] - c["published"]) * 1000:.0f} ms after publishing)</title></line>')
        parts.append(f'<text x="{xp:.1f}" y="{top - 14}" text-anchor="middle" class="ax">{n}</text>')
    for t, kind, pod in points:
        if kind in ("refused", "timeout", "error") or pod is None:
            lane = lane_of.get(("kind", kind if kind in ("refused", "timeout", "error") else "error"))
        else:
            lane = lane_of.get(("pod", pod))
        if lane is None:
            continue
        y = top + lane * row_h
        parts.append(f'<rect x="{x(t) - 0.75:.1f}" y="{y + 3}" width="1.5" height="{row_h - 6}" '
                     f'fill="{_KIND_COLOUR[kind]}" class="probe"><title>t={t:.3f} s: '
                     f'{escape(dict((k, d) for k, d, _ in KINDS)[kind])}'
                     f'{escape(f" ({pod})") if pod else ""}</title></rect>')
    _x_axis(parts, x, plot_l, plot_r, base, tmax, "seconds since the first probe")
    parts.append("</svg>")
    return Markup("".join(parts)), summary


def _churn_summary(points: list[tuple[float, str, str | None]], chg: list[dict[str, Any]],
                   counts: dict[str, int], total: Any, tmax: float) -> str:
    n = len(points)
    probes = f"{n} probes"
    if isinstance(total, int) and total > n:
        probes = (f"{total} probes ({n} drawn: every one that failed or reached a removed "
                  "endpoint after the ack, the others thinned evenly)")
    outcome = ", ".join(f"{counts[k]} {d}" for k, d, _ in KINDS if counts[k])
    text = f"{probes} over {tmax:.1f} s and {len(chg)} endpoint changes: {outcome}."
    if chg:
        acks = ", ".join(f"{(c['acked'] - c['published']) * 1000:.0f}" for c in chg)
        text += f" Acknowledged after {acks} ms."
    return text
