"""The harness as a pytest plugin: options, markers, fixtures and the cluster life cycle.

Loaded by the project's conftest.py. Fixtures:

``cluster_options`` (session)
    The run's ``harness.options.ClusterOptions``: every option a cluster depends on,
    read once. Every cluster below (and every scenario) is started from it by
    ``harness.lifecycle.running_cluster``.
``proxier_spec`` (session)
    The proxier under test (``--proxier``/``--proxier-cmd``), with its declared capabilities.
``timing`` (session)
    The one home of timeouts (``harness.timing.Timing``), scaled by ``--timeout-scale``.
``run_seed`` (session) / ``rng`` (function)
    The run's seed (``--seed``, printed in the header) and a per-test ``random.Random``
    derived from it and the test id.
``cluster_env`` (session, one per xdist worker)
    Network namespaces (``--nodes`` nodes, ``--clients`` clients, ``--pod-network``), the echo
    server, and the proxier running on every node. Depends on cluster_options.
``cluster`` (function)
    A ``ClusterScope`` over ``cluster_env``: create pods and Services; both are removed when
    the test ends. Example::

        def test_x(cluster):
            pods = cluster.add_pods(2)
            svc = cluster.create_service(pods)

``scoped_cluster(spec, name)`` (a factory, not a fixture)
    For a module that needs a topology of its own (IPv6, dual-stack): the fixtures
    ``<name>_env`` (module) and ``<name>`` (function), the pair ``cluster_env`` / ``cluster``
    over ``spec``. Example: ``cluster6_env, cluster6 = scoped_cluster(spec, "cluster6")``.

Also registered from here: ``harness.evidence`` (what a failure carries),
``harness.reporting`` (JSON records) and ``harness.scenario_plugin`` (scenario files).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import ClusterEnv, ClusterScope
from harness.features import FEATURE_MARKERS
from harness.lifecycle import ClusterStartFailed, require_root, running_cluster
from harness.options import ClusterOptions
from harness.proxiers import CAPABILITIES, ProxierConfigError, ProxierSpec
from harness.timing import Timing
from harness.topology.spec import TopologySpec

# The report plugin has options of its own (--known-gaps): it must be registered before
# the command line is parsed, so here rather than in pytest_configure.
pytest_plugins = ["harness.evidence", "harness.reporting", "harness.scenario_plugin",
                  "harness.preflight"]


_EVIDENCE_KEY = pytest.StashKey[list[tuple[str, str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("svc-conformance", "Kubernetes Service proxy conformance")
    g.addoption("--proxier", default=None,
                help="proxier under test: 'reference' (default) or an adapter name from the "
                     "svc_conformance.proxiers entry-point group")
    g.addoption("--proxier-cmd", default=None,
                help="command that runs a proxier on one node; placeholders: {node} {node_ip} "
                     "{state_dir} {kubeconfig} {cluster_cidr} {service_cidr} {python} {iptables}")
    g.addoption("--proxier-capabilities", default=None,
                help="comma-separated capabilities the proxier declares (overrides the "
                     f"adapter's); known: {', '.join(sorted(CAPABILITIES))}")
    g.addoption("--proxier-version", default=None,
                help="the proxier's version as the report should state it (e.g. the output "
                     "of 'kube-proxy --version'); the reference proxier knows its own")
    g.addoption("--kube-proxy-version", default=None, metavar="v1.MINOR.PATCH",
                help="release of real kube-proxy for --proxier kube-proxy / kube-proxy-nft "
                     "(built with: python -m harness.kubebins build VERSION; default: the "
                     "pinned newest)")
    g.addoption("--control-plane", choices=("statedir", "api", "kube-apiserver"), default="statedir",
                help="how state reaches the proxier: {state_dir}/state.yaml (default), the "
                     "harness's Kubernetes API server on the lan ({kubeconfig}; list+watch), or "
                     "real etcd + kube-apiserver in the lan namespace (Go-built binaries; TLS)")
    g.addoption("--iptables", choices=("nft", "legacy"), default="nft",
                help="iptables flavour for the reference proxier (default: nft)")
    g.addoption("--nodes", type=int, default=2, help="nodes in the test cluster (default 2)")
    g.addoption("--clients", type=int, default=1, help="client hosts outside the cluster (default 1)")
    g.addoption("--pod-network", choices=("routed", "bridge"), default="routed",
                help="how pods attach to their node: one routed veth each, or a node bridge")
    g.addoption("--ip-family", choices=("ipv4", "ipv6"), default="ipv4",
                help="IP family of the test cluster: every check runs over it (ipv6 needs a "
                     "proxier declaring 'ipv6'; IPv6 hosts outside the cluster use 2001:db8::/32)")
    g.addoption("--seed", type=int, default=None, help="run seed (default: random, printed)")
    g.addoption("--keep-on-failure", action="store_true",
                help="leave the namespaces up after a failed test and print how to enter them")
    g.addoption("--timeout-scale", type=float, default=None,
                help="multiply every harness timeout (slow machines)")
    g.addoption("--behavior", action="append", default=[], metavar="ID",
                help="run only the checks with this behaviour id (repeatable; a trailing * matches a prefix)")
    g.addoption("--report-dir", default=None,
                help="write report.json (one record per check, with the environment) here")


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in FEATURE_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    config.addinivalue_line(
        "markers",
        "behavior(id, must, ref=None): the stable behaviour id, its one-sentence MUST and a reference",
    )
    config.addinivalue_line(
        "markers", "requires(*capabilities): skip unless the proxier declares these capabilities"
    )
    workerinput = getattr(config, "workerinput", None)
    if workerinput and "svc_seed" in workerinput:
        seed = int(workerinput["svc_seed"])
    elif config.getoption("seed") is not None:
        seed = config.getoption("seed")
    else:
        seed = random.SystemRandom().randrange(1, 2**31)
    config.stash[_SEED] = seed
    if config.getoption("control_plane", None) == "kube-apiserver" and workerinput is None:
        from harness.controlplane.kubeapiserver import binaries_missing

        if (missing := binaries_missing()) is not None:
            raise pytest.UsageError(f"--control-plane kube-apiserver: {missing}")
    # Reports (JSON records, HTML) live in their own plugin module.
    if not config.pluginmanager.has_plugin("harness.reporting"):
        config.pluginmanager.import_plugin("harness.reporting")


_SEED = pytest.StashKey[int]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker uses the controller's seed."""
    node.workerinput["svc_seed"] = node.config.stash[_SEED]


