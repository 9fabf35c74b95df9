"""``python -m harness.report``: render the HTML report or the compatibility matrix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report import (
    ReportError,
    atomic_write,
    bench_link_for,
    build_matrix,
    render_html_file,
    render_matrix_html,
    render_matrix_markdown,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.report",
                                 description="Render svc-conformance reports from report.json")
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("html", help="one run's report.json -> a self-contained HTML file")
    h.add_argument("report", help="report.json (a checks.jsonl beside an unfinished one is used)")
    h.add_argument("-o", "--output", default=None,
                   help="output file (default: report.html beside the JSON)")
    b = sub.add_parser("bugs", help="one run's report.json -> the bug reproductions table (Markdown)")
    b.add_argument("report", nargs="+", help="report.json of a run over scenarios/bugs/; several: "
                   "a bug x run matrix")
    m = sub.add_parser("matrix", help="several runs' report.json -> behaviours x environments")
    m.add_argument("reports", nargs="+", help="report.json files, one per run")
    m.add_argument("-o", "--output", default="matrix.html", help="HTML output (default matrix.html)")
    m.add_argument("--markdown", default=None, metavar="FILE", help="also write a Markdown table")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "bugs":
            from harness.report import load_report
            from harness.report.bugs import render_markdown
            from harness.report.bugs import render_matrix_markdown as bug_matrix

            reports = [load_report(r) for r in args.report]
            print(render_markdown(reports[0]) if len(reports) == 1
                  else bug_matrix(reports), end="")
        elif args.cmd == "html":
            out = args.output or str(Path(args.report).with_name("report.html"))
            print(render_html_file(args.report, out))
        else:
            matrix = build_matrix(args.reports)
            atomic_write(Path(args.output), render_matrix_html(matrix, bench_link_for(args.output)))
            print(args.output)
            if args.markdown:
                atomic_write(Path(args.markdown), render_matrix_markdown(matrix))
                print(args.markdown)
    except ReportError as exc:
        print(f"harness.report: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
