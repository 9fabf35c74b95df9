"""``svc-conformance``: the suite's command line, a thin front end over pytest.

    svc-conformance doctor                      what this host has and lacks for a run
    svc-conformance run [--proxier-cmd CMD] ... the checks and scenarios -> report dir
    svc-conformance scenario FILE|NAME...       replay bug reproductions (scenario files)
    svc-conformance list [--json|--ids]         behaviours: id, MUST, capability, ref, fault
    svc-conformance report REPORT.json          render the HTML report (and a summary)
    svc-conformance matrix A.json B.json ...    compatibility matrix of several runs
    svc-conformance build-kube [VERSION...]     build real kube-proxy into the cache (Go)

``run`` and ``scenario`` build one pytest command and replace this process with it (the
command is printed first), so pytest's exit status, signals and output are the run's; any
argument after ``--`` goes to pytest unchanged. The suite is found by ``harness.suite``: in
the installed wheel, or in the checkout this harness belongs to; pytest's rootdir is the
suite root either way, so node ids and behaviour ids are the repository's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness import suite as suite_mod

#: pytest's configuration for a run of the installed suite (a checkout uses pyproject.toml)
SUITE_INI = Path(__file__).resolve().parent / "suite.ini"


def _suite() -> suite_mod.Suite:
    try:
        return suite_mod.locate()
    except FileNotFoundError as exc:
        raise SystemExit(f"svc-conformance: {exc}") from None


# --- the pytest command -------------------------------------------------------------------------

def _run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``scenario``; each maps to one pytest option."""
    g = p.add_argument_group("proxier under test")
    g.add_argument("--proxier", metavar="NAME",
                   help="reference (default), reference-nft, kube-proxy, kube-proxy-nft, or an "
                        "adapter from the svc_conformance.proxiers entry-point group")
    g.add_argument("--proxier-cmd", metavar="CMD",
                   help="the command run on every node; placeholders {node} {node_ip} "
                        "{state_dir} {kubeconfig} {cluster_cidr} {service_cidr} {python} {iptables}")
    g.add_argument("--proxier-capabilities", metavar="LIST",
                   help="comma-separated capabilities the proxier declares")
    g.add_argument("--proxier-version", metavar="TEXT", help="the proxier's version, for the report")
    g.add_argument("--kube-proxy-version", metavar="v1.MINOR.PATCH",
                   help="release of real kube-proxy (--proxier kube-proxy*)")
    g.add_argument("--known-gaps", metavar="FILE|NAME",
                   help="known gaps (strict xfails): a YAML file, or the name of one shipped "
                        "with the suite (reference, kube-proxy-v1.37.2, ...)")
    g = p.add_argument_group("cluster")
    g.add_argument("--control-plane", choices=("statedir", "api"),
                   help="how state reaches the proxier (default statedir)")
    g.add_argument("--ip-family", choices=("ipv4", "ipv6"), help="the cluster's family (default ipv4)")
    g.add_argument("--iptables", choices=("nft", "legacy"), help="the iptables flavour (default nft)")
    g.add_argument("--pod-network", choices=("routed", "bridge"), help="default routed")
    g.add_argument("--seed", type=int, help="the run's seed (default: random, printed)")
    g = p.add_argument_group("run")
    g.add_argument("-n", "--numprocesses", default="2", metavar="N",
                   help="parallel workers (pytest-xdist; default 2; 0 runs in one process)")
    g.add_argument("--report-dir", default="reports", metavar="DIR",
                   help="report.json, checks.jsonl, report.html and junit.xml go here "
                        "(default ./reports)")
    g.add_argument("--junitxml", metavar="FILE", help="JUnit XML (default REPORT_DIR/junit.xml)")
    g.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k: select by name")
    g.add_argument("-m", dest="markexpr", metavar="EXPR", help="pytest -m: select by feature marker")
    g.add_argument("--behavior", action="append", default=[], metavar="ID",
                   help="only the checks of this behaviour id (from list; repeatable; a "
                        "trailing * matches a prefix)")
    g.add_argument("--progress", choices=("auto", "tty", "plain", "pytest"), default="auto",
                   help="a status line on a terminal (tty), one line per check (plain; the "
                        "default when CI is set or output is not a terminal), or pytest's own")
    g.add_argument("--dry-run", action="store_true", help="print the pytest command and stop")
    p.set_defaults(pytest_args=[])  # anything after "--" (main() splits it off)
    p.epilog = "Arguments after -- go to pytest unchanged (e.g. -- -x --lf)."


