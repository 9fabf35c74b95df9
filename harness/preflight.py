"""pytest plugin: a run of the suite that lacks a prerequisite fails at session start with
the doctor's sentence, instead of minutes later in a fixture (registered by
``harness.plugin``).

The essentials (``harness.doctor.essentials``: root, ip and network namespaces, the
iptables flavour or nft, conntrack) are checked on the controller before any worker
starts or any report is written. ``--preflight auto`` (the default) checks when the run
collects the suite (a path in or above ``conformance/`` or ``scenarios/``, or a scenario
file), so the project's root-free unit tests are not held to it; ``on`` always checks,
``off`` never does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.doctor import Needs, essentials, failure_message


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("svc-conformance")
    g.addoption("--preflight", choices=("auto", "on", "off"), default="auto",
                help="check the host's prerequisites at session start (root, ip, network "
                     "namespaces, iptables/nft, conntrack) and fail at once with what to "
                     "install; auto (default): when the run collects conformance/ or scenarios/")


def _within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents or path in other.parents


def runs_the_suite(args: list[str], invocation_dir: Path) -> bool:
    """Do these pytest arguments collect checks or scenarios (so the run needs the host)?"""
    from harness.suite import locate

    try:
        suite = locate()
        dirs = [suite.conformance.resolve(), suite.scenarios.resolve()]
    except FileNotFoundError:
        dirs = []
    for arg in args:
        if arg.startswith("-"):
            continue
        path = (invocation_dir / arg.split("::", 1)[0]).resolve()
        if path.suffix in (".yaml", ".yml"):
            return True
        if any(_within(path, d) for d in dirs):
            return True
        if path.is_dir() and path.name in ("conformance", "scenarios"):
            return True
    return False


def needs_of(config: pytest.Config) -> Needs:
    """The run's prerequisites, from its options."""
    opt = config.getoption
    return Needs.from_options(
        proxier=opt("proxier", None), proxier_cmd=opt("proxier_cmd", None),
        iptables=opt("iptables", None), ip_family=opt("ip_family", None),
        pod_network=opt("pod_network", None), control_plane=opt("control_plane", None),
        kube_proxy_version=opt("kube_proxy_version", None),
        proxier_capabilities=opt("proxier_capabilities", None))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # the controller checked before starting this worker
    mode = config.getoption("preflight", "auto")
    if mode == "off" or (mode == "auto" and not runs_the_suite(
            list(config.args), Path(config.invocation_params.dir))):
        return
    message = failure_message(essentials(needs_of(config)))
    if message:
        raise pytest.UsageError(message)
