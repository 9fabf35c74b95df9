"""The benchmarks' HTML page renders every benchmark's JSON, and skips anything else."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report import bench, bench_link_for

CONV = {"benchmark": "convergence", "label": "reference (iptables-legacy)", "environment": {},
        "sizes": {"100": {"changes": 4, "converged": 4,
                          "all": {"n": 4, "median": 0.15, "p95": 0.2, "max": 0.21},
                          "by_kind": {"create": {"median": 0.1}},
                          "records": [{"kind": k, "seconds": s} for k, s in
                                      zip(bench.KIND_ORDER, (0.1, 0.15, 0.2, 0.21), strict=True)]}}}
DATA = {"benchmark": "dataplane_cost", "proxiers": ["a", "b"], "rounds": 3, "conns": 50,
        "sizes": {str(n): {"loadavg": [[1, 1, 1], [1, 1, 1]], "proxiers": {
            lab: {"at": {p: {"latency_us": 40.0 + n / 100, "latency_ci95_us": [35.0, 45.0 + n / 100],
                             "rate_per_s": 2000.0, "rate_ci95": [1500.0, 2500.0]}
                         for p in ("start", "middle", "end")},
                  "latency_end_over_start": {"median": 1.1, "ci95": [1.0, 1.2]}}
            for lab in ("a", "b")}} for n in (100, 1000)}}
RVK = {"benchmark": "ref_vs_kube_proxy", "size": 200, "per_service": 10, "rounds": 1,
       "table": [{"mode": "nftables", "reference": {"full_s": 1.0}, "kube-proxy": {"full_s": 0.5},
                  "ratio": {"full_s": {"median": 2.0, "spread": [2.0, 2.0]}, "update_s": None}}]}
COST = {"benchmark": "proxier_cost", "runs": [{"label": "x", "size": 200, "full": {"seconds": 1.0},
                                               "update": {"seconds": {"median": 0.1}}}]}


def test_renders_every_benchmark_and_skips_others(tmp_path: Path) -> None:
    paths = []
    for i, doc in enumerate((CONV, DATA, RVK, COST, {"something": "else"})):
        p = tmp_path / f"r{i}.json"
        p.write_text("progress line\n" + json.dumps(doc) + "\n")
        paths.append(str(p))
    out = tmp_path / "bench.html"
    assert bench.main([*paths, "-o", str(out)]) == 0
    html = out.read_text()
    assert html.count("<svg") >= 5
    assert "<script" not in html
    for heading in ("Convergence", "Data-plane cost", "Cost of the proxier", "against kube-proxy"):
        assert heading in html
    assert "skipped" in html and "r4.json" in html
    assert bench_link_for(tmp_path / "matrix.html") == "bench.html"
    assert bench_link_for(tmp_path / "sub" / "matrix.html") is None