_PASS_THROUGH = ("proxier", "proxier_cmd", "proxier_capabilities", "proxier_version",
                 "kube_proxy_version", "control_plane", "ip_family", "iptables", "pod_network",
                 "seed")


def progress_style(choice: str, environ: dict[str, str] | None = None,
                   isatty: bool | None = None) -> str | None:
    """``--progress auto``: plain lines in CI (the CI variable) or when output is not a
    terminal, the status line otherwise. None: pytest's own display."""
    if choice == "pytest":
        return None
    if choice != "auto":
        return choice
    env = os.environ if environ is None else environ
    tty = sys.stdout.isatty() if isatty is None else isatty
    return "plain" if env.get("CI") or not tty else "tty"


def known_gaps_path(value: str, suite: suite_mod.Suite) -> str:
    """A file as given, or the name of a known-gaps file shipped with the suite."""
    if Path(value).is_file():
        return value
    shipped = suite.known_gaps_file(value)
    if shipped.is_file():
        return str(shipped)
    names = sorted(p.stem for p in suite.known_gaps.glob("*.yaml"))
    raise SystemExit(f"svc-conformance: --known-gaps {value}: no such file, and no shipped "
                     f"known-gaps file of that name (shipped: {', '.join(names)})")


def pytest_command(args: argparse.Namespace, paths: list[str], suite: suite_mod.Suite,
                   rootdir: Path | None = None) -> list[str]:
    """The pytest command line for ``run`` / ``scenario``."""
    from harness.kubebins import cache_root

    report_dir = Path(args.report_dir)
    cmd = [sys.executable, "-m", "pytest", *paths,
           # the plugin by name: loaded even where pytest's plugin autoloading is disabled
           "-p", "harness.plugin", "-p", "harness.progress",
           # xdist by its entry-point name, for the same reason (and not twice when autoloaded)
           *(["-p", "xdist"] if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") else []),
           "--rootdir", str(rootdir or suite.root),
           "-c", str(suite.root / "pyproject.toml" if suite.source == "checkout" else SUITE_INI),
           "--preflight=on",
           "-n", str(args.numprocesses),
           f"--report-dir={report_dir}",
           f"--junitxml={args.junitxml or report_dir / 'junit.xml'}"]
    if suite.source == "wheel":
        # not site-packages: pytest's cache (--lf, --ff) goes to the suite's cache directory
        cmd += ["-o", f"cache_dir={cache_root() / 'pytest-cache'}"]
    style = progress_style(args.progress)
    if any(a.startswith("-v") or a == "--verbose" for a in args.pytest_args):
        style = None  # pytest's verbose lines, as asked
    if style is not None:
        # the progress plugin lists what did not pass itself (-rfE of pytest names it from
        # the current directory); skips and xfails keep pytest's summary with reasons
        cmd += ["-q", "-o", "console_output_style=classic", f"--progress={style}", "-rsx"]
    for name in _PASS_THROUGH:
        value = getattr(args, name, None)
        if value is not None:
            cmd.append(f"--{name.replace('_', '-')}={value}")
    if args.known_gaps:
        cmd.append(f"--known-gaps={known_gaps_path(args.known_gaps, suite)}")
    cmd += [f"--behavior={b}" for b in args.behavior]
    if args.keyword:
        cmd += ["-k", args.keyword]
    if args.markexpr:
        cmd += ["-m", args.markexpr]
    return cmd + list(args.pytest_args)


def _exec(cmd: list[str], dry_run: bool) -> int:
    import shlex

    print("svc-conformance: " + shlex.join(cmd), file=sys.stderr, flush=True)
    if dry_run:
        return 0
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached


def cmd_run(args: argparse.Namespace) -> int:
    suite = _suite()
    paths = {"all": [suite.conformance, suite.scenarios], "conformance": [suite.conformance],
             "scenarios": [suite.scenarios]}[args.suite]
    return _exec(pytest_command(args, [str(p) for p in paths], suite), args.dry_run)


def scenario_path(name: str, suite: suite_mod.Suite) -> Path:
    """A scenario file as given, or a shipped one by name (``k8s-59368``, ``bugs/k8s-59368``)."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    stem = name.removeprefix("scenario/").removesuffix(".yaml")
    for candidate in (suite.scenarios / f"{stem}.yaml", *suite.scenarios.rglob(f"{Path(stem).name}.yaml")):
        if candidate.is_file() and "dumps" not in candidate.relative_to(suite.scenarios).parts:
            return candidate
    raise SystemExit(f"svc-conformance: no scenario file {name!r} (neither a file nor a "
                     f"scenario shipped under {suite.scenarios})")


def cmd_scenario(args: argparse.Namespace) -> int:
    suite = _suite()
    files = [scenario_path(f, suite) for f in args.files]
    inside = all(suite.root in f.parents for f in files)
    # outside the suite, node ids are relative to the files' common directory
    rootdir = suite.root if inside else Path(os.path.commonpath([f.parent for f in files]))
    return _exec(pytest_command(args, [str(f) for f in files], suite, rootdir), args.dry_run)


# --- list ------------------------------------------------------------------------------------------

class _Collector:
    """Collects the items pytest would run (after the harness's own collection hooks)."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def pytest_collection_finish(self, session: Any) -> None:
        self.items = list(session.items)


def collect(suite: suite_mod.Suite, paths: list[Path], extra: list[str] | None = None) -> list[Any]:
    """pytest's collection of ``paths`` in this process; a collection error is fatal."""
    import pytest

    collector = _Collector()
    argv = [*map(str, paths), "--collect-only", "-q", "-p", "harness.plugin",
            "-p", "no:cacheprovider", "--preflight=off", "--rootdir", str(suite.root),
            "-c", str(suite.root / "pyproject.toml" if suite.source == "checkout" else SUITE_INI),
            *(extra or [])]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pytest.main(argv, plugins=[collector])
    if code not in (0, 5):  # 5: nothing collected (a -k that matches nothing)
        sys.stderr.write(out.getvalue())
        raise SystemExit(f"svc-conformance: collecting the suite failed (pytest exit {int(code)})")
    return collector.items


def load_faults(suite: suite_mod.Suite) -> tuple[dict[str, list[str]] | None, str]:
    """behaviour id -> the faults in tests/faulty that must fail it, and where that came
    from. tests/faulty is the project's own self-test and not part of the wheel."""
    faulty = suite.root / "tests" / "faulty" / "faults.py"
    if not faulty.is_file():
        return None, ("tests/faulty (the faulty proxiers proving each check can fail) is not "
                      "installed with the wheel; scenarios name theirs (caught_by_fault), the "
                      "checks' are in the source repository")
    if str(suite.root) not in sys.path:
        sys.path.insert(0, str(suite.root))
    # Read as data from the checkout (by name: the harness does not depend on the tests, and
    # a wheel has none); the module only lists the faults, applying one is its __main__'s job.
    import importlib

    FAULTS = importlib.import_module("tests.faulty.faults").FAULTS  # noqa: N806

    mapping: dict[str, list[str]] = {}
    for fault in FAULTS.values():
        for bid in fault.caught_by:
            mapping.setdefault(bid, []).append(fault.name)
    return mapping, f"faults read from {faulty.parent}"


def behaviours(items: list[Any], faults: dict[str, list[str]] | None) -> list[dict[str, Any]]:
    """One entry per behaviour id, from the collected items' markers."""
    from harness.plugin import FEATURE_MARKERS

    by_id: dict[str, dict[str, Any]] = {}
    for item in items:
        mark = item.get_closest_marker("behavior")
        if mark is None or not mark.args:
            continue
        bid = mark.args[0]
        entry = by_id.setdefault(bid, {
            "id": bid, "must": mark.kwargs.get("must"), "ref": mark.kwargs.get("ref"),
            "requires": [], "features": [], "faults": list((faults or {}).get(bid, [])),
            "nodeids": []})
        entry["nodeids"].append(item.nodeid)
        for m in item.iter_markers("requires"):
            entry["requires"].extend(c for c in m.args if c not in entry["requires"])
        for m in item.iter_markers():
            if m.name in FEATURE_MARKERS and m.name not in entry["features"]:
                entry["features"].append(m.name)
        scenario = getattr(item, "scenario", None)
        fault = getattr(scenario, "caught_by_fault", None)
        if fault and fault not in entry["faults"]:
            entry["faults"].append(fault)
    return sorted(by_id.values(), key=lambda e: e["id"])


def cmd_list(args: argparse.Namespace) -> int:
    suite = _suite()
    paths = {"all": [suite.conformance, suite.scenarios], "conformance": [suite.conformance],
             "scenarios": [suite.scenarios]}[args.suite]
    extra = [*(["-k", args.keyword] if args.keyword else []),
             *(["-m", args.markexpr] if args.markexpr else [])]
    faults, faults_note = load_faults(suite)
    entries = behaviours(collect(suite, paths, extra), faults)
    info = {k: v for k, v in suite_mod.describe().items() if k != "behaviour_ids"}
    if args.ids:
        print("\n".join(e["id"] for e in entries))
    elif args.json:
        print(json.dumps({"suite": info, "faults": faults_note, "behaviours": entries}, indent=1))
    else:
        n_sc = sum(e["id"].startswith("scenario/") for e in entries)
        print(f"svc-conformance {info['version']} ({info.get('source')}: {info.get('root')}): "
              f"{len(entries)} behaviours ({len(entries) - n_sc} checks, {n_sc} scenarios)")
        print(f"faults: {faults_note}")
        for e in entries:
            cases = len(e["nodeids"])
            print()
            print(e["id"])
            print(f"    MUST      {e['must'] or '-'}")
            print(f"    requires  {', '.join(e['requires']) or '-'}")
            print(f"    ref       {e['ref'] or '-'}")
            print(f"    fault     {', '.join(e['faults']) or ('-' if faults is not None else '(not installed)')}")
            first = e["nodeids"][0].split("[", 1)[0]
            print(f"    check     {first}" + (f" ({cases} cases)" if cases > 1 else ""))
    return 0


# --- report, matrix, doctor, build-kube ----------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import ReportError, load_report
    from harness.report.__main__ import main as report_main

    try:
        report = load_report(args.report)
    except ReportError as exc:
        print(f"svc-conformance: {exc}", file=sys.stderr)
        return 2
    env = report.get("environment") or {}
    checks = report.get("checks") or []
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.get("grade", "?")] = counts.get(c.get("grade", "?"), 0) + 1
    suite = env.get("suite") or {}
    print(f"{args.report}: proxier {env.get('proxier')} on kernel {env.get('kernel')}, suite "
          f"{suite.get('version', '?')} ({suite.get('behaviours', '?')} behaviours); "
          + ", ".join(f"{n} {g}" for g, n in sorted(counts.items())))
    for c in checks:
        if c.get("grade") == "fail":
            print(f"  FAIL {c.get('behavior') or '-'}  {c.get('nodeid')}: {c.get('summary') or ''}")
    argv = ["html", args.report] + (["-o", args.output] if args.output else [])
    return report_main(argv)


def cmd_matrix(args: argparse.Namespace) -> int:
    from harness.report.__main__ import main as report_main

    argv = ["matrix", *args.reports, "-o", args.output]
    if args.markdown:
        argv += ["--markdown", args.markdown]
    return report_main(argv)


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import Needs, check, render

    needs = Needs.from_options(
        proxier=args.proxier, proxier_cmd=args.proxier_cmd, iptables=args.iptables,
        ip_family=args.ip_family, pod_network=args.pod_network, control_plane=args.control_plane,
        kube_proxy_version=args.kube_proxy_version, proxier_capabilities=args.proxier_capabilities)
    findings = check(needs)
    if args.json:
        print(json.dumps({"needs": needs.describe(),
                          "findings": [f.to_dict() for f in findings]}, indent=1))
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(render(needs, findings, color=color))
    return 1 if any(f.blocking for f in findings) else 0


def cmd_build_kube(args: argparse.Namespace) -> int:
    import shutil

    from harness import kubebins
    from harness.doctor import go_binary

    go = go_binary()
    if go and not shutil.which("go"):
        os.environ["PATH"] = f"{Path(go).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return kubebins.main(["build", *args.versions, "--component", args.component])


# --- the parser -------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="svc-conformance",
        description="Conformance suite for Kubernetes Service proxies, proven with real packets "
                    "in network namespaces.",
        epilog="Start with: svc-conformance doctor; then: svc-conformance run --proxier-cmd ...")
    ap.add_argument("--version", action="store_true", help="the suite's version and where it is")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    r = sub.add_parser("run", help="run the conformance checks and scenarios against a proxier",
                       description="Run the suite (pytest) against a proxier; the report goes "
                                   "to --report-dir. Exit status: pytest's.")
    r.add_argument("--suite", choices=("all", "conformance", "scenarios"), default="all",
                   help="the checks, the bug scenarios, or both (default)")
    _run_options(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("scenario", help="replay scenario files (bug reproductions)",
                       description="Replay scenario files: paths, or names of shipped ones "
                                   "(k8s-59368).")
    s.add_argument("files", nargs="+", metavar="FILE|NAME")
    _run_options(s)
    s.set_defaults(func=cmd_scenario)

    ls = sub.add_parser("list", help="the behaviours the suite checks",
                        description="Every behaviour: id, MUST, the capability it requires, "
                                    "its reference and the fault that proves it can fail.")
    ls.add_argument("--suite", choices=("all", "conformance", "scenarios"), default="all")
    ls.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k")
    ls.add_argument("-m", dest="markexpr", metavar="EXPR", help="pytest -m")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON")
    fmt.add_argument("--ids", action="store_true", help="only the ids, one per line")
    ls.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="render report.json to HTML (and print a summary)")
    rep.add_argument("report", help="report.json")
    rep.add_argument("-o", "--output", help="HTML file (default: report.html beside the JSON)")
    rep.set_defaults(func=cmd_report)

    m = sub.add_parser("matrix", help="compatibility matrix of several runs' report.json")
    m.add_argument("reports", nargs="+")
    m.add_argument("-o", "--output", default="matrix.html")
    m.add_argument("--markdown", metavar="FILE", help="also a Markdown table")
    m.set_defaults(func=cmd_matrix)

    d = sub.add_parser("doctor", help="check this host's prerequisites (changes nothing)",
                       description="What a run with these options needs on this host: ok or "
                                   "missing, with what to install. Exit 1 when a prerequisite "
                                   "of that run is missing.")
    for opt in ("--proxier", "--proxier-cmd", "--proxier-capabilities", "--kube-proxy-version"):
        d.add_argument(opt)
    d.add_argument("--control-plane", choices=("statedir", "api"))
    d.add_argument("--ip-family", choices=("ipv4", "ipv6"))
    d.add_argument("--iptables", choices=("nft", "legacy"))
    d.add_argument("--pod-network", choices=("routed", "bridge"))
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)

    b = sub.add_parser("build-kube", help="build real kube-proxy (and more) into the cache (Go)")
    b.add_argument("versions", nargs="*", help="releases (default: the pinned ones)")
    b.add_argument("--component", default="kube-proxy",
                   help="comma list of kube-proxy, kube-apiserver, etcd (default kube-proxy)")
    b.set_defaults(func=cmd_build_kube)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after "--" is pytest's, untouched by argparse
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    if args.version:
        info = suite_mod.describe()
        print(f"svc-conformance {info['version']} ({info.get('source')}: {info.get('root')}; "
              f"{info.get('behaviours')} behaviours)")
        return 0
    if not getattr(args, "func", None):
        parser().print_help()
        return 2
    if hasattr(args, "pytest_args"):
        args.pytest_args = [*args.pytest_args, *extra]
    elif extra:
        parser().error(f"{args.cmd} takes no pytest arguments")
    try:
        return args.func(args)
    except BrokenPipeError:  # svc-conformance list | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
