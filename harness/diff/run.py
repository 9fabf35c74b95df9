"""One scenario document on one proxier: every flow's outcome (needs root).

The cluster is the scenario runner's (``harness.lifecycle.running_cluster`` with the run's
``ClusterOptions``, the document's topology, its objects published and synced); each flow
sends enough probes to see every endpoint of its Service (``outcome.probe_count``).
Nothing is judged here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.controlplane.statedir import SyncTimeout
from harness.diff.facts import candidates
from harness.diff.generate import document_text
from harness.diff.outcome import FlowOutcome, outcome_of, probe_count
from harness.lifecycle import ClusterStartFailed, running_cluster
from harness.options import ClusterOptions
from harness.proxiers.process import ProxierCrashed
from harness.scenario import parse_scenario
from harness.scenario_plugin import apply_objects
from harness.traffic.probe import probe


@dataclass
class CaseRun:
    """One proxier's outcomes for one document (``error``: it never got that far)."""

    outcomes: dict[str, FlowOutcome] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def host_namer(env: Any) -> Any:
    """address -> the name of the host owning it (a node's pod gateway is the node's)."""
    names: dict[str, str] = {}
    for h in env.topology.hosts.values():
        for a in h.addresses:
            names[str(a)] = h.name
    for n in env.nodes:
        if n.pod_gateway:
            names[str(n.pod_gateway)] = f"{n.name} (pod gateway)"
    return lambda addr: names.get(str(addr), str(addr))


def run_flow(env: Any, doc: dict[str, Any], flow: dict[str, Any], name_of: Any) -> FlowOutcome:
    """Probe one flow: ``probe_count`` probes, in parallel, each waiting the harness's
    silence window (``harness.timing``). All of them even when the first meet silence: a
    flow answered only part of the time (asymmetric routes, one endpoint of three
    reachable) must not pass for a silent one."""
    topo = env.topology
    host = topo.hosts[flow["from"]]
    dst = topo.nodes[flow["to"]].ip if flow["to"] in topo.nodes else flow["to"]
    obs = probe(host, dst, flow["port"], flow.get("protocol", "TCP").lower(),
                count=probe_count(candidates(doc, flow)), timeout=env.timing.silence_s)
    return outcome_of(obs, name_of)


def run_case(doc: dict[str, Any], options: ClusterOptions) -> CaseRun:
    """``doc``'s cluster on ``options``' proxier; every flow's outcome, in order."""
    sc = parse_scenario(document_text(doc), "<generated>")
    spec = options.proxier_spec()
    workdir = Path(tempfile.mkdtemp(prefix="diff-"))
    run = CaseRun()
    t0 = time.monotonic()
    try:
        topo = options.apply_to(sc.topology, pod_network_pinned=sc.pod_network_pinned)
        with running_cluster(options, topo, workdir, proxier=spec) as env:
            apply_objects(env, sc.objects)
            try:
                env.sync()
            except (SyncTimeout, ProxierCrashed) as exc:
                run.error = f"did not apply the state: {exc}"
                return run
            name_of = host_namer(env)
            for flow in doc["flows"]:
                run.outcomes[flow["name"]] = run_flow(env, doc, flow, name_of)
    except ClusterStartFailed as exc:
        run.error = str(exc)
    finally:
        run.seconds = time.monotonic() - t0
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def options_for(name: str, base: ClusterOptions, command: str | None = None,
                capabilities: str | None = None) -> ClusterOptions:
    """``base`` with proxier ``name`` (of ``harness.proxiers``, or the label of
    ``command``, a ``--proxier-cmd`` with its ``capabilities``) as the proxier under test."""
    return replace(base, proxier=name, proxier_cmd=command, proxier_capabilities=capabilities)
