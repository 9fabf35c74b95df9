"""The affinity and endpoint-churn timelines, root-free: recording them from observations,
and drawing them in the HTML report from the record alone (also when it is missing or
malformed)."""

from __future__ import annotations

import copy
import json
import re
from types import SimpleNamespace
from typing import Any

import pytest

from harness.report import render_html
from harness.report.timelines import (
    MAX_POINTS,
    AffinityTimeline,
    PlotDataError,
    affinity_svg,
    churn_svg,
    churn_timeline,
)
from tests.unit.test_reporting import check, parse

AFFINITY = {
    "x": "s", "clients": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "endpoints": ["pod-a", "pod-b", "pod-c", "pod-d"],
    "points": {"10.0.0.1": [[0.0, "pod-a"], [3.1, "pod-b"]],
               "10.0.0.2": [[0.01, "pod-c"], [3.11, "pod-c"]],
               "10.0.0.3": [[0.02, "pod-d"], [3.12, None]]},
    "timeout_s": 2, "markers": [{"t": 2.03, "label": "timeoutSeconds (2 s) after the last connection"}],
    "total": 6,
}

CHURN = {
    "points": [[0.0, "current", "pod-a"], [0.01, "current", "pod-b"], [0.02, "removed", "pod-a"],
               [0.03, "current", "pod-c"], [0.04, "removed-after-ack", "pod-a"],
               [0.05, "refused", None], [0.06, "timeout", None]],
    "kinds": {"current": 3, "removed": 1, "removed-after-ack": 1, "refused": 1, "timeout": 1,
              "error": 0},
    "total": 7, "initial": ["pod-a", "pod-b"],
    "changes": [{"published": 0.015, "acked": 0.035, "endpoints": ["pod-b", "pod-c"],
                 "removed": ["pod-a"], "added": ["pod-c"]}],
}


def report_with(**properties: Any) -> dict[str, Any]:
    return {"environment": {"proxier": "reference"}, "checks": [
        check("conformance/test_affinity.py::test_expiry", "pass", features=["affinity"],
              behavior="service/affinity/clientip/expires-after-timeout",
              properties=properties)]}


def svg_of(html: str) -> str:
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 1, f"{len(svgs)} SVGs"
    return svgs[0]


# --- rendering ---------------------------------------------------------------------------------

def test_affinity_timeline_rows_marks_and_marker() -> None:
    html = render_html(report_with(affinity_timeline=AFFINITY))
    c = parse(html)
    svg = svg_of(html)
    assert svg.count('class="lb client"') == 3           # one row per client address
    assert svg.count('<g class="conn">') == 6            # one mark per connection
    assert svg.count('class="marker"') == 1              # where the timeout elapsed
    assert svg.count('class="noreply"') == 2             # the one unanswered, and its legend
    assert 'role="img"' in svg and "<title>3 client addresses, 6 connections" in svg
    text = "".join(c.text)
    assert "affinity over time" in text and "How to read:" in text
    # the text alternative says what the plot shows
    assert "Per client: 2 reached 1 endpoint, 1 reached 2 endpoints." in text
    # the first changed, the second kept its endpoint, the third had no reply after
    assert "1 of 2 clients changed endpoint" in text
    assert "<script" not in html and "<link" not in html


def test_affinity_timeline_by_connection_number() -> None:
    data = {"x": "connection", "clients": ["a", "b"], "endpoints": ["p"],
            "points": {"a": [[0, "p"], [1, "p"]], "b": [[2, "p"], [3, "q"]]}}
    svg, alt = affinity_svg(data)
    assert str(svg).count('<g class="conn">') == 4
    assert "connection number" in svg and "class=\"marker\"" not in svg
    assert "2 of 2 endpoints answered" in alt  # an endpoint missing from the list is added
    assert "1 reached 2 endpoints" in alt


def test_churn_timeline_lanes_ticks_and_change_lines() -> None:
    html = render_html(report_with(churn_timeline=CHURN))
    parse(html)
    svg = svg_of(html)
    assert svg.count('class="probe"') == 7
    # three endpoint lanes (initial and added), then refused and no reply
    lanes = re.findall(r'class="lb lane"><title>([^<]*)</title>', svg)
    assert lanes == ["pod-a", "pod-b", "pod-c", "refused", "timeout"]
    assert svg.count('class="pub"') == 1 + 1 and svg.count('class="ack"') == 1 + 1  # + legend
    for colour in ("#1a7f37", "#bf8700", "#cf222e", "#8250df", "#57606a"):
        assert f'fill="{colour}" class="probe"' in svg
    assert "7 probes over" in html and "Acknowledged after 20 ms." in html
    assert "probes during endpoint churn" in html


