"""Era profiles (harness.eras) and the bug reproductions table (harness.report.bugs)."""

from __future__ import annotations

import pytest

from harness import eras
from harness.report import render_html
from harness.report.bugs import bug_rows, render_markdown


def test_an_era_profile_answers_per_release_and_today_for_other_proxiers():
    b = "service/labels/headless-on-service"
    assert eras.expectation(b, "v1.33.13") == "not-proxied"
    assert eras.expectation(b, "v1.35.4") == "not-proxied"
    assert eras.expectation(b, "v1.36.0") == "proxied"
    assert eras.expectation(b, "v1.37.2") == "proxied"
    assert eras.expectation(b, None) == "proxied"
    assert "kube-proxy v1.33.13" in eras.describe(b, "v1.33.13")
    assert "134623" in eras.describe(b, None)
    with pytest.raises(KeyError, match="no era profile"):
        eras.expectation("service/nope", None)


def test_healthz_time_notation_changed_in_v1_33():
    b = "service/proxier-health/healthy-after-sync"
    assert eras.expectation(b, "v1.31.14") == "go-time-string"
    assert eras.expectation(b, "v1.32.13") == "go-time-string"
    assert eras.expectation(b, "v1.33.0") == "rfc3339"
    assert eras.expectation(b, None) == "rfc3339"
    assert "129271" in eras.describe(b, "v1.31.14")


def test_every_profile_covers_every_release_once_and_was_verified():
    for p in eras.PROFILES.values():
        assert p.verified_with, p.behaviour
        for minor in range(16, 40):
            assert sum(e.covers(f"v1.{minor}.0") for e in p.eras) == 1, (p.behaviour, minor)


def _report(release, grades):
    hist = {"component": "kube-proxy", "fixed_in": "v1.26.0", "fixed_by": [], "cherry_picks": [],
            "introduced_in": "unknown", "last_buggy": "v1.25.16"}
    checks = [{"nodeid": f"scenarios/bugs/{n}.yaml::{n}", "grade": g, "behavior": f"scenario/bugs/{n}",
               "ref": f"https://github.com/kubernetes/kubernetes/issues/{n[4:]}", "features": ["nodeport"],
               "properties": {"history": hist, "bug_references": [
                   f"https://github.com/kubernetes/kubernetes/issues/{n[4:]}"]}}
              for n, g in grades.items()]
    checks.append({"nodeid": "conformance/test_x.py::test_y", "grade": "pass", "properties": {}})
    return {"environment": {"proxier": "kube-proxy", "proxier_release": release}, "checks": checks,
            "complete": True}


def test_the_bug_table_says_which_release_predates_the_fix():
    rep = _report("v1.25.16", {"k8s-90259": "fail", "k8s-97238": "pass"})
    rows = bug_rows(rep)
    assert [(r["bug"], r["outcome"], r["expected"]) for r in rows] == [
        ("k8s-90259", "reproduces the bug", "before the fix"),
        ("k8s-97238", "does not reproduce it", "before the fix")]
    md = render_markdown(rep)
    assert "| k8s-90259 | https://github.com/kubernetes/kubernetes/issues/90259 | reproduces the bug |" in md
    assert "1 of 2 bug reproductions fail" in md
    assert bug_rows(_report("v1.26.15", {"k8s-90259": "pass"}))[0]["expected"] == "has the fix"
    html = render_html(rep)
    assert "Bug reproductions" in html and ">kubernetes#90259</a>" in html


def test_a_run_without_bug_scenarios_has_no_bug_section():
    assert "Bug reproductions" not in render_html({"environment": {}, "checks": [], "complete": True})


def test_the_bug_matrix_has_one_column_per_release():
    from harness.report.bugs import render_matrix_markdown

    md = render_matrix_markdown([_report("v1.25.16", {"k8s-90259": "fail"}),
                                 _report("v1.26.15", {"k8s-90259": "pass"})])
    assert "| bug | fixed in | kube-proxy v1.25.16 | kube-proxy v1.26.15 |" in md
    assert "| k8s-90259 | v1.26.0 | bug (before the fix) | ok |" in md


def test_a_kube_proxy_release_before_the_fix_is_expected_to_reproduce_the_bug():
    from harness.proxiers import ProxierSpec
    from harness.scenario import load_scenario
    from harness.scenario_plugin import release_has_bug

    sc = load_scenario("scenarios/bugs/k8s-141371.yaml")  # introduced v1.32.0, fixed v1.38.0-alpha.1

    def kp(release: str | None, netfilter: str = "iptables") -> ProxierSpec:
        return ProxierSpec("kube-proxy", "kube-proxy", release=release, netfilter=netfilter)

    why = release_has_bug(sc, kp("v1.37.2"))
    assert why and "v1.37.2 predates the fix" in why and "pull/141371" in why
    assert release_has_bug(sc, kp("v1.37.2", "nftables"))
    assert release_has_bug(sc, kp("v1.38.0")) is None     # has the fix
    assert release_has_bug(sc, kp("v1.31.14")) is None    # older than the bug
    assert release_has_bug(sc, kp(None)) is None          # not a kube-proxy build
