"""``python -m harness.report``: render the HTML report or the compatibility matrix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report import (
    ReportError,
    _atomic_write,
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
    m = sub.add_parser("matrix", help="several runs' report.json -> behaviours x environments")
    m.add_argument("reports", nargs="+", help="report.json files, one per run")
    m.add_argument("-o", "--output", default="matrix.html", help="HTML output (default matrix.html)")
    m.add_argument("--markdown", default=None, metavar="FILE", help="also write a Markdown table")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "html":
            out = args.output or str(Path(args.report).with_name("report.html"))
            print(render_html_file(args.report, out))
        else:
            matrix = build_matrix(args.reports)
            _atomic_write(Path(args.output), render_matrix_html(matrix))
            print(args.output)
            if args.markdown:
                _atomic_write(Path(args.markdown), render_matrix_markdown(matrix))
                print(args.markdown)
    except ReportError as exc:
        print(f"harness.report: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
