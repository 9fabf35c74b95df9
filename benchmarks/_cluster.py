"""What the proxier measurements share (root): a cluster of network namespaces with any
proxier on every node, bulk Services, convergence observed by probes, process cost.

* ``BenchCluster``: ``harness.topology.netns.Topology`` + ``harness.cluster.ClusterEnv``
  (the same life cycle the tests use), with N bulk Services x E endpoints published
  straight into the control plane. Bulk endpoints are the addresses of a few real pods,
  shared by every bulk Service (each Service still gets its own endpoint chains or map
  elements: the ruleset is that of N x E distinct endpoints), so any bulk Service can be
  probed. Everything lives in the run's namespaces; ``close`` stops every proxier and
  removes every namespace, also after Ctrl-C or SIGTERM (``install_signal_handlers``).
* ``await_state``: from a published generation to the moment a node forwards as the
  new state says, observed by probes from that node (never by the proxier's word):
  ``reply`` (a created Service answers), ``silent`` (a deleted one no longer does),
  ``sees`` (an added endpoint answers), ``not_sees`` (a removed endpoint no longer does).
* ``ProcessCost``: CPU seconds (utime+stime of the process and its waited-for children,
  from /proc/<pid>/stat, plus any live descendants) and memory (VmHWM of the process; peak
  RSS of the whole process tree, sampled every 50 ms).

Proxiers run without their ``acks`` capability: the harness then waits on its sentinel
Service like it does for kube-proxy, so every proxier is timed the same way.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import ipaddress
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import model  # noqa: E402
from harness.cluster import ClusterEnv, ServiceHandle  # noqa: E402
from harness.model import EndpointSpec, PortSpec, ServiceSpecIn, SliceSpec  # noqa: E402
from harness.options import ClusterOptions  # noqa: E402
from harness.proxiers import ProxierSpec, resolve  # noqa: E402
from harness.timing import Timing  # noqa: E402
from harness.topology.netns import Topology  # noqa: E402
from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec  # noqa: E402
from harness.traffic.probe import Outcome, probe  # noqa: E402

BULK_NAMESPACE = "bulk"
#: bulk ClusterIPs start here (10.96.64.0): clear of the harness's allocations (10.96.1.1 on)
BULK_IP_OFFSET = 64 * 256
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg: str) -> None:
    print(msg, flush=True)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def environment() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    return {"kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "iptables": version(["iptables", "--version"]),
            "nft": version(["nft", "--version"]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg_start": loadavg()}


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP end the run like Ctrl-C: every ``finally`` runs, so proxiers are
    stopped and namespaces removed."""
    main_pid = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:
            # a forked helper (pyroute2 forks one to open a socket in a namespace) must
            # die as it would by default, never unwind into the parent's code
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("needs root: network namespaces and netfilter (sudo .venv/bin/python ...)")


# ------------------------------------------------------------------------ proxier choice


def add_proxier_args(ap: argparse.ArgumentParser, many: bool = False) -> None:
    if many:
        ap.add_argument("--proxiers", default=None,
                        help="comma list of proxiers (reference, reference-nft, kube-proxy, "
                             "kube-proxy-nft, or NAME=COMMAND for a --proxier-cmd)")
    else:
        ap.add_argument("--proxier", default="reference",
                        help="reference|reference-nft|kube-proxy|kube-proxy-nft")
        ap.add_argument("--proxier-cmd", default=None, help="any proxier command (placeholders "
                        "as for pytest --proxier-cmd)")
        ap.add_argument("--proxier-capabilities", default=None)
    ap.add_argument("--kube-proxy-version", default=None)
    ap.add_argument("--iptables", default="legacy", choices=["nft", "legacy"],
                    help="iptables flavour for iptables-mode proxiers (default legacy)")
    ap.add_argument("--control-plane", default="api", choices=["api", "statedir"],
                    help="default api: kube-proxy needs it, and every proxier then reads "
                         "the same watches")


def proxier_spec(name: str | None = None, command: str | None = None,
                 capabilities: str | None = None, kube_proxy_version: str | None = None
                 ) -> ProxierSpec:
    """A proxier as ``--proxier``/``--proxier-cmd`` choose it, without ``acks``: every
    proxier is then waited for by probing the harness's sentinel Service."""
    if name and "=" in name and not command:
        name, _, command = name.partition("=")
    spec = resolve(name, command, capabilities, kube_proxy_version=kube_proxy_version)
    return spec.with_capabilities(spec.capabilities - {"acks"})


def spec_label(spec: ProxierSpec, iptables: str) -> str:
    flavour = "nftables" if spec.netfilter == "nftables" else f"iptables-{iptables}"
    return f"{spec.name} ({flavour})"


# --------------------------------------------------------------------------- the cluster


