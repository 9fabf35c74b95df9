"""pytest plugin: scenario files (``scenarios/**/*.yaml``) are collected and run as tests.

``pytest scenarios/`` or ``pytest scenarios/bugs/k8s-59368.yaml``: each file is one test
(item ``k8s-59368``) with the behaviour id ``scenario/<path under scenarios>``, the feature
markers it lists, and the ``scenario`` marker. A file that does not load is a collection
error naming file and line (``harness.scenario.ScenarioError``).

Each scenario builds its own small cluster from its objects (one pod per EndpointSlice
endpoint address, on its ``nodeName``): a ``Topology`` and the proxier under test on every
node through ``harness.cluster.ClusterEnv``, independent of the session ``cluster_env``.
It publishes the objects, checks the flows, runs the steps, and tears everything down.

Proxier settings (cluster CIDR, masquerade-all, nodePort addresses, localhost nodePorts)
become extra flags of the reference proxier (and of any command running ``refproxier`` or
the faulty proxiers in ``tests.faulty``); another proxier cannot take them, so a scenario
that needs them is skipped for it with the reason, as is one needing an undeclared
capability.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.scenario import Flow, Scenario, ScenarioError, Step, endpoint_pod, load_scenario

SCENARIO_DIR = "scenarios"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and SCENARIO_DIR in file_path.parts:
        # only files under a scenarios/ directory, and not the dumps they refer to
        if "dumps" in file_path.parts:
            return None
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def _behavior_id(path: Path) -> str:
    parts = path.with_suffix("").parts
    i = len(parts) - 1 - parts[::-1].index(SCENARIO_DIR)
    return "scenario/" + "/".join(parts[i + 1:])


class ScenarioFile(pytest.File):
    def collect(self):  # type: ignore[override]
        try:
            sc = load_scenario(self.path)
        except ScenarioError as e:
            raise _LoadFailed(str(e)) from None
        item = ScenarioItem.from_parent(self, name=sc.name, scenario=sc)
        item.add_marker(pytest.mark.scenario)
        for f in sc.features:
            item.add_marker(getattr(pytest.mark, f))
        item.add_marker(pytest.mark.behavior(
            _behavior_id(self.path),
            must=f"Scenario {sc.name}: {sc.summary}",
            ref=sc.references[0] if sc.references else None))
        if sc.proxier.capabilities:
            item.add_marker(pytest.mark.requires(*sc.proxier.capabilities))
        yield item

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, _LoadFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class _LoadFailed(Exception):
    pass


class ScenarioFailure(AssertionError):
    """A flow did not do what the scenario says."""


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, **kw: Any) -> None:
        super().__init__(**kw)
        self.scenario = scenario
        self.fixturenames: list[str] = []

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.scenario.name}"

    def runtest(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("needs root: network namespaces and netfilter")
        gap = self.scenario.known_gaps.get(self.config.getoption("proxier") or
                                           ("custom" if self.config.getoption("proxier_cmd") else "reference"))
        if gap:
            # strict: once the proxier is fixed the scenario passes and this entry must go
            self.add_marker(pytest.mark.xfail(reason=f"known gap: {gap}", strict=True))
        run_scenario(self.scenario, self.config, self)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


# ------------------------------------------------------------------------------- running


def _proxier_spec(sc: Scenario, config: pytest.Config) -> Any:
    from harness.proxiers import ProxierConfigError, resolve

    try:
        spec = resolve(config.getoption("proxier"), config.getoption("proxier_cmd"),
                       config.getoption("proxier_capabilities"))
    except ProxierConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    missing = [c for c in sc.proxier.capabilities if not spec.has(c)]
    if missing:
        pytest.skip(f"proxier {spec.name!r} does not declare {', '.join(missing)}")
    if not sc.proxier.customised:
        return spec
    argv = shlex.split(spec.command)
    if not any(a in ("refproxier", "tests.faulty") for a in argv):
        pytest.skip(f"scenario needs proxier settings {sc.proxier.refproxier_args()} "
                    f"(cluster CIDR {sc.proxier.cluster_cidr!r}); only the reference proxier "
                    "takes them as flags")
    command = spec.command
    if sc.proxier.cluster_cidr == "":
        command = command.replace("--cluster-cidr {cluster_cidr}", "")
    extra = " ".join(shlex.quote(a) for a in sc.proxier.refproxier_args())
    return type(spec)(spec.name, f"{command} {extra}".strip(), spec.capabilities, spec.description)


def run_scenario(sc: Scenario, config: pytest.Config, item: pytest.Item | None = None) -> None:
    from harness.cluster import ClusterEnv
    from harness.timing import default_timing
    from harness.topology.netns import Topology

    spec = _proxier_spec(sc, config)
    timing = default_timing()
    scale = config.getoption("timeout_scale", None)
    if scale:
        timing = timing.scaled(scale)
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix=f"scenario-{sc.name}-"))
    topo = Topology(sc.topology, timing=timing)
    topo.start()
    env = None
    try:
        env = ClusterEnv(topo, spec, workdir, timing, iptables=config.getoption("iptables", "nft"))
        env.start()
        runner = _Runner(sc, env, timing)
        runner.apply(sc.objects)
        env.sync()
        try:
            for step in sc.all_steps():
                runner.step(step)
        except ScenarioFailure:
            if item is not None:
                for title, text in _evidence(env):
                    item.add_report_section("call", title, text)
            raise
    finally:
        if env is not None:
            env.stop()
        topo.close()


def _evidence(env: Any) -> list[tuple[str, str]]:
    out = []
    for name, proc in env.proxiers.items():
        out.append((f"proxier log, node {name} (last lines)", proc.log_tail(30)))
    try:
        from harness.plugin import _rules

        for node in env.nodes:
            out.append((f"rules on node {node.name}", _rules(node.netns)))
    except Exception:  # noqa: BLE001 - evidence is best effort
        pass
    return out


class _Runner:
    def __init__(self, sc: Scenario, env: Any, timing: Any) -> None:
        self.sc, self.env, self.timing = sc, env, timing
        self.topo = env.topology

    def apply(self, objects: list[Any]) -> None:
        env_nodes = {n.name for n in self.env.nodes}
        for o in objects:
            d = o.to_dict()
            if d.get("kind") == "Node":
                addrs = (d.get("status") or {}).get("addresses") or []
                if d["metadata"]["name"] not in env_nodes or not addrs:
                    continue  # the harness's own Node object says the same, with addresses
            self.env.controlplane.put(d)

    def step(self, st: Step) -> None:
        if st.kind == "apply":
            self.apply(st.objects)
            self.env.sync()
        elif st.kind == "delete":
            for kind, ns, name in st.deletes:
                self.env.controlplane.remove(kind, ns, name)
            self.env.sync()
        elif st.kind == "restart_proxier":
            for node in (self.env.proxiers if st.node == "all" else [st.node]):
                self.env.restart_proxier(node)
            self.env.sync()  # a new generation the restarted proxier must apply
        elif st.kind == "wait":
            self.timing.wait_idle(st.seconds)
        else:
            for f in st.flows:
                self.flow(f, st)

    # -- one flow -----------------------------------------------------------------------
    def _host(self, f: Flow) -> tuple[Any, str | None]:
        hosts = self.topo.hosts
        if f.src in hosts:
            return hosts[f.src], f.source
        for h in hosts.values():
            if f.src in h.addresses:
                return h, f.src
        raise ScenarioFailure(self._msg(f, f"no host has the address {f.src}"))

    def _dst(self, f: Flow) -> str:
        return self.topo.nodes[f.to].ip if f.to in self.topo.nodes else f.to

    def flow(self, f: Flow, st: Step) -> None:
        from harness import verdicts
        from harness.traffic.probe import probe

        host, source = self._host(f)
        dst = self._dst(f)
        proto = f.protocol.lower()
        expected_pods = ([endpoint_pod(self.sc.topology, e) for e in f.expect]
                         if isinstance(f.expect, list) else [])
        silence = isinstance(f.expect, str) and f.expect == "drop"
        kw: dict[str, Any] = {"timeout": self.timing.silence_s} if silence else {}
        if f.affinity:
            self._affinity(f, host, dst, expected_pods)
            return
        if f.distribution:
            count = f.count or verdicts.required_samples(len(expected_pods))
            obs = probe(host, dst, f.port, proto, count=count, source=source, **kw)
            counts = Counter(o.pod for o in obs if o.pod)
            v = verdicts.uniformity_verdict(counts, expected_pods, observations=obs)
            if not v.passed:
                raise ScenarioFailure(self._msg(f, v.explain(), st))
            return
        count = f.count or (1 if f.sport else 4)
        obs = []
        for _ in range(count if f.sport else 1):
            obs += probe(host, dst, f.port, proto, count=1 if f.sport else count,
                         source=source, sport=f.sport, **kw)
        if isinstance(f.expect, list):
            v = verdicts.reached_only(obs, expected_pods)
        elif f.expect == "reject":
            v = verdicts.refused(obs)
        elif f.expect == "drop":
            v = verdicts.dropped(obs)
        else:  # untouched: only the destination itself may answer
            own = {p.name for p in self.topo.pods.values() if p.ip == dst}
            bad = [o for o in obs if o.pod is not None and o.pod not in own]
            if bad:
                raise ScenarioFailure(self._msg(
                    f, "expected the packet to pass the proxier untouched (no DNAT), but it "
                    f"was answered by {sorted({o.pod for o in bad})}:\n"
                    + verdicts.probe_table(obs), st))
            return
        if not v.passed:
            raise ScenarioFailure(self._msg(f, v.explain(), st))
        if f.masq is not None:
            nodes = {a for n in self.env.nodes for a in (*n.addresses, n.pod_gateway) if a}
            if f.masq:
                bad = [o for o in obs if o.seen_src not in nodes]
                want = f"a node address (one of {sorted(nodes)})"
            else:
                bad = [o for o in obs if o.seen_src != o.src]
                want = "the client's own address"
            if bad:
                raise ScenarioFailure(self._msg(
                    f, f"masq {str(f.masq).lower()}: the endpoint must see {want}; it saw "
                    f"{sorted({str(o.seen_src) for o in bad})} for {len(bad)}/{len(obs)} probes "
                    f"from {sorted({o.src for o in bad})}", st))

    def _affinity(self, f: Flow, host: Any, dst: str, pods: list[str]) -> None:
        from harness import verdicts
        from harness.traffic.probe import probe

        n = len(set(pods))
        sources = [f.source] if f.source else list(host.addresses)
        k = min(len(sources), verdicts.affinity_clients_needed(n))
        m = f.count or verdicts.affinity_connections_needed(n, clients=k)
        obs = []
        if f.interval:
            for r in range(m):
                if r:
                    self.timing.wait_idle(f.interval)  # the pause is the behaviour under test
                for s in sources[:k]:
                    obs += probe(host, dst, f.port, f.protocol.lower(), count=1, source=s)
        else:
            for s in sources[:k]:
                obs += probe(host, dst, f.port, f.protocol.lower(), count=m, source=s, parallel=1)
        v = verdicts.affinity_verdict(obs, pods)
        if not v.passed:
            raise ScenarioFailure(self._msg(f, v.explain()))

    def _msg(self, f: Flow, what: str, st: Step | None = None) -> str:
        sc = self.sc
        where = f"{sc.path}:{f.line}"
        step = f", step {st.name!r}" if st is not None and st.name != "flows" else ""
        lines = [f"scenario {sc.name}: {sc.summary}",
                 f"flow {f.describe()}  ({where}{step})",
                 what.rstrip()]
        if sc.references:
            lines.append("bug: " + " ".join(sc.references))
        return "\n".join(lines)
