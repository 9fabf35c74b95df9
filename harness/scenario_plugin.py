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
from dataclasses import replace
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
            must=sc.must or f"Every flow of {sc.name} MUST behave as after the fix. Bug: {sc.summary}",
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
    return replace(spec, command=f"{command} {extra}".strip())


def run_scenario(sc: Scenario, config: pytest.Config, item: pytest.Item | None = None) -> None:
    from harness.cluster import ClusterEnv
    from harness.timing import default_timing
    from harness.topology.netns import Topology

    spec = _proxier_spec(sc, config)
    timing = default_timing()
    scale = config.getoption("timeout_scale", None)
    if scale:
        timing = timing.scaled(scale)
    import shutil
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix=f"scenario-{sc.name}-"))
    topo = Topology(sc.topology, timing=timing)
    topo.start()
    env = None
    keep = False
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
            keep = bool(config.getoption("keep_on_failure", False))
            if keep:
                from harness.topology import netns

                # not closed at exit either; the next run's reaper removes it
                netns._open_topologies.discard(topo)
            if item is not None:
                for title, text in _evidence(env):
                    item.add_report_section("call", title, text)
                item.add_report_section("call", "scenario workdir", f"state and proxier logs: {workdir}"
                                        + (f"\nnamespaces kept (--keep-on-failure):\n{topo.describe()}"
                                           if keep else ""))
            workdir = None  # type: ignore[assignment] - kept for the person reading the failure
            raise
    finally:
        if not keep:
            if env is not None:
                env.stop()
            topo.close()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


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
        # silence is the expected answer (drop), or an acceptable one (untouched)
        silence = isinstance(f.expect, str) and f.expect in ("drop", "untouched")
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


# ------------------------------------------------------------------ --save-scenario DIR


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("svc-conformance")
    g.addoption("--save-scenario", default=None, metavar="DIR",
                help="when a check using the 'cluster' fixture fails, write its Services, "
                     "EndpointSlices, Nodes, hosts and probes to DIR/<test>.yaml as a scenario "
                     "file (its flows record what was observed: edit 'expect' to what must happen)")