def test_record_without_timelines_has_no_plot() -> None:
    html = render_html(report_with(convergence=[{"change": 1}]))
    parse(html)
    assert "<svg" not in html and "cannot plot" not in html and "How to read" not in html


def malformed() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = [("affinity_timeline", "garbage"), ("affinity_timeline", {}),
                                    ("churn_timeline", []), ("churn_timeline", {"points": []})]
    for key in ("clients", "endpoints", "points"):
        d = copy.deepcopy(AFFINITY)
        del d[key]
        cases.append(("affinity_timeline", d))
    d = copy.deepcopy(AFFINITY)
    d["points"]["10.0.0.1"] = [[None, "pod-a"]]
    cases.append(("affinity_timeline", d))
    d = copy.deepcopy(AFFINITY)
    d["points"]["10.0.0.1"] = ["pod-a"]
    cases.append(("affinity_timeline", d))
    d = copy.deepcopy(AFFINITY)
    d["markers"] = [{"label": "no time"}]
    cases.append(("affinity_timeline", d))
    d = copy.deepcopy(AFFINITY)
    d["x"] = "furlongs"
    cases.append(("affinity_timeline", d))
    cases.append(("affinity_timeline", {**AFFINITY, "points": {}}))
    for key in ("points", "changes"):
        d = copy.deepcopy(CHURN)
        del d[key]
        cases.append(("churn_timeline", d))
    d = copy.deepcopy(CHURN)
    d["points"][0][1] = "teleported"
    cases.append(("churn_timeline", d))
    d = copy.deepcopy(CHURN)
    del d["changes"][0]["acked"]
    cases.append(("churn_timeline", d))
    d = copy.deepcopy(CHURN)
    d["points"][0][0] = float("nan")
    cases.append(("churn_timeline", d))
    return cases


@pytest.mark.parametrize(("key", "data"), malformed(),
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(malformed())])
def test_malformed_timeline_renders_a_note(key: str, data: Any) -> None:
    html = render_html(report_with(**{key: data}))
    parse(html)
    assert "<svg" not in html
    assert f"{key}: cannot plot (" in html


def test_renderers_raise_plot_data_error_only() -> None:
    for draw in (affinity_svg, churn_svg):
        for bad in (None, 3, "x", [], {"points": None}):
            with pytest.raises(PlotDataError):
                draw(bad)


def test_labels_are_escaped() -> None:
    data = copy.deepcopy(AFFINITY)
    data["points"]["10.0.0.1"][0][1] = "<pod>&"
    data["markers"][0]["label"] = "<script>"
    html = render_html(report_with(affinity_timeline=data))
    parse(html)
    assert "<script" not in html and "&lt;pod&gt;&amp;" in html


# --- recording ---------------------------------------------------------------------------------

def obs(src: str, pod: str | None, outcome: str = "reply") -> SimpleNamespace:
    return SimpleNamespace(src=src, pod=pod, outcome=SimpleNamespace(value=outcome))


def test_affinity_timeline_records_and_caps() -> None:
    tl = AffinityTimeline(["p1", "p2"], x="s", timeout_s=2)
    tl.add(obs("10.0.0.1", "p1"), 100.0)
    tl.add([obs("10.0.0.2", "p2"), obs("10.0.0.2", None)], 100.5, via="NodePort")
    tl.mark(103.0, "timeout elapsed")
    d = json.loads(json.dumps(tl.to_dict()))  # JSON-able as it stands
    assert d == {"x": "s", "clients": ["10.0.0.1", "10.0.0.2"], "endpoints": ["p1", "p2"],
                 "points": {"10.0.0.1": [[0.0, "p1"]],
                            "10.0.0.2": [[0.5, "p2", "NodePort"], [0.5, None, "NodePort"]]},
                 "timeout_s": 2, "markers": [{"t": 3.0, "label": "timeout elapsed"}], "total": 3}
    affinity_svg(d)

    big = AffinityTimeline(["p"], x="connection")
    for i in range(MAX_POINTS + 50):
        big.add(obs(f"10.0.{i // 100}.1", "p"))
    d = big.to_dict()
    assert sum(len(v) for v in d["points"].values()) == MAX_POINTS and d["total"] == MAX_POINTS + 50
    assert d["points"]["10.0.0.1"][:3] == [[0.0, "p"], [1.0, "p"], [2.0, "p"]]
    svg, alt = affinity_svg(d)
    assert f"{MAX_POINTS} connections (of {MAX_POINTS + 50})" in alt
    with pytest.raises(ValueError):
        AffinityTimeline([], x="s").add(obs("a", "p"))


