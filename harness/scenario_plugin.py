"""pytest plugin: scenario files (``scenarios/**/*.yaml``) are collected and run as tests.

``pytest scenarios/`` or ``pytest scenarios/bugs/k8s-59368.yaml``: each file is one test
(item ``k8s-59368``) with the behaviour id ``scenario/<path under scenarios>``, the feature
markers it lists, and the ``scenario`` marker. A file that does not load is a collection
error naming file and line (``harness.scenario.ScenarioError``).

Each scenario builds its own small cluster from its objects (one pod per EndpointSlice
endpoint address, on its ``nodeName``), independent of the session ``cluster_env`` but
started the same way (``harness.lifecycle.running_cluster`` with the run's
``ClusterOptions``): the control plane, the proxier with its version, the iptables flavour,
the pod network (unless the scenario pins one) and the timing are the run's. It publishes
the objects, checks the flows, runs the steps, and tears everything down.

Proxier settings (cluster CIDR, masquerade-all, nodePort addresses, localhost nodePorts)
become extra flags of the reference proxier (and of any command running ``refproxier`` or
the faulty proxiers in ``tests.faulty``); another proxier cannot take them, so a scenario
that needs them is skipped for it with the reason, as is one needing an undeclared
capability.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import evidence
from harness.controlplane.statedir import SyncTimeout
from harness.flowcheck import (
    FlowContext,
    FlowResult,
    dependent_flows,
    flow_verdicts,
    probe_plan,
)
from harness.lifecycle import require_root
from harness.plugin import cluster_for_test, options_of, proxier_spec_of
from harness.proxiers import ProxierSpec
from harness.proxiers.process import ProxierCrashed
from harness.scenario import Flow, Scenario, ScenarioError, Step, endpoint_pod, load_scenario
from harness.traffic.probe import ProbeRecord, recording

SCENARIO_DIR = "scenarios"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and SCENARIO_DIR in file_path.parts:
        # only files under a scenarios/ directory, and not the dumps they refer to
        if "dumps" in file_path.parts:
            return None
        return ScenarioFile.from_parent(parent, path=file_path)
    if file_path.suffix in (".yaml", ".yml") and parent.session.isinitpath(file_path):
        # a scenario file named on the command line, wherever it is (svc-conformance scenario)
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def _behavior_id(path: Path) -> str:
    parts = path.with_suffix("").parts
    if SCENARIO_DIR not in parts:
        return f"scenario/{path.stem}"
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
        if sc.history is not None:  # the bug table of the report (harness.report.bugs)
            item.user_properties += [("history", sc.history.to_dict()),
                                     ("bug_references", list(sc.references))]
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
        require_root()
        gap = self.scenario.known_gaps.get(options_of(self.config).proxier_label)
        if gap:
            # strict: once the proxier is fixed the scenario passes and this entry must go
            self.add_marker(pytest.mark.xfail(reason=f"known gap: {gap}", strict=True))
        elif self.config.getoption("known_bugs", "xfail") == "xfail":
            bug = release_has_bug(self.scenario, proxier_spec_of(self.config))
            if bug:
                self.add_marker(pytest.mark.xfail(reason=bug, strict=True))
        run_scenario(self.scenario, self.config, self)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        from harness.controlplane.kubeapiserver import ControlPlaneError, PublishError

        if isinstance(excinfo.value, PublishError | ControlPlaneError):
            # the API refused one of the file's objects: which one and why, no traceback
            return f"scenario {self.path}: {excinfo.value}"
        return super().repr_failure(excinfo)


# ------------------------------------------------------------------------------- running


def _follows_udp_socket(f: Flow) -> bool:
    """A UDP flow from a pinned source port: the same "connection" followed across a
    change, whose conntrack entry the proxier has to clear -- to reach new endpoints, or to
    be refused or dropped once there are none (kube-proxy v1.37.2's nftables mode clears
    it a moment after the sync the harness saw applied: k8s-139628 failed without the wait,
    passed after 3 idle seconds)."""
    return f.protocol.upper() == "UDP" and f.sport is not None


#: how long a step's ``traffic`` flows before the step's action
TRAFFIC_LEAD_S = 0.5
OUT_OF_WINDOW = 1 << 30  # bytes beyond the endpoint's next sequence number (inject)


def _os_outcome(e: BaseException) -> Any:
    """A broken kept connection as a probe outcome: reset, silence, or an error."""
    import errno

    from harness.traffic.probe import Outcome

    if isinstance(e, ConnectionResetError | ConnectionRefusedError | BrokenPipeError):
        return Outcome.RESET
    if isinstance(e, TimeoutError | socket.timeout) or getattr(e, "errno", None) == errno.ETIMEDOUT:
        return Outcome.TIMEOUT
    return Outcome.ERROR


def _greeting_obs(sock: Any, hello: dict[str, Any], dst: str, dport: int) -> Any:
    """A kept connection that answered, as a probe observation (the greeting's pod)."""
    from harness.traffic.probe import Observation, Outcome

    src, sport = sock.getsockname()[:2]
    return Observation(Outcome.REPLY, str(src), int(sport), dst, dport, "tcp",
                       pod=hello.get("pod"), seen_src=hello.get("src"),
                       seen_sport=int(hello["sport"]) if hello.get("sport") else None,
                       pod_port=int(hello["port"]) if hello.get("port") else None)


def _http_get(ip: str, port: int, source: str | None, timeout: float) -> Any:
    """GET / on ip:port from this namespace (run on the host's thread), as an observation."""
    import http.client

    from harness.flowcheck import HttpObservation
    from harness.traffic.probe import Outcome

    conn = http.client.HTTPConnection(ip, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    src, sport = source or "?", 0
    try:
        conn.connect()
        src, sport = conn.sock.getsockname()[:2]
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read(2000).decode(errors="replace")
        return HttpObservation(Outcome.REPLY, str(src), int(sport), ip, port,
                               status=resp.status, body=" ".join(body.split()))
    except (OSError, http.client.HTTPException) as e:
        return HttpObservation(_os_outcome(e), str(src), int(sport), ip, port,
                               error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def release_has_bug(sc: Scenario, spec: ProxierSpec) -> str | None:
    """Why kube-proxy build ``spec`` is known to have the scenario's bug (its history: a
    kube-proxy bug of the spec's mode, the release before the fix), or None."""
    h = sc.history
    if h is None or spec.release is None:
        return None
    mode = "nftables" if spec.netfilter == "nftables" else "iptables"
    if not h.expected_to_fail(spec.release, mode):
        return None
    link = (h.fixed_by or sc.references or [""])[0]
    return (f"kube-proxy {spec.release} predates the fix of this bug (fixed in "
            f"{h.fixed_in_text}{', ' + link if link else ''}): reproducing it is expected")


def scenario_proxier(sc: Scenario, config: pytest.Config) -> ProxierSpec:
    """The run's proxier under test (``--proxier``, its command, capabilities and version,
    as for conformance tests) with the scenario's proxier settings as extra flags; skips
    when the proxier lacks a capability the scenario needs or cannot take the flags."""
    spec = proxier_spec_of(config)
    missing = [c for c in sc.proxier.capabilities if not spec.has(c)]
    if missing:
        pytest.skip(f"proxier {spec.name!r} does not declare {', '.join(missing)}")
    if not sc.proxier.customised:
        return spec
    if spec.release is not None:
        return kube_proxy_with_settings(sc, spec)
    argv = shlex.split(spec.command)
    if not (spec.kube_proxy_flags or any(a in ("refproxier", "tests.faulty") for a in argv)):
        pytest.skip(f"scenario needs proxier settings {sc.proxier.refproxier_args()} "
                    f"(cluster CIDR {sc.proxier.cluster_cidr!r}); only proxiers taking "
                    "kube-proxy's flags (the reference proxier, kube-proxy) take them")
    command = spec.command
    if sc.proxier.cluster_cidr == "":
        for form in ("--cluster-cidr {cluster_cidr}", "--cluster-cidr={cluster_cidr}"):
            command = command.replace(form, "")
    extra = " ".join(shlex.quote(a) for a in sc.proxier.refproxier_args())
    return replace(spec, command=f"{command} {extra}".strip())


def kube_proxy_with_settings(sc: Scenario, spec: Any) -> Any:
    """Real kube-proxy (``spec.release``) with the scenario's proxier settings as its own
    flags; a setting its release has no flag for is left out (it then behaves as that
    release did) and said in the log."""
    import sys

    flags, notes = sc.proxier.kube_proxy_args(spec.release)
    command = spec.command
    if sc.proxier.cluster_cidr == "":
        command = command.replace("--cluster-cidr={cluster_cidr} ", "")
    elif sc.proxier.cluster_cidr:
        command = command.replace("--cluster-cidr={cluster_cidr}", f"--cluster-cidr={sc.proxier.cluster_cidr}")
    for n in notes:
        print(f"scenario {sc.name}: {n}", file=sys.stderr)
    return replace(spec, command=f"{command} {' '.join(shlex.quote(f) for f in flags)}".strip())


def sctp_sockets() -> bool:
    """Whether this kernel opens SCTP sockets (the echo server's SCTP listeners and the
    probe engine's SCTP probes need them; netfilter's SCTP NAT does not)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132)).close()
    except OSError:
        return False
    return True


NO_SCTP = ("skipped: this kernel has no SCTP sockets (socket(IPPROTO_SCTP) fails), so no "
           "SCTP probe can be sent or answered; conformance/test_sctp.py checks SCTP NAT with "
           "crafted packets instead")


def without_sctp_listeners(topology: Any) -> Any:
    """The topology with its pods' SCTP ports left out (nothing can listen on them here)."""
    pods = tuple(replace(p, ports=tuple(pp for pp in p.ports if pp[1] != "sctp"))
                 for p in topology.pods)
    return replace(topology, pods=pods)


def run_scenario(sc: Scenario, config: pytest.Config, item: pytest.Item | None = None) -> None:
    """Build the scenario's cluster with the run's options (``harness.lifecycle``, as every
    conformance cluster), publish its objects, check its flows and steps, tear it down.
    On a kernel without SCTP sockets the pods do not listen on SCTP ports and SCTP flows
    are skipped with the reason (the rest of the scenario runs); a scenario whose every
    flow is skipped is skipped."""
    spec = scenario_proxier(sc, config)
    topology = sc.topology
    if not sctp_sockets() and any(pp[1] == "sctp" for p in topology.pods for pp in p.ports):
        topology = without_sctp_listeners(topology)
    workdir = Path(tempfile.mkdtemp(prefix=f"scenario-{sc.name}-"))
    failed = False
    try:
        with cluster_for_test(config, topology, workdir, proxier=spec,
                              pod_network_pinned=sc.pod_network_pinned,
                              keep=lambda: failed) as env:
            runner = _Runner(sc, env, env.timing, spec, options_of(config).proxier_label)
            try:
                try:
                    runner.apply(sc.objects)
                    env.sync()
                    runner.run_steps(sc.all_steps())
                except (SyncTimeout, ProxierCrashed) as exc:
                    # the proxier choked on the scenario's objects: a finding, told as one
                    raise ScenarioFailure(f"scenario {sc.name}: {sc.summary}\nthe proxier "
                                          f"did not apply the scenario's state: {exc}") from None
                finally:
                    runner.close()
                    if item is not None:  # every flow's outcome, for the JSON/HTML report
                        item.user_properties.append(("flows", runner.flow_records()))
                runner.raise_failures()
                skipped = {r.skipped for r in runner.results if r.skipped}
                if runner.results and all(r.skipped for r in runner.results):
                    pytest.skip("; ".join(sorted(skipped)))
            except ScenarioFailure:
                failed = True
                if item is not None:
                    evidence.record_failure(item, env)
                    kept = options_of(config).keep_on_failure
                    item.add_report_section(
                        "call", "scenario workdir", f"state and proxier logs: {workdir}"
                        + (f"\nnamespaces kept (--keep-on-failure):\n{env.topology.describe()}"
                           if kept else ""))
                raise
    finally:
        if not failed:  # kept for the person reading the failure
            shutil.rmtree(workdir, ignore_errors=True)


def apply_objects(env: Any, objects: list[Any]) -> None:
    """Put a scenario's objects (lightkube) on the cluster's control plane (not synced)."""
    env_nodes = {n.name for n in env.nodes}
    for o in objects:
        d = o.to_dict()
        if d.get("kind") == "Node":
            addrs = (d.get("status") or {}).get("addresses") or []
            if d["metadata"]["name"] not in env_nodes or not addrs:
                continue  # the harness's own Node object says the same, with addresses
        env.controlplane.put(d)


class _Runner:
    def __init__(self, sc: Scenario, env: Any, timing: Any, spec: ProxierSpec | None = None,
                 label: str = "") -> None:
        self.sc, self.env, self.timing = sc, env, timing
        self.spec, self.label = spec, label
        self.topo = env.topology
        self.results: list[FlowResult] = []
        self.by_name: dict[str, FlowResult] = {}
        self.current: Step | None = None
        #: kept TCP connections by name: (socket, the echo server's greeting)
        self.conns: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        self._listen()

    def _listen(self) -> None:
        """``topology.listeners``: the echo server in a node's own namespace."""
        from types import SimpleNamespace

        echo = self.topo.echo
        for ln in self.sc.listeners:
            node = self.topo.nodes[ln.node]
            echo.add_pod(SimpleNamespace(name=ln.name, netns=node.netns, addresses=[node.ip],
                                         ports=[(ln.port, ln.protocol.lower())]))

    def close(self) -> None:
        for socks in self.conns.values():
            for sock, _ in socks:
                sock.close()
        self.conns.clear()

    def apply(self, objects: list[Any]) -> None:
        apply_objects(self.env, objects)

    def step(self, st: Step) -> None:
        if st.kind == "apply":
            with self._traffic(st):
                self.apply(st.objects)
                self.env.sync()
                if st.traffic is not None:
                    self.timing.wait_idle(st.traffic.after)  # the stream flows on meanwhile
        elif st.kind == "delete":
            for kind, ns, name in st.deletes:
                self.env.controlplane.remove(kind, ns, name)
            self.env.sync()
        elif st.kind == "restart_proxier":
            with self._traffic(st):
                for node in (self.env.proxiers if st.node == "all" else [st.node]):
                    self.env.restart_proxier(node)
                self.env.sync()  # a new generation the restarted proxier must apply
                if st.traffic is not None:
                    self.timing.wait_idle(st.traffic.after)  # the stream flows on meanwhile
        elif st.kind == "wait":
            self.timing.wait_idle(st.seconds)
        else:
            for f in st.flows:  # every flow of the step, failing or not
                r = self.flow(f, st)
                self.results.append(r)
                self.by_name[f.name] = r

    @contextlib.contextmanager
    def _traffic(self, st: Step) -> Any:
        """A step's ``traffic``: UDP datagrams from one source port, sent on a thread for
        as long as the step runs (replies are read and dropped)."""
        t = st.traffic
        if t is None:
            yield
            return
        host = self.topo.hosts[t.src]
        dst = self.topo.nodes[t.to].ip if t.to in self.topo.nodes else t.to
        sock = host.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", t.sport))
        sock.setblocking(False)
        stop = threading.Event()

        def send() -> None:
            while True:
                with contextlib.suppress(OSError):
                    sock.sendto(b"traffic through the step\n", (dst, t.port))
                with contextlib.suppress(OSError):
                    while sock.recv(2048):
                        pass
                if stop.wait(t.every):
                    return

        sender = threading.Thread(target=send, name=f"traffic-{t.src}-{t.sport}", daemon=True)
        sender.start()
        # the stream is already flowing when the step acts
        self.timing.wait_idle(TRAFFIC_LEAD_S)
        try:
            yield
        finally:
            stop.set()
            sender.join(timeout=5)
            sock.close()

    def run_steps(self, steps: list[Step]) -> None:
        """Every step in order; after a step with failing flows, stop only when a later
        flow depends on a failed one (``flowcheck.dependent_flows``: the same source port,
        the same connection); the flows left are reported as not run."""
        for i, st in enumerate(steps):
            self.current = st
            self.step(st)
            failed = [r.flow for r in self.results if r.outcome == "failed"]
            later = [(s, f) for s in steps[i + 1:] for f in s.flows]
            deps = dependent_flows(failed, [f for _, f in later])
            if deps:
                why = (f"not run: depends on failed flow(s) {sorted({d.name for d in deps})} "
                       "(the same source port)")
                self.results += [FlowResult(f, s.name, not_run=why) for s, f in later]
                return
        self.current = None

    def flow_records(self) -> list[dict[str, Any]]:
        done = {id(r.flow) for r in self.results}
        # a step that raised (the proxier did not sync) leaves its flows and later ones unrun
        rest = [FlowResult(f, s.name, not_run="not run: the scenario stopped before it")
                for s in self.sc.all_steps() for f in s.flows if id(f) not in done]
        return [r.to_dict() for r in [*self.results, *rest]]

    def raise_failures(self) -> None:
        bad = [r for r in self.results if r.outcome == "failed"]
        if not bad:
            return
        steps = {s.name: s for s in self.sc.all_steps()}
        parts = [r.error or self._fail(r, steps.get(r.step)) for r in bad]
        head = (f"{len(bad)} of {len(self.results)} flows failed: "
                + ", ".join(repr(r.flow.name) for r in bad))
        skipped = [r for r in self.results if r.outcome == "not run"]
        if skipped:
            head += f"; {len(skipped)} not run ({skipped[0].not_run})"
        raise ScenarioFailure(head + "\n\n" + "\n\n".join(parts))

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

    def flow(self, f: Flow, st: Step) -> FlowResult:
        """Send a flow's probes (``harness.flowcheck.probe_plan``) and judge them
        (``flow_verdicts``: every key the flow sets)."""

        result = FlowResult(f, st.name)
        missing = [c for c in f.requires if self.spec is not None and not self.spec.has(c)]
        if f.protocol == "SCTP" and not sctp_sockets():
            result.skipped = NO_SCTP
            return result
        if missing:
            result.skipped = (f"skipped: proxier {self.spec.name!r} does not declare "  # type: ignore[union-attr]
                              f"{', '.join(missing)}")
            return result
        result.gap = f.known_gaps.get(self.label)
        try:
            host, source = self._host(f)
        except ScenarioFailure as e:
            result.error = str(e)
            return result
        ctx = self._context(f, host, source)
        if f.http is not None or f.connection:
            if f.http is not None:
                result.verdicts = self._http(f, host, ctx)
            else:
                obs, injected = self._connection(f, host, ctx)
                ctx = replace(ctx, injected=injected)
                result.verdicts = flow_verdicts(f, obs, ctx)
                result.obs = obs
            return self._stale_gap(result)
        result = self._probe_flow(f, result, host, ctx)
        return self._stale_gap(result)

    def _stale_gap(self, result: FlowResult) -> FlowResult:
        """A flow listed as a known gap of this proxier that passes: the entry is stale
        (strict, as a scenario's own known_gaps)."""
        if result.gap is not None and result.outcome == "failed":
            result.error = (f"flow is listed as a known gap of proxier {self.label!r} "
                            f"({result.gap}) but passed: remove its known_gap entry")
            result.gap = None
        return result

    def _probe_flow(self, f: Flow, result: FlowResult, host: Any, ctx: FlowContext) -> FlowResult:
        from harness.traffic.probe import probe

        # silence is the expected answer (drop), or an acceptable one (untouched)
        silence = isinstance(f.expect, str) and f.expect in ("drop", "untouched")
        kw: dict[str, Any] = {"timeout": self.timing.silence_s} if silence else {}

        def attempt() -> list[Any]:
            obs: list[Any] = []
            for call in probe_plan(f, ctx):
                if call.wait_before:
                    self.timing.wait_idle(call.wait_before)  # the pause is the behaviour under test
                obs += probe(host, ctx.dst, f.port, f.protocol.lower(), count=call.count,
                             source=call.source, sport=call.sport, parallel=call.parallel, **kw)
            return obs

        obs = attempt()
        result.verdicts = flow_verdicts(f, obs, ctx)
        if _follows_udp_socket(f) and result.failed_verdicts:
            # A proxier clears stale UDP conntrack entries just after writing the rules that
            # the harness saw applied (kube-proxy does it at the end of its sync), so a socket
            # that must move is given the conformance checks' bounded wait for that cleanup.
            deadline = time.monotonic() + self.timing.positive_s
            while result.failed_verdicts and time.monotonic() < deadline:
                time.sleep(self.timing.poll)
                obs = attempt()
                result.verdicts = flow_verdicts(f, obs, ctx)
        result.obs = obs
        return result

    def _http(self, f: Flow, host: Any, ctx: FlowContext) -> list[Any]:
        """GETs of an ``expect: {http: STATUS}`` flow. kube-proxy updates its health server
        just after writing the rules the harness saw applied, so a wrong status is asked
        again until ``timing.positive_s`` (the conformance check's bounded wait)."""
        def attempt() -> list[Any]:
            return [host.call(_http_get, ctx.dst, f.port, call.source, self.timing.positive_s)
                    for call in probe_plan(f, ctx) for _ in range(call.count)]

        verdicts = flow_verdicts(f, attempt(), ctx)
        deadline = time.monotonic() + self.timing.positive_s
        while any(not v.passed for v in verdicts) and time.monotonic() < deadline:
            time.sleep(self.timing.poll)
            verdicts = flow_verdicts(f, attempt(), ctx)
        return verdicts

    def _connection(self, f: Flow, host: Any, ctx: FlowContext) -> tuple[list[Any], tuple[int, tuple[str, ...]]]:
        """A ``connection`` flow: the first opens ``count`` TCP connections and records
        who greeted each; every flow of the connection (after an ``inject``, if any) sends
        a line on each and expects it echoed by the same pod."""
        from harness.traffic.echo import read_greeting, read_line
        from harness.traffic.probe import Observation

        obs: list[Any] = []
        if f.opens:
            socks = self.conns.setdefault(f.connection, [])  # type: ignore[arg-type]
            for call in probe_plan(f, ctx):
                for _ in range(call.count):
                    sock = host.socket(socket.AF_INET6 if ":" in ctx.dst else socket.AF_INET)
                    sock.settimeout(self.timing.positive_s)
                    try:
                        if call.source:
                            sock.bind((call.source, 0))
                        sock.connect((ctx.dst, f.port))
                        hello = read_greeting(sock, self.timing.positive_s)
                    except (OSError, ValueError) as e:
                        src, sport = (sock.getsockname()[:2] if sock.fileno() >= 0 else ("?", 0))
                        sock.close()
                        obs.append(Observation(_os_outcome(e), str(src), int(sport), ctx.dst,
                                               f.port, "tcp", error=f"{type(e).__name__}: {e}"))
                        continue
                    socks.append((sock, hello))
        socks = self.conns.get(f.connection, [])  # type: ignore[arg-type]
        injected: tuple[int, tuple[str, ...]] = (0, ())
        if f.inject:
            injected = self._inject(f, host, socks)
        if f.opens and not f.inject:
            return obs + [_greeting_obs(s, h, ctx.dst, f.port) for s, h in socks], injected
        for i, (sock, hello) in enumerate(socks):
            src, sport = sock.getsockname()[:2]
            line = f"{f.name} #{i}\n".encode()
            try:
                sock.sendall(line)
                got = read_line(sock, self.timing.positive_s)
                if line.strip() not in got:
                    raise ValueError(f"echoed {got!r}")
                obs.append(_greeting_obs(sock, hello, ctx.dst, f.port))
            except (OSError, ValueError) as e:
                obs.append(Observation(_os_outcome(e), str(src), int(sport), ctx.dst, f.port,
                                       "tcp", error=f"{type(e).__name__}: {e}"))
        return obs, injected

    def _inject(self, f: Flow, host: Any, socks: list[tuple[Any, dict[str, Any]]]) -> tuple[int, tuple[str, ...]]:
        """An out-of-window segment from each connection's endpoint (its own address and
        port, a sequence number far beyond the client's window) while the client's
        interface is watched: conntrack calls it INVALID and kube-proxy drops it
        (kubernetes#74839); un-NATed, it reaches the client, whose RST kills the connection."""
        from scapy.layers.inet import TCP

        from harness.traffic.echo import read_line
        from harness.traffic.probe import ip_header, ip_layer, send_crafted, sniff_in

        sent, leaked = 0, []
        for i, (sock, hello) in enumerate(socks):
            pod = self.topo.pods.get(hello.get("pod"))
            if pod is None:
                continue
            port = int(hello.get("port") or 0)
            sport = int(hello["sport"])
            with sniff_in(pod) as at_pod:
                try:
                    sock.sendall(f"before {i}\n".encode())
                    read_line(sock, self.timing.positive_s)
                except OSError:
                    continue  # the outcome verdict reports the broken connection
                mine = [p for p in at_pod.packets(wait=self.timing.silence_s)
                        if TCP in p and ip_layer(p) is not None and ip_layer(p).src == pod.ip
                        and p[TCP].dport == sport]
            if not mine:
                continue
            last = mine[-1][TCP]
            nxt = last.seq + len(bytes(last.payload))
            segment = (ip_header(pod.ip, hello["src"])
                       / TCP(sport=port, dport=sport, flags="PA", seq=(nxt + OUT_OF_WINDOW) % (1 << 32),
                             ack=last.ack, window=502) / b"out of window\n")
            with sniff_in(host) as at_client:
                send_crafted(pod, segment)
                sent += 1
                leaked += [f"{ip_layer(p).src}:{p[TCP].sport} -> {ip_layer(p).dst}:{p[TCP].dport} "
                           f"seq={p[TCP].seq}" for p in at_client.packets(wait=self.timing.silence_s)
                           if TCP in p and ip_layer(p) is not None and ip_layer(p).src == pod.ip]
        return sent, tuple(leaked)

    def _context(self, f: Flow, host: Any, source: str | None) -> FlowContext:
        dst = self._dst(f)
        expected_pods = (tuple(endpoint_pod(self.sc.topology, e) for e in f.expect)
                         if isinstance(f.expect, list) else ())
        nodes = frozenset(a for n in self.env.nodes for a in (*n.addresses, n.pod_gateway) if a)
        own = frozenset(p.name for p in self.topo.pods.values() if p.ip == dst)
        own |= {ln.name for ln in self.sc.listeners if dst in self.topo.nodes[ln.node].addresses}
        related: dict[str, set[str]] = {}
        if f.endpoint_of and f.endpoint_of[0] in self.by_name:
            for o in self.by_name[f.endpoint_of[0]].obs:
                if o.pod is not None:
                    related.setdefault(str(o.src), set()).add(o.pod)
        # without a source address the kernel picks one of the host's, or loopback
        srcs = (source,) if source else (*host.addresses, getattr(host, "pod_gateway", ""),
                                         "127.0.0.1", "::1")
        return FlowContext(dst, tuple(a for a in srcs if a), expected_pods, nodes, own,
                           tuple((a, frozenset(p)) for a, p in related.items()))

    def _fail(self, r: FlowResult, st: Step | None) -> str:
        what = r.error or "\n".join(v.explain() for v in r.failed_verdicts)
        return self._msg(r.flow, what, st)

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
    g.addoption("--known-bugs", choices=("xfail", "fail"), default="xfail",
                help="a kube-proxy bug reproduction run against a kube-proxy release its "
                     "history says predates the fix: 'xfail' (default; strict, so a release "
                     "that does not reproduce it fails the run) or 'fail' (the raw outcome: "
                     "what 'run.sh bugs' and the history self-test want)")
    g.addoption("--save-scenario", default=None, metavar="DIR",
                help="when a check using the 'cluster' fixture fails, write its Services, "
                     "EndpointSlices, Nodes, hosts and probes to DIR/<test>.yaml as a scenario "
                     "file (its flows record what was observed: edit 'expect' to what must happen)")


_RECORD = pytest.StashKey[list[ProbeRecord]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    if not item.config.getoption("save_scenario", None) or "cluster" not in getattr(item, "fixturenames", ()):
        return (yield)
    with recording() as log:  # every probe the check sends, for the saved flows
        item.stash[_RECORD] = log
        return (yield)


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


def save_scenario(item: pytest.Item, env: Any, record: list[ProbeRecord], report: Any,
                  out_dir: Path) -> tuple[Path, str]:
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
    for r in record:
        key = (r.host, r.dst, r.dport, r.proto, r.source, r.sport)
        groups.setdefault(key, []).extend(r.observations)
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