_RECORD = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    if not item.config.getoption("save_scenario", None) or "cluster" not in getattr(item, "fixturenames", ()):
        yield
        return
    from harness.topology import netns

    record: list[tuple[Any, Any, Any]] = []
    item.stash[_RECORD] = record
    orig = netns.Host.call

    def call(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        result = orig(self, fn, *args, **kwargs)
        engine = getattr(fn, "__self__", None)
        if type(engine).__name__ == "_Engine" and getattr(fn, "__name__", "") == "run":
            record.append((self, engine, result))
        return result

    netns.Host.call = call  # type: ignore[method-assign]
    try:
        yield
    finally:
        netns.Host.call = orig  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    out_dir = item.config.getoption("save_scenario", None)
    if not (out_dir and report.when == "call" and report.failed):
        return
    scope = getattr(item, "funcargs", {}).get("cluster")
    if scope is None:
        return
    try:
        path, note = save_scenario(item, scope.env, item.stash.get(_RECORD, []), report, Path(out_dir))
        report.sections.append(("saved scenario", f"{path}\n{note}".rstrip()))
    except Exception as e:  # noqa: BLE001 - saving is a convenience; never hide the failure
        report.sections.append(("saved scenario", f"could not save the scenario: {e!r}"))


def save_scenario(item: pytest.Item, env: Any, record: list, report: Any, out_dir: Path) -> tuple[Path, str]:
    """Write the failing check's cluster state and probes as a scenario file."""
    import re

    import yaml

    from harness.scenario import ScenarioError

    topo = env.topology
    pods_by_ip = {p.ip: p for p in topo.pods.values()}
    objects = []
    endpoint_ips: set[str] = set()
    for obj in env.controlplane.objects():
        obj = _plain(obj)
        if obj.get("kind") == "EndpointSlice":
            for ep in obj.get("endpoints") or []:
                for a in ep.get("addresses") or []:
                    endpoint_ips.add(a)
                    if a in pods_by_ip and not ep.get("targetRef"):
                        ep["targetRef"] = {"kind": "Pod", "name": pods_by_ip[a].name,
                                           "namespace": obj["metadata"].get("namespace")}
        objects.append(obj)
    node_names = {n.name for n in env.nodes}
    extra_pods = [{"name": p.name, "node": p.node.name, "ip": p.ip}
                  for p in topo.pods.values() if p.ip not in endpoint_ips]
    clients = [{"name": c.name, "ip": c.ip, "extra_addresses": len(c.addresses) - 1}
               for c in env.clients]
    flows: list[dict[str, Any]] = []
    groups: dict[tuple, list] = {}
    for host, eng, result in record:
        key = (host.name, eng.dst, eng.dport, eng.proto, eng.source, eng.sport)
        groups.setdefault(key, []).extend(result or [])
    for i, ((src, dst, dport, proto, source, sport), obs) in enumerate(groups.items(), start=1):
        replied = sorted({o.pod for o in obs if o.pod})
        kinds = {o.outcome.value for o in obs}
        if replied:
            expect: Any = replied
        elif kinds == {"icmp"}:
            expect = "reject"
        else:
            expect = "drop"
        to = next((n.name for n in env.nodes if n.ip == dst), dst)
        flow: dict[str, Any] = {"name": f"probe {i}: {src} {proto} to {dst}:{dport}",
                                "from": src, "protocol": proto.upper(), "to": to,
                                "port": dport, "expect": expect, "count": len(obs) or 1}
        if source and source != getattr(topo.hosts.get(src), "ip", None):
            flow["source"] = source
        if sport:
            flow["sport"] = sport
            flow["count"] = 1
        seen = Counter(f"{o.outcome.value}{' ' + o.pod if o.pod else ''}" for o in obs)
        flow["_observed"] = ", ".join(f"{n}x {k}" for k, n in seen.most_common())
        flows.append(flow)
    mark = item.get_closest_marker("behavior")
    refs = [mark.kwargs["ref"]] if mark is not None and mark.kwargs.get("ref") else []
    caps = sorted({c for m in item.iter_markers("requires") for c in m.args})
    summary = str(report.longreprtext).strip().splitlines()
    first = next((ln.strip() for ln in summary if ln.strip().startswith("E ")), summary[-1] if summary else "")
    doc: dict[str, Any] = {
        "description": f"Saved from the failing check {item.nodeid}"
                       + (f" ({mark.args[0]})" if mark is not None else "") + f": {first[:300]}",
        "references": refs or ["https://kubernetes.io/docs/reference/networking/virtual-ips/"],
        "objects": objects,
        "topology": {"pod_network": topo.spec.pod_network, "hairpin_mode": topo.spec.hairpin_mode,
                     "client_gateway": topo.resolved.gateway, "clients": clients,
                     "pods": extra_pods},
    }
    if not extra_pods:
        del doc["topology"]["pods"]
    if caps:
        doc["proxier"] = {"capabilities": caps}
    if flows:
        doc["flows"] = flows
    text = yaml.safe_dump(doc, sort_keys=False, width=100)
    # each flow's observation as a comment above it (YAML has no other place for it)
    text = re.sub(r"^(\s*)- name: (.*)\n((?:\1  .*\n)*?)\1  _observed: (.*)\n",
                  lambda m: f"{m.group(1)}# observed: {m.group(4)}\n{m.group(1)}- name: {m.group(2)}\n{m.group(3)}",
                  text, flags=re.M)
    header = ("# Saved by --save-scenario from a FAILING check. The flows record what the proxier\n"
              "# under test did, not what it should do: edit each 'expect' (and 'masq') to the\n"
              "# correct behaviour, move the file under scenarios/ and run pytest on it.\n"
              f"# node names: {', '.join(sorted(node_names))}\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", item.nodeid.split("::", 1)[-1]).strip("-")
    path = out_dir / f"{name}.yaml"
    path.write_text(header + text)
    note = ""
    try:
        load_scenario(path)
    except ScenarioError as e:
        note = f"(it does not load as written: {e})"
    return path, note


def _plain(obj: Any) -> Any:
    """A deep copy with plain dicts and lists (safe_dump-able)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