def run_seed_of(config: pytest.Config) -> int | None:
    """The run's seed (``--seed``, or drawn at start and shared with xdist workers)."""
    return config.stash.get(_SEED, None)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"svc-conformance: seed={config.stash[_SEED]} (replay with --seed {config.stash[_SEED]})"]


def _behavior_selected(bid: str | None, wanted: list[str]) -> bool:
    if not wanted:
        return True
    if bid is None:
        return False
    return any(bid == w or (w.endswith("*") and bid.startswith(w[:-1])) for w in wanted)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen: dict[str, str] = {}
    wanted = config.getoption("behavior")
    if wanted:
        keep, drop = [], []
        for item in items:
            mark = item.get_closest_marker("behavior")
            (keep if _behavior_selected(mark.args[0] if mark else None, wanted) else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    for item in items:
        mark = item.get_closest_marker("behavior")
        if mark is None:
            continue
        bid = mark.args[0]
        func = getattr(item, "originalname", item.name)
        where = f"{item.path}::{func}"
        if seen.setdefault(bid, where) != where:
            raise pytest.UsageError(
                f"behaviour id {bid!r} is used by both {seen[bid]} and {where}; ids must be unique"
            )
        item.user_properties.append(("behavior", bid))
        if "must" in mark.kwargs:
            item.user_properties.append(("must", mark.kwargs["must"]))


def pytest_runtest_setup(item: pytest.Item) -> None:
    needed = [c for m in item.iter_markers("requires") for c in m.args]
    if item.config.getoption("ip_family") == "ipv6" and "cluster" in getattr(item, "fixturenames", ()):
        needed.append("ipv6")  # every check on the session cluster runs over IPv6
    if not needed:
        return
    spec = proxier_spec_of(item.config)
    missing = [c for c in needed if not spec.has(c)]
    if missing:
        pytest.skip(f"proxier {spec.name!r} does not declare {', '.join(missing)} "
                    f"({'; '.join(CAPABILITIES.get(c, c) for c in missing)})")


def options_of(config: pytest.Config) -> ClusterOptions:
    """The run's ``ClusterOptions``, read from the command line once per config."""
    options = config.stash.get(_OPTIONS, None)
    if options is None:
        options = config.stash[_OPTIONS] = ClusterOptions.from_config(config)
    return options


def proxier_spec_of(config: pytest.Config) -> ProxierSpec:
    """The proxier under test, resolved once per process (an adapter may run its binary);
    a bad selection is a usage error saying what to do."""
    spec = config.stash.get(_SPEC, None)
    if spec is None:
        try:
            spec = config.stash[_SPEC] = options_of(config).proxier_spec()
        except ProxierConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
    return spec


_OPTIONS = pytest.StashKey[ClusterOptions]()
_SPEC = pytest.StashKey[ProxierSpec]()


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cluster_options(pytestconfig: pytest.Config) -> ClusterOptions:
    """The run's cluster options (session): control plane, proxier, flavour, family, pod
    network, timing. Example: ``options.control_plane == "api"``."""
    return options_of(pytestconfig)


@pytest.fixture(scope="session")
def proxier_spec(pytestconfig: pytest.Config) -> ProxierSpec:
    """The proxier under test (session). Depends on: cluster_options. Example: ``proxier_spec.has("affinity")``."""
    return proxier_spec_of(pytestconfig)


@pytest.fixture(scope="session")
def timing(cluster_options: ClusterOptions) -> Timing:
    """Harness timeouts (session), scaled by --timeout-scale. Example: ``timing.silence_s``."""
    return cluster_options.timing()


@pytest.fixture(scope="session")
def run_seed(pytestconfig: pytest.Config) -> int:
    """The run's seed (session). Example: ``random.Random(run_seed)``."""
    return pytestconfig.stash[_SEED]


@pytest.fixture
def rng(run_seed: int, request: pytest.FixtureRequest) -> random.Random:
    """A per-test random generator derived from the run seed and the test id (function)."""
    digest = hashlib.sha256(f"{run_seed}:{request.node.nodeid}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@contextmanager
def cluster_for_test(config: pytest.Config, spec: TopologySpec, workdir: Path, *,
                 proxier: ProxierSpec | None = None, pod_network_pinned: bool = False,
                 keep: Callable[[], bool] | None = None) -> Iterator[ClusterEnv]:
    """``harness.lifecycle.running_cluster`` for a test: ``spec`` with the run's options
    applied (``--pod-network`` unless pinned), skipped without root, a proxier that
    crashes or never syncs failing the test without a harness traceback, and the
    namespaces kept after a failure with ``--keep-on-failure`` (the hint goes to the
    terminal). Used by every cluster fixture and by the scenario runner."""
    require_root()
    options = options_of(config)
    spec = options.apply_to(spec, pod_network_pinned=pod_network_pinned)

    def say(text: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(text)
        else:
            print(text)

    try:
        with running_cluster(options, spec, workdir, proxier=proxier or proxier_spec_of(config),
                             on_keep=say,
                             keep=keep or (lambda: config.stash.get(_FAILED, False))) as env:
            yield env
    except ClusterStartFailed as exc:
        # A proxier that crashes or never syncs is the finding; no harness traceback.
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def cluster_env_for(pytestconfig: pytest.Config,
                    tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """A factory (session) for a test module that needs a topology of its own (IPv6,
    dual-stack): a context manager running the proxier under test on a ``TopologySpec``
    (``scoped_cluster`` wraps it into fixtures). Depends on: cluster_options. Example::

        with cluster_env_for(TopologySpec(...), "cluster6") as env:
            yield env
    """

    def make(spec: TopologySpec, name: str = "cluster") -> Any:
        return cluster_for_test(pytestconfig, spec, tmp_path_factory.mktemp(name))

    return make


@pytest.fixture(scope="session")
def cluster_env(cluster_options: ClusterOptions, cluster_env_for: Any) -> Iterator[ClusterEnv]:
    """A running cluster for this worker (session): namespaces, echo server, proxier on every
    node. Depends on: cluster_options. Example: ``cluster_env.nodes[0].ip``."""
    try:
        spec = cluster_options.session_topology()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    with cluster_env_for(spec, "cluster") as env:
        yield env


_FAILED = pytest.StashKey[bool]()


def _test_scope(env: ClusterEnv) -> Iterator[ClusterScope]:
    scope = ClusterScope(env)
    yield scope
    scope.close()


@pytest.fixture
def cluster(cluster_env: ClusterEnv) -> Iterator[ClusterScope]:
    """This test's view of the cluster (function): pods and Services it creates are removed
    afterwards. Depends on: cluster_env. Example: ``svc = cluster.create_service(cluster.add_pods(2))``."""
    yield from _test_scope(cluster_env)


def scoped_cluster(spec: TopologySpec, name: str) -> tuple[Any, Any]:
    """A fixture factory for a test module that needs a cluster of its own (IPv6,
    dual-stack). Returns two fixtures, to be assigned at module level so pytest finds them:

    ``<name>_env`` (module scope, one per module and xdist worker)
        ``spec``'s topology with the proxier under test on every node; its pod network is
        ``--pod-network``'s, as for ``cluster_env``. Depends on: cluster_env_for.
    ``<name>`` (function scope)
        A ``ClusterScope`` over it, as ``cluster`` is over ``cluster_env``: pods and Services
        a test creates are removed afterwards. Depends on: ``<name>_env``.

    Example::

        cluster6_env, cluster6 = scoped_cluster(
            TopologySpec(**IPV6_PLAN, nodes=[NodeSpec(name="node1")]), "cluster6")

        def test_x(cluster6):
            svc = cluster6.create_service(cluster6.add_pods(2))
    """
    env_name = f"{name}_env"

    @pytest.fixture(scope="module", name=env_name)
    def env_fixture(cluster_env_for: Any) -> Iterator[ClusterEnv]:
        """A cluster of this module's own (module), from ``scoped_cluster``."""
        with cluster_env_for(spec, name) as env:
            yield env

    @pytest.fixture(name=name)
    def scope_fixture(request: pytest.FixtureRequest) -> Iterator[ClusterScope]:
        """This test's view of the module's own cluster (function), from ``scoped_cluster``."""
        # By name: the env fixture's name is only known here.
        yield from _test_scope(request.getfixturevalue(env_name))

    return env_fixture, scope_fixture


# --- keep-on-failure ---------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.config.stash[_FAILED] = True  # --keep-on-failure keeps the clusters up
    return report