@dataclass
class BenchCluster:
    """A running cluster for one proxier. Use as a context manager."""

    spec: ProxierSpec
    iptables: str = "legacy"
    control_plane: str = "api"
    nodes: int = 2
    #: real pods whose addresses every bulk Service uses as its endpoints
    bulk_pods: int = 10
    per_service: int = 10
    #: multiplies the harness's timeouts (first sync: 30 s x this, later syncs: 10 s x this)
    timeout_scale: float = 60.0
    timing: Timing | None = None
    workdir: Path | None = None
    topo: Topology | None = None
    env: ClusterEnv | None = None
    bulk: int = 0
    pods: list[Any] = field(default_factory=list)

    def __enter__(self) -> BenchCluster:
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="svcconf-bench-"))
        tspec = TopologySpec(nodes=[NodeSpec(f"node{i + 1}") for i in range(self.nodes)],
                             clients=[ClientSpec("client")])
        options = ClusterOptions(iptables=self.iptables, control_plane=self.control_plane,
                                 nodes=self.nodes, timeout_scale=self.timeout_scale)
        self.timing = options.timing()
        self.topo = Topology(tspec, timing=self.timing)
        try:
            self.topo.start()
            self.env = ClusterEnv(self.topo, self.spec, self.workdir, options)
            node_names = [n.name for n in self.env.nodes]
            self.pods = [self.topo.add_pod(f"bulk{i}", node_names[i % len(node_names)],
                                           ports=[(8080, "tcp")])
                         for i in range(self.bulk_pods)]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.env is not None:
                self.env.stop()
        finally:
            if self.topo is not None:
                self.topo.close()
            # the state and the proxiers' logs: kept with SVCCONF_BENCH_KEEP=1
            if self.workdir is not None and self.workdir.name.startswith("svcconf-bench-"):
                if os.environ.get("SVCCONF_BENCH_KEEP"):
                    log(f"kept {self.workdir} (state, proxier and API server logs)")
                else:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    # -- bulk Services ---------------------------------------------------------------
    def bulk_ip(self, i: int) -> str:
        net = ipaddress.ip_network(self.topo.spec.service_cidr)
        return str(net.network_address + BULK_IP_OFFSET + i)

    def put_bulk(self, total: int) -> None:
        """Grow the bulk to ``total`` Services (not published: ``publish``/``start``)."""
        assert self.env is not None
        if total <= self.bulk:
            return
        svc_t = model.service_object(ServiceSpecIn("t", BULK_NAMESPACE, [PortSpec(80, 8080, "TCP", "http")],
                                                   cluster_ip=self.bulk_ip(0)))
        eps = [EndpointSpec(ip=p.ip, node=p.node.name, pod=p.name) for p in self.pods]
        eps = [eps[j % len(eps)] for j in range(self.per_service)]
        slice_t = model.endpoint_slice_object("t", BULK_NAMESPACE, SliceSpec(
            name="t", endpoints=eps, ports=[("http", 8080, "TCP")]))
        objs = []
        for i in range(self.bulk, total):
            name = f"b{i}"
            s = copy.deepcopy(svc_t)
            s["metadata"]["name"] = name
            s["spec"]["clusterIP"] = self.bulk_ip(i)
            s["spec"]["clusterIPs"] = [self.bulk_ip(i)]
            es = copy.deepcopy(slice_t)
            es["metadata"]["name"] = f"{name}-s"
            es["metadata"]["labels"][model.SERVICE_NAME_LABEL] = name
            objs += [s, es]
        self.env.controlplane.put(*objs)
        self.bulk = total

    def start(self) -> float:
        """Start the proxiers on the published state; seconds from their start to the
        state applied on every node (sentinel probing)."""
        assert self.env is not None
        self.env.start()
        assert self.env.last_sync_seconds is not None
        return self.env.last_sync_seconds

    def sync(self) -> float:
        assert self.env is not None
        self.env.sync()
        assert self.env.last_sync_seconds is not None
        return self.env.last_sync_seconds

    def publish(self) -> tuple[int, float]:
        """Publish the current objects (no sentinel move); (generation, monotonic time)."""
        assert self.env is not None
        gen = self.env.controlplane.publish()
        return gen, self.env.controlplane.published_at[gen]

    def pids(self) -> dict[str, int]:
        assert self.env is not None
        return {n: p.pid for n, p in self.env.proxiers.items() if p.pid}

    def bulk_ips(self) -> list[str]:
        return [self.bulk_ip(i) for i in range(self.bulk)]


# -------------------------------------------------------------- convergence by probing


@dataclass
class Awaited:
    """How long after ``t_pub`` one node first forwarded as the new state says."""

    node: str
    seconds: float | None
    probes: int
    error: str | None = None


