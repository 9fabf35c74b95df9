"""Probe-engine and harness-network benchmarks (root). Last line of output: one JSON object.

1. TCP probes per second through one DNAT rule: client -> 10.96.0.10:80, DNATed on the
   gateway node (iptables-nft PREROUTING, plus MASQUERADE) to a pod on the other node;
   the probe engine (parallel 1, 8, 32) side by side with a bare loop of blocking
   connects over the same path, interleaved in rounds, medians reported.
2. The echo server's design: one process serving N pods vs one interpreter per pod vs a
   thread in the caller (time until every pod listens; memory: RSS and PSS summed over the
   processes), and the probe rate with the echo in a process vs a thread of the prober.
3. Set-up time of the smoke topology: 2 nodes + 1 client + 3 pods, echo server included.

Usage: sudo .venv/bin/python benchmarks/probe_rate.py [--probes 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import struct
import time
from pathlib import Path

from harness.topology.netns import Topology
from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec
from harness.traffic.echo import EchoServer
from harness.traffic.probe import Outcome, probe

SVC_IP, SVC_PORT = "10.96.0.10", 80
LINGER0 = struct.pack("ii", 1, 0)


def spec() -> TopologySpec:
    return TopologySpec(nodes=[NodeSpec("node-a"), NodeSpec("node-b")],
                        clients=[ClientSpec("client")])


def bare_loop(dst: str, port: int, n: int, timeout: float) -> int:
    """Blocking connect, read the greeting line, close with RST (as the engine does)."""
    ok = 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((dst, port))
            buf = b""
            while b"\n" not in buf:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
            ok += b"\n" in buf
        finally:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            s.close()
    return ok


def bench_dnat(n: int, rounds: int) -> dict:
    with Topology(spec()) as topo:
        pod = topo.add_pod("backend", "node-b")
        gw = topo.nodes["node-a"]
        for rule in (
            ["-t", "nat", "-A", "PREROUTING", "-d", f"{SVC_IP}/32", "-p", "tcp", "--dport",
             str(SVC_PORT), "-j", "DNAT", "--to-destination", f"{pod.ip}:8080"],
            ["-t", "nat", "-A", "POSTROUTING", "-d", f"{pod.ip}/32", "-p", "tcp", "-j",
             "MASQUERADE"],
        ):
            gw.run(["iptables-nft", *rule], check=True)
        client = topo.clients["client"]
        [check] = probe(client, SVC_IP, SVC_PORT)
        assert check.outcome is Outcome.REPLY and check.seen_src == gw.lan_ip, str(check)
        t = topo.timing.positive_s
        client.call(bare_loop, SVC_IP, SVC_PORT, 200, t)  # warm-up
        rates: dict[str, list[float]] = {"bare": [], "engine_p1": [], "engine_p8": [],
                                         "engine_p32": []}
        for _ in range(rounds):
            t0 = time.perf_counter()
            ok = client.call(bare_loop, SVC_IP, SVC_PORT, n, t)
            rates["bare"].append(ok / (time.perf_counter() - t0))
            for par in (1, 8, 32):
                t0 = time.perf_counter()
                obs = probe(client, SVC_IP, SVC_PORT, count=n, parallel=par)
                dt = time.perf_counter() - t0
                good = sum(o.outcome is Outcome.REPLY for o in obs)
                assert good == n, f"{n - good} probes failed: {obs[0]}"
                rates[f"engine_p{par}"].append(good / dt)
        med = {k: round(statistics.median(v)) for k, v in rates.items()}
        return {
            "probes_per_round": n, "rounds": rounds, "median_per_s": med,
            "all_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
            "engine_p1_vs_bare": round(med["engine_p1"] / med["bare"], 3),
            "engine_p32_vs_bare": round(med["engine_p32"] / med["bare"], 3),
        }


def _mem_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def bench_echo(n_pods: int) -> dict:
    out: dict = {"pods": n_pods}
    with Topology(spec(), echo=False) as topo:
        pods = [topo.add_pod(f"p{i}", ["node-a", "node-b"][i % 2]) for i in range(n_pods)]
        # one process for all pods
        t0 = time.perf_counter()
        one = EchoServer(timing=topo.timing)
        for p in pods:
            one.add_pod(p)
        start_one = time.perf_counter() - t0
        rss, pss = _mem_kb(one.pid)
        out["one_process"] = {"startup_s": round(start_one, 3), "rss_kb": rss, "pss_kb": pss,
                              "processes": 1}
        one.close()
        # one interpreter per pod
        t0 = time.perf_counter()
        many = []
        for p in pods:
            e = EchoServer(timing=topo.timing)
            e.add_pod(p)
            many.append(e)
        start_many = time.perf_counter() - t0
        mems = [_mem_kb(e.pid) for e in many]
        out["process_per_pod"] = {"startup_s": round(start_many, 3),
                                  "rss_kb": sum(m[0] for m in mems),
                                  "pss_kb": sum(m[1] for m in mems), "processes": n_pods}
        for e in many:
            e.close()
        # a thread in this process: no start-up, no extra interpreter
        t0 = time.perf_counter()
        rss0 = _mem_kb(os.getpid())[0]
        th = EchoServer(timing=topo.timing, thread=True)
        for p in pods:
            th.add_pod(p)
        out["thread_in_caller"] = {"startup_s": round(time.perf_counter() - t0, 3),
                                   "rss_delta_kb": _mem_kb(os.getpid())[0] - rss0,
                                   "processes": 0}
        th.close()
        # adding one more pod to a running server (what a test pays for topo.add_pod's echo)
        one = EchoServer(timing=topo.timing)
        extra = topo.add_pod("extra", "node-a")
        t0 = time.perf_counter()
        one.add_pod(extra)
        out["add_pod_to_running_server_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        one.close()
    return out


def bench_echo_rate(n: int, rounds: int) -> dict:
    """Probe rate straight to a pod, echo served by a process vs a thread of the prober's
    own process (which then shares the GIL with the probe engine)."""
    rates: dict[str, list[float]] = {}
    with Topology(spec(), echo=False) as topo:
        pod = topo.add_pod("p", "node-b")
        client = topo.clients["client"]
        for _ in range(rounds):
            for mode in ("process", "thread"):
                echo = EchoServer(timing=topo.timing, thread=mode == "thread")
                try:
                    echo.add_pod(pod)
                    for par in (1, 32):
                        t0 = time.perf_counter()
                        obs = probe(client, pod.ip, 8080, count=n, parallel=par)
                        dt = time.perf_counter() - t0
                        good = sum(o.outcome is Outcome.REPLY for o in obs)
                        rates.setdefault(f"{mode}_p{par}", []).append(good / dt)
                finally:
                    echo.close()
    return {"probes_per_round": n, "rounds": rounds,
            "median_per_s": {k: round(statistics.median(v)) for k, v in rates.items()}}


def bench_setup(repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with Topology(spec()) as topo:
            topo.add_pod("p1", "node-a")
            topo.add_pod("p2", "node-b")
            topo.add_pod("p3", "node-b")
            up = time.perf_counter() - t0
        times.append((up, time.perf_counter() - t0 - up))
    return {"topology": "2 nodes + 1 client + 3 pods + echo server", "repeats": repeats,
            "setup_s_median": round(statistics.median(t[0] for t in times), 3),
            "teardown_s_median": round(statistics.median(t[1] for t in times), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--echo-pods", type=int, default=20)
    args = ap.parse_args()
    result = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "setup": bench_setup(5),
        "echo": bench_echo(args.echo_pods),
        "echo_rate_tcp": bench_echo_rate(args.probes, args.rounds),
        "dnat_tcp": bench_dnat(args.probes, args.rounds),
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
