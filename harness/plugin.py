"""The harness as a pytest plugin: options, markers, fixtures, evidence and report hooks.

Loaded by the project's conftest.py. Fixtures:

``proxier_spec`` (session)
    The proxier under test (``--proxier``/``--proxier-cmd``), with its declared capabilities.
``timing`` (session)
    The one home of timeouts (``harness.timing.Timing``), scaled by ``--timeout-scale``.
``run_seed`` (session) / ``rng`` (function)
    The run's seed (``--seed``, printed in the header) and a per-test ``random.Random``
    derived from it and the test id.
``cluster_env`` (session, one per xdist worker)
    Network namespaces (``--nodes`` nodes, ``--clients`` clients, ``--pod-network``), the echo
    server, and the proxier running on every node. Depends on the three above.
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
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.proxiers import CAPABILITIES, ProxierConfigError, resolve

if TYPE_CHECKING:
    from harness.topology.spec import TopologySpec

# The report plugin has options of its own (--known-gaps): it must be registered before
# the command line is parsed, so here rather than in pytest_configure.
pytest_plugins = ["harness.reporting", "harness.scenario_plugin"]

FEATURE_MARKERS = {
    "dnat": "ClusterIP DNAT to the Service's ready endpoints",
    "distribution": "load-balancing distribution over endpoints",
    "affinity": "sessionAffinity ClientIP",
    "nodeport": "NodePort reachability",
    "no_endpoints": "Services without endpoints are refused",
    "masquerade": "SNAT / masquerade and the masquerade mark",
    "externalips": "spec.externalIPs",
    "loadbalancer": "LoadBalancer ingress IPs and loadBalancerSourceRanges",
    "traffic_policy": "externalTrafficPolicy / internalTrafficPolicy Local",
    "hairpin": "a pod reaching itself through its Service",
    "terminating": "terminating endpoints and their fallback",
    "conntrack": "UDP flows and conntrack cleanup",
    "invalid": "INVALID packets (kube-proxy's ct state INVALID drop)",
    "churn": "endpoint churn while traffic flows",
    "restart": "proxier restarts and flushed rules",
    "slices": "multiple EndpointSlices, selector-less Services, proxy labels, type changes",
    "ipv6": "IPv6 and dual-stack Services",
    "sctp": "SCTP Services",
    "scenario": "declarative scenario files (scenarios/)",
    "smoke": "the harness itself: topology, echo, probes",
    "slow": "takes more than a few seconds",
}

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
    g.addoption("--control-plane", choices=("statedir", "api"), default="statedir",
                help="how state reaches the proxier: {state_dir}/state.yaml (default), or a "
                     "Kubernetes API server on the lan ({kubeconfig}; list+watch)")
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
    # Reports (JSON records, HTML) live in their own plugin module.
    if not config.pluginmanager.has_plugin("harness.reporting"):
        config.pluginmanager.import_plugin("harness.reporting")


_SEED = pytest.StashKey[int]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker uses the controller's seed."""
    node.workerinput["svc_seed"] = node.config.stash[_SEED]


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
    try:
        spec = _spec(item.config)
    except ProxierConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    missing = [c for c in needed if not spec.has(c)]
    if missing:
        pytest.skip(f"proxier {spec.name!r} does not declare {', '.join(missing)} "
                    f"({'; '.join(CAPABILITIES.get(c, c) for c in missing)})")


def _spec(config: pytest.Config) -> Any:
    return resolve(config.getoption("proxier"), config.getoption("proxier_cmd"),
                   config.getoption("proxier_capabilities"), config.getoption("proxier_version"))


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def proxier_spec(pytestconfig: pytest.Config) -> Any:
    """The proxier under test (session). Depends on: options. Example: ``proxier_spec.has("affinity")``."""
    try:
        return _spec(pytestconfig)
    except ProxierConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def timing(pytestconfig: pytest.Config) -> Any:
    """Harness timeouts (session), scaled by --timeout-scale. Example: ``timing.silence_s``."""
    from harness.timing import default_timing

    base = default_timing()
    scale = pytestconfig.getoption("timeout_scale")
    return base.scaled(scale) if scale else base


@pytest.fixture(scope="session")
def run_seed(pytestconfig: pytest.Config) -> int:
    """The run's seed (session). Example: ``random.Random(run_seed)``."""
    return pytestconfig.stash[_SEED]


@pytest.fixture
def rng(run_seed: int, request: pytest.FixtureRequest) -> random.Random:
    """A per-test random generator derived from the run seed and the test id (function)."""
    digest = hashlib.sha256(f"{run_seed}:{request.node.nodeid}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and netfilter (run: sudo bash run.sh conformance)")


@contextmanager
def _running_env(config: pytest.Config, proxier_spec: Any, timing: Any, spec: Any,
                 workdir: Path) -> Iterator[Any]:
    """Topology + proxiers for ``spec``, torn down afterwards (kept with --keep-on-failure
    after a failed test); a proxier that crashes or never syncs fails without a traceback."""
    _require_root()
    from harness.cluster import ClusterEnv
    from harness.controlplane.statedir import SyncTimeout
    from harness.proxiers.process import ProxierCrashed
    from harness.topology.netns import Topology

    topo = Topology(spec, timing=timing)
    topo.start()
    env = None
    try:
        control_plane = config.getoption("control_plane", "statedir") or "statedir"
        env = ClusterEnv(topo, proxier_spec, workdir, timing, iptables=config.getoption("iptables"),
                         control_plane=control_plane)
        try:
            env.start()
        except (ProxierCrashed, SyncTimeout) as exc:
            # A proxier that crashes or never syncs is the finding; no harness traceback.
            pytest.fail(f"proxier {proxier_spec.name!r} did not start (control plane "
                        f"{control_plane}): {exc}", pytrace=False)
        yield env
    finally:
        if config.getoption("keep_on_failure") and config.stash.get(_FAILED, False):
            _print_keep_hint(config, topo, workdir)
        else:
            if env is not None:
                env.stop()
            topo.close()