def await_state(host: Any, ip: str, port: int, kind: str, t_pub: float, *,
                pod: str | None = None, timeout: float = 120.0, probe_timeout: float = 0.05,
                burst: int = 8, quiet_runs: int = 3, clean_probes: int = 24,
                gap: float = 0.02) -> Awaited:
    """Probe ``ip:port`` from ``host`` until it forwards as ``kind`` says; the time is that
    of the first burst of the run that proved it (so the resolution is one burst: at most
    ``probe_timeout`` plus ``gap``).

    ``reply``: any REPLY. ``silent``: ``quiet_runs`` bursts in a row without a REPLY.
    ``sees``: ``pod`` answers. ``not_sees``: ``clean_probes`` replies in a row, none from
    ``pod`` (2**-24 for a Service still sending half its connections there).
    """
    deadline = t_pub + timeout
    sent = 0
    run_start: float | None = None
    run_count = 0
    n = 1 if kind in ("reply", "silent") else burst
    while True:
        t = time.monotonic()
        if t > deadline:
            return Awaited(host.name, None, sent, f"not {kind} {pod or ''} within {timeout:.0f} s")
        obs = probe(host, ip, port, "tcp", count=n, parallel=n, timeout=probe_timeout,
                    icmp_capture=False)
        sent += n
        replies = [o for o in obs if o.outcome is Outcome.REPLY]
        if kind == "reply":
            if replies:
                return Awaited(host.name, t - t_pub, sent)
        elif kind == "sees":
            if any(o.pod == pod for o in replies):
                return Awaited(host.name, t - t_pub, sent)
        elif kind == "silent":
            if replies:
                run_start, run_count = None, 0
            else:
                run_start = t if run_start is None else run_start
                run_count += 1
                if run_count >= quiet_runs:
                    return Awaited(host.name, run_start - t_pub, sent)
        elif kind == "not_sees":
            if any(o.pod == pod for o in replies):
                run_start, run_count = None, 0
            elif replies:
                run_start = t if run_start is None else run_start
                run_count += len(replies)
                if run_count >= clean_probes:
                    return Awaited(host.name, run_start - t_pub, sent)
        else:
            raise ValueError(kind)
        time.sleep(gap)


def await_all(hosts: list[Any], ip: str, port: int, kind: str, t_pub: float,
              **kw: Any) -> list[Awaited]:
    """``await_state`` on every host at once (one thread each)."""
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        futs = [pool.submit(await_state, h, ip, port, kind, t_pub, **kw) for h in hosts]
        return [f.result() for f in futs]


# ------------------------------------------------------------------------ process cost


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """utime+stime+cutime+cstime of ``pid`` and of its live descendants (children that
    ended and were waited for are in cutime/cstime already)."""
    total = 0
    for p in tree(pid):
        f = _stat(p)
        if f is None:
            continue
        # fields after the comm: state=0 ... utime=11 stime=12 cutime=13 cstime=14
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_rss_kb(pid: int) -> int:
    total = 0
    for p in tree(pid):
        f = _stat(p)
        if f is not None:
            total += int(f[21]) * PAGE_KB  # rss (pages) is field 24, the 22nd after comm
    return total


class PeakSampler:
    """Peak RSS of each process tree, sampled every ``interval`` seconds on a thread;
    ``pids`` is a callable (processes may start after the sampler)."""

    def __init__(self, pids: Any, interval: float = 0.05) -> None:
        self.pids = pids
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-rss")
        self.interval = interval

    def _run(self) -> None:
        while not self._stop.is_set():
            for n, pid in self.pids().items():
                self.peak[n] = max(self.peak.get(n, 0), tree_rss_kb(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------- statistics


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), linear interpolation."""
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float], digits: int = 4) -> dict[str, Any]:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": round(statistics.median(xs), digits),
            "p95": round(pct(xs, 0.95), digits), "max": round(max(xs), digits),
            "min": round(min(xs), digits), "mean": round(statistics.fmean(xs), digits)}


def bootstrap_ci(values: list[float], stat: Any = statistics.median, level: float = 0.95,
                 n: int = 2000, seed: int = 1) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values``."""
    if len(values) < 2:
        v = values[0] if values else math.nan
        return v, v
    rng = random.Random(seed)
    boots = sorted(stat(rng.choices(values, k=len(values))) for _ in range(n))
    a = (1 - level) / 2
    return boots[int(a * n)], boots[min(n - 1, int((1 - a) * n))]


def emit(result: dict[str, Any], out: str | None) -> None:
    """Write ``result`` to ``out`` (if given) and print it as the last line."""
    result.setdefault("environment", {})["loadavg_end"] = loadavg()
    text = json.dumps(result, sort_keys=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text, flush=True)


__all__ = ["BenchCluster", "ServiceHandle", "replace", "proxier_spec"]