def test_churn_timeline_classifies_and_keeps_what_matters() -> None:
    records = [(10.0, 10.001, obs("s", "a")),
               (10.1, 10.101, obs("s", "a")),             # after publishing, before the ack
               (10.2, 10.201, obs("s", "c")),
               (10.3, 10.301, obs("s", "a")),             # after the ack: a violation
               (10.4, 10.401, obs("s", None, "reset")),
               (10.5, 10.501, obs("s", None, "timeout")),
               (10.6, 10.601, obs("s", None, "error"))]
    changes = [(10.05, 10.25, {"b", "c"}, {"a"})]
    d = json.loads(json.dumps(churn_timeline(records, changes, ["b", "a"])))
    assert [p[1] for p in d["points"]] == ["current", "removed", "current", "removed-after-ack",
                                           "refused", "timeout", "error"]
    assert d["points"][1] == [0.1, "removed", "a"]
    assert d["initial"] == ["a", "b"] and d["total"] == 7
    assert d["changes"] == [{"published": 0.05, "acked": 0.25, "endpoints": ["b", "c"],
                             "removed": ["a"], "added": ["c"]}]
    assert d["kinds"]["removed-after-ack"] == 1 and d["kinds"]["current"] == 2
    svg, alt = churn_svg(d)
    assert str(svg).count('class="probe"') == 7 and "error" in alt

    # over the cap: every probe that did not reach a current endpoint is kept
    many = [(float(i), i + 0.5, obs("s", "a" if i % 100 else "x")) for i in range(2000)]
    d = churn_timeline(many, [], ["a"], cap=300)
    assert len(d["points"]) == 300 and d["total"] == 2000
    assert sum(1 for p in d["points"] if p[1] != "current") == 20
    assert [p[0] for p in d["points"]] == sorted(p[0] for p in d["points"])
    assert d["kinds"] == {"current": 1980, "removed": 0, "removed-after-ack": 20, "refused": 0,
                          "timeout": 0, "error": 0}
    svg, alt = churn_svg(d)
    assert "2000 probes (300 drawn: every one that failed" in alt
    assert churn_timeline([], [], [])["points"] == []


def test_churn_removed_by_an_acknowledged_earlier_change_is_a_violation() -> None:
    # change 1 removes a (acked at 1.2); change 2 removes b, published at 2.0, acked at 2.5
    changes = [(1.0, 1.2, {"b", "c"}, {"a"}), (2.0, 2.5, {"c"}, {"b"})]
    records = [(0.0, 0.1, obs("s", "a")), (1.1, 1.15, obs("s", "a")), (2.1, 2.2, obs("s", "b")),
               (2.2, 2.3, obs("s", "a")), (2.6, 2.7, obs("s", "b")), (2.7, 2.8, obs("s", "z"))]
    d = churn_timeline(records, changes, ["a", "b"])
    assert [p[1] for p in d["points"]] == ["current", "removed", "removed", "removed-after-ack",
                                           "removed-after-ack", "removed-after-ack"]
    # thinning treats converging replies like current ones; only violations are all kept
    many = [(i / 1000, 0.0, obs("s", "a" if i < 1100 else "b")) for i in range(3000)]
    d = churn_timeline(many, [(1.0, 2.0, {"b"}, {"a"})], ["a"], cap=100)
    kinds = [p[1] for p in d["points"]]
    assert len(kinds) == 100 and kinds.count("removed-after-ack") == 0
    assert 0 < kinds.count("removed") < 10 and d["kinds"]["removed"] == 100


def test_natural_order_of_pods() -> None:
    d = churn_timeline([(0.0, 0.1, obs("s", "pod9"))], [(0.5, 0.6, {"pod10", "pod9"}, set())],
                       ["pod10", "pod9", "pod11"])
    assert d["initial"] == ["pod9", "pod10", "pod11"]
    assert d["changes"][0]["endpoints"] == ["pod9", "pod10"]