@pytest.fixture(scope="session")
def cluster_env_for(pytestconfig: pytest.Config, proxier_spec: Any, timing: Any,
                    tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A factory (session) for a test module that needs a topology of its own (IPv6,
    dual-stack): a context manager running the proxier under test on a ``TopologySpec``
    (``scoped_cluster`` wraps it into fixtures). Depends on: proxier_spec, timing. Example::

        with cluster_env_for(TopologySpec(...), "cluster6") as env:
            yield env
    """

    def make(spec: Any, name: str = "cluster") -> Any:
        return _running_env(pytestconfig, proxier_spec, timing, spec, tmp_path_factory.mktemp(name))

    return make


@pytest.fixture(scope="session")
def cluster_env(pytestconfig: pytest.Config, cluster_env_for: Any) -> Any:
    """A running cluster for this worker (session): namespaces, echo server, proxier on every
    node. Depends on: proxier_spec, timing. Example: ``cluster_env.nodes[0].ip``."""
    from harness.topology.spec import IPV6_PLAN, ClientSpec, NodeSpec, TopologySpec

    n_nodes = pytestconfig.getoption("nodes")
    n_clients = pytestconfig.getoption("clients")
    if n_nodes < 1 or n_clients < 1:
        raise pytest.UsageError("--nodes and --clients must be at least 1")
    plan = IPV6_PLAN if pytestconfig.getoption("ip_family") == "ipv6" else {}
    spec = TopologySpec(
        **plan,
        nodes=[NodeSpec(name=f"node{i + 1}") for i in range(n_nodes)],
        clients=[ClientSpec(name=f"client{i + 1}", extra_addresses=16) for i in range(n_clients)],
        pod_network=pytestconfig.getoption("pod_network"),
        # Bridge mode as kubelet sets it up (--hairpin-mode=hairpin-veth): without
        # hairpin_mode a pod cannot reach itself through a Service (conformance/test_hairpin.py).
        hairpin_mode=pytestconfig.getoption("pod_network") == "bridge",
    )
    with cluster_env_for(spec, "cluster") as env:
        yield env


_FAILED = pytest.StashKey[bool]()


def _print_keep_hint(config: pytest.Config, topo: Any, workdir: Path) -> None:
    lines = ["--keep-on-failure: the namespaces are still up. Enter one with:"]
    for host in [*topo.nodes.values(), *topo.clients.values(), *topo.pods.values()]:
        lines.append(f"  ip netns exec {host.netns} bash    # {host.name} {host.ip}")
    lines.append(f"state and proxier logs: {workdir}")
    lines.append("the next run removes them (or: ip netns list | grep PREFIX | xargs -n1 ip netns del)")
    tr = config.pluginmanager.get_plugin("terminalreporter")
    text = "\n".join(lines)
    if tr is not None:
        tr.write_line(text)
    else:
        print(text)


def _test_scope(env: Any) -> Iterator[Any]:
    from harness.cluster import ClusterScope

    scope = ClusterScope(env)
    yield scope
    scope.close()


@pytest.fixture
def cluster(cluster_env: Any) -> Any:
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
    def env_fixture(pytestconfig: pytest.Config, cluster_env_for: Any) -> Iterator[Any]:
        """A cluster of this module's own (module), from ``scoped_cluster``."""
        with cluster_env_for(replace(spec, pod_network=pytestconfig.getoption("pod_network")),
                             name) as env:
            yield env

    @pytest.fixture(name=name)
    def scope_fixture(request: pytest.FixtureRequest) -> Iterator[Any]:
        """This test's view of the module's own cluster (function), from ``scoped_cluster``."""
        # By name: the env fixture's name is only known here.
        yield from _test_scope(request.getfixturevalue(env_name))

    return env_fixture, scope_fixture


# --- evidence and reports ----------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.config.stash[_FAILED] = True
        env = _env_of(item)
        if env is not None:
            for title, text in _evidence(env):
                report.sections.append((title, text))


def _env_of(item: pytest.Item) -> Any:
    """The cluster a failed test ran on, found among its fixtures (session or module env)."""
    from harness.cluster import ClusterEnv, ClusterScope

    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, ClusterScope):
            return value.env
        if isinstance(value, ClusterEnv):
            return value
    return None


def _evidence(env: Any) -> list[tuple[str, str]]:
    out = []
    for name, proc in env.proxiers.items():
        out.append((f"proxier log, node {name} (last lines)", proc.log_tail(40)))
    for node in env.nodes:
        out.append((f"rules on node {node.name}", _rules(node.netns)))
    return out


def _rules(netns: str) -> str:
    try:
        from harness import netfilter

        dump = netfilter.dump_rules(netns)
        return str(dump)
    except Exception:  # noqa: BLE001 - evidence is best effort; fall back to the raw tools
        parts = []
        for tool in ("iptables-nft-save", "iptables-legacy-save"):
            r = subprocess.run(["ip", "netns", "exec", netns, tool], capture_output=True, text=True)
            if r.stdout.strip():
                parts.append(f"# {tool}\n{r.stdout}")
        return "\n".join(parts) or "(no rules)"
