"""The three control planes side by side: ``statedir``, ``api`` (the harness's own API
server) and ``kube-apiserver`` (real etcd + kube-apiserver in the lan namespace).

In one run, for each control plane:

- start-up: ``start(lan namespace, router address)`` of a fresh control plane in a 1-node
  topology (``--startups`` times; the state directory has nothing to start);
- publish-to-acknowledged latency: a 2-node ``ClusterEnv`` running the reference proxier
  (``acks``), one Service whose endpoints change ``--changes`` times; each sample is the
  time from the start of ``publish`` until every node has acknowledged it (for
  kube-apiserver this includes the progress markers ``wait_applied`` writes);
- the whole conformance suite, ``pytest conformance/ -n 2 --control-plane X`` as a child
  process (``--no-suite`` skips it): wall time and outcome counts.

Needs root; kube-apiserver needs the Go-built binaries (``python -m harness.kubebins build
v1.37.2 --component kube-apiserver,etcd``) and is left out, with the reason, without them.
Prints progress, then one JSON object on its last line. Usage::

    sudo .venv/bin/python benchmarks/control_planes.py [--startups 3] [--changes 40] [--no-suite]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLANES = ("statedir", "api", "kube-apiserver")


def _stats(xs: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float]:
    xs = sorted(x * scale for x in xs)
    if not xs:
        return {}
    return {"n": len(xs), "median": round(statistics.median(xs), digits),
            "p90": round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], digits),
            "min": round(xs[0], digits), "max": round(xs[-1], digits)}


def startup(plane: str, runs: int) -> dict:
    from harness.controlplane.apiserver import ApiControlPlane
    from harness.controlplane.kubeapiserver import KubeApiServerControlPlane
    from harness.topology.netns import Topology
    from harness.topology.spec import NodeSpec, TopologySpec

    times, parts = [], []
    for _ in range(runs):
        with Topology(TopologySpec(nodes=[NodeSpec("node1")], clients=[]), echo=False) as topo, \
                tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
            cp = (ApiControlPlane(Path(tmp) / "state", Path(tmp)) if plane == "api"
                  else KubeApiServerControlPlane.for_topology(Path(tmp), topo))
            t0 = time.monotonic()
            cp.start(topo.lan_netns, str(topo.resolved.router))
            times.append(time.monotonic() - t0)
            parts.append(getattr(cp, "startup_seconds", {}))
            cp.stop()
    out = {"seconds": _stats(times, digits=3)}
    if any(parts):
        out["kube_apiserver_parts_s"] = parts
    return out


def ack_latency(plane: str, changes: int) -> dict:
    from harness.cluster import ClusterEnv
    from harness.model import EndpointSpec
    from harness.options import ClusterOptions
    from harness.proxiers import reference
    from harness.topology.netns import Topology
    from harness.topology.spec import NodeSpec, TopologySpec

    spec = TopologySpec(nodes=[NodeSpec("node1"), NodeSpec("node2")], clients=[])
    samples, publish = [], []
    with Topology(spec, echo=False) as topo, tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
        env = ClusterEnv(topo, reference(), Path(tmp), ClusterOptions(control_plane=plane))
        try:
            t0 = time.monotonic()
            env.start()
            first_sync = time.monotonic() - t0
            svc = env.create_service([EndpointSpec(ip="10.244.1.10", node="node1")])
            for i in range(changes):
                eps = [EndpointSpec(ip=f"10.244.{1 + (i + k) % 2}.{10 + (i + k) % 50}",
                                    node=f"node{1 + (i + k) % 2}") for k in range(1 + i % 3)]
                svc.slices = env.slices_for(svc, eps)
                env.put_service(svc)
                t0 = time.monotonic()
                gen = env.controlplane.publish()
                t1 = time.monotonic()
                env.wait_synced(gen)
                samples.append(time.monotonic() - t0)
                publish.append(t1 - t0)
        finally:
            env.stop()
    return {"first_sync_s": round(first_sync, 2), "publish_to_ack_ms": _stats(samples, 1000),
            "publish_only_ms": _stats(publish, 1000)}


def suite(plane: str, workers: int) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/", "-q", "-p", "no:cacheprovider",
         "-n", str(workers), f"--control-plane={plane}"],
        cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed)", tail)}
    return {"wall_s": round(wall, 1), "exit": proc.returncode, **counts,
            "failed_tests": re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--startups", type=int, default=3)
    ap.add_argument("--changes", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-suite", action="store_true", help="skip the whole-suite runs")
    ap.add_argument("--planes", default=",".join(PLANES))
    args = ap.parse_args()
    from harness.controlplane.kubeapiserver import binaries_missing
    from harness.kubebins import DEFAULT_VERSION

    planes = [p.strip() for p in args.planes.split(",") if p.strip()]
    result: dict = {"benchmark": "control_planes", "kube_version": DEFAULT_VERSION,
                    "startup": {}, "ack_latency": {}, "suite": {}, "left_out": {}}
    missing = binaries_missing()
    if missing and "kube-apiserver" in planes:
        planes.remove("kube-apiserver")
        result["left_out"]["kube-apiserver"] = missing
    for plane in planes:
        if plane != "statedir":
            result["startup"][plane] = startup(plane, args.startups)
            print(f"{plane}: start-up {result['startup'][plane]['seconds']}", flush=True)
        result["ack_latency"][plane] = ack_latency(plane, args.changes)
        print(f"{plane}: publish to acknowledged {result['ack_latency'][plane]}", flush=True)
    if not args.no_suite:
        for plane in planes:
            result["suite"][plane] = suite(plane, args.workers)
            r = result["suite"][plane]
            print(f"{plane}: suite {r['wall_s']} s, exit {r['exit']}, {r.get('passed', 0)} passed, "
                  f"{r['failed_tests']}", flush=True)
    print(json.dumps(result))
    return 0 if all(r["exit"] == 0 for r in result["suite"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
