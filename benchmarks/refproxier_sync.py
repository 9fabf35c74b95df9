"""Sync cost of the reference proxier (iptables mode) at cluster scale (root).

For each size (Services x endpoints per Service; default 10,000 x 10 and 1,000 x 100,
``--quick``: 200 x 10 and 20 x 100) the objects are built with harness.model, published
as a state directory, and then, in one run:

* load: ``servicemodel.load.load_text`` of state.yaml (YAML -> lightkube objects), plus
  ``ClusterState.from_objects``; build: ``refproxier.proxystate.build_proxy_state``;
* render: ``refproxier.iptables.render`` (full sync; best of ``--render-rounds``);
* restore: the same text through ``iptables-legacy-restore -w --noflush --counters`` into an
  empty throwaway network namespace ``bench-<pid>`` (created here, deleted in a finally
  block; the root namespace is never touched), and through ``iptables-nft-restore`` where
  a prediction from the smaller sizes (superlinear) fits ``--nft-budget`` seconds; an extra
  ladder of smaller sizes (``--nft-sizes``) shows the growth. Skipped sizes are reported;
* partial sync at the largest N x 10 size: one endpoint of one Service changes; the daemon's
  path (load+build, ``changed_services``, ``iptables-save -t nat`` for the existing chains
  unless in large-cluster mode, render with ``changed``, restore) against a full resync
  over the same rules;
* daemon: ``python -m refproxier run`` in the namespace on that size's state dir, in
  iptables mode (legacy) and in nftables mode: time to ``applied/<node>``, peak RSS (VmHWM
  from /proc/<pid>/status), then the time from publishing a one-endpoint change to its
  generation applied (the whole state.yaml is reloaded: the state-dir contract).

Goals (issue 3): render <= 25% of the iptables-legacy-restore time of the same ruleset;
partial sync <= 10% of a full sync. Other times are single runs (sizes this large are slow).

Usage: sudo .venv/bin/python benchmarks/refproxier_sync.py [--quick] [--sizes 10000x10,1000x100]
       [--nft-sizes 500x10,1000x10,2000x10] [--nft-budget 60] [--no-daemon]
Progress goes to stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from harness.model import (  # noqa: E402
    EndpointSpec,
    PortSpec,
    ServiceSpecIn,
    SliceSpec,
    endpoint_slice_object,
    node_object,
    service_object,
)
from refproxier import iptables  # noqa: E402
from refproxier.config import ProxierConfig  # noqa: E402
from refproxier.memo import PortMemo  # noqa: E402
from refproxier.netfilter_exec import parse_save_chains  # noqa: E402
from refproxier.proxystate import build_proxy_state, changed_services  # noqa: E402
from servicemodel import load as sm_load  # noqa: E402
from servicemodel import statedir  # noqa: E402
from servicemodel.cluster import ClusterState  # noqa: E402

NODE = "node1"
NODE_IP = "192.0.2.1"
CLUSTER_CIDR = "10.128.0.0/9"
CFG = ProxierConfig(
    hostname=NODE, node_ips=(NODE_IP,), cluster_cidrs=(CLUSTER_CIDR,), iptables_mode="legacy"
)
NS = f"bench-{os.getpid()}"
LEGACY_RESTORE = ["iptables-legacy-restore", "-w", "--noflush", "--counters"]
NFT_RESTORE = ["iptables-nft-restore", "-w", "--noflush", "--counters"]
SVC_BASE = int(ipaddress.ip_address("10.96.0.1"))
EP_BASE = int(ipaddress.ip_address("10.128.0.0"))


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        n, _, e = part.partition("x")
        out.append((int(n), int(e or 10)))
    return out


def label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# --------------------------------------------------------------------------------------
# Objects and the state directory


def objects(n: int, per: int, moved: int | None = None) -> list[dict[str, Any]]:
    """A node, ``n`` ClusterIP Services (one TCP port) and one EndpointSlice each with
    ``per`` ready endpoints on another node. ``moved``: that Service's first endpoint has
    a new address (one endpoint change)."""
    out = [node_object(NODE, [NODE_IP])]
    for i in range(n):
        ns = f"ns{i // 100}"
        ip = str(ipaddress.ip_address(SVC_BASE + i))
        out.append(
            service_object(
                ServiceSpecIn(f"svc{i}", ns, [PortSpec(80, 8080, name="http")], cluster_ip=ip)
            )
        )
        eps = []
        for j in range(per):
            k = n * per + 1 if (i == moved and j == 0) else i * per + j
            eps.append(EndpointSpec(str(ipaddress.ip_address(EP_BASE + k)), node="node2"))
        out.append(
            endpoint_slice_object(
                f"svc{i}", ns, SliceSpec(f"svc{i}-x1", eps, [("http", 8080, "TCP")])
            )
        )
    return out


def write_state(state_dir: Path, objs: list[dict[str, Any]], generation: int) -> str:
    """statedir.write_state's document, dumped with libyaml when available (the pure
    dumper takes minutes at 10,000 Services; the text is the same kind of YAML)."""
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": str(generation)},
        "items": objs,
    }
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(doc, Dumper=dumper, sort_keys=False)
    statedir._atomic_write(statedir.state_path(state_dir), text)
    return text


def timed(f):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    v = f()
    return v, time.perf_counter() - t0


def load_build(text: str, generation: bool = True) -> tuple[Any, dict[str, float]]:
    t0 = time.perf_counter()
    objs = sm_load.load_text(text, source="state.yaml")
    cluster = ClusterState.from_objects(objs, generation=1)
    t1 = time.perf_counter()
    ps = build_proxy_state(cluster, CFG)
    t2 = time.perf_counter()
    del objs, cluster
    # The daemon also reads the generation from the same text (statedir.read_generation).
    if generation:
        statedir.read_generation(text)
    t3 = time.perf_counter()
    return ps, {"load_s": t1 - t0, "build_s": t2 - t1, "read_generation_s": t3 - t2}


# --------------------------------------------------------------------------------------
# The namespace


def sh(
    argv: list[str], input: str | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed ({p.returncode}): {p.stderr[:500]}")
    return p


def ns_reset() -> None:
    """A fresh, empty bench-<pid> namespace (no rules of either iptables flavour)."""
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
    sh(["ip", "netns", "add", NS])
    sh(["ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"])


def ns_delete() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)


def in_ns(argv: list[str], input: str | None = None, timeout: float = 1800) -> float:
    t0 = time.perf_counter()
    sh(["ip", "netns", "exec", NS, *argv], input=input, timeout=timeout)
    return time.perf_counter() - t0


def nat_chains() -> frozenset[str]:
    return frozenset(
        parse_save_chains(
            sh(["ip", "netns", "exec", NS, "iptables-legacy-save", "-t", "nat"]).stdout
        )
    )


# --------------------------------------------------------------------------------------
# Parts


def nft_restore(
    size: tuple[int, int], text: str, lines: int, done: dict[int, float], budget: float
) -> dict[str, Any]:
    """iptables-nft-restore of ``text``, unless the growth seen so far predicts more than
    ``budget`` seconds (then it is skipped, with the prediction)."""
    if done:
        # Fit t = a * lines^k on the two largest measured rulesets (k >= 1).
        pts = sorted(done.items())[-2:]
        if len(pts) == 2 and pts[1][0] > pts[0][0]:
            k = max(1.0, _log_ratio(pts[1][1], pts[0][1]) / _log_ratio(pts[1][0], pts[0][0]))
        else:
            k = 2.0
        base_lines, base_t = pts[-1]
        predicted = base_t * (lines / base_lines) ** k
        if predicted > budget and lines > base_lines:
            log(
                f"  nft: skipped {label(size)} (predicted {predicted:.0f} s > budget {budget:.0f} s)"
            )
            return {"skipped": True, "predicted_s": round(predicted, 1), "exponent": round(k, 2)}
    ns_reset()
    try:
        t = in_ns(NFT_RESTORE, input=text, timeout=budget * 1.5)
    except subprocess.TimeoutExpired:
        log(f"  nft: {label(size)} timed out after {budget * 1.5:.0f} s")
        return {"skipped": True, "timed_out_after_s": round(budget * 1.5, 1)}
    done[lines] = t
    log(f"  nft restore {label(size)}: {t:.2f} s")
    return {"restore_s": round(t, 3)}


def _log_ratio(a: float, b: float) -> float:
    import math

    return math.log(a / b)


def partial_sync(
    size: tuple[int, int], full_text: str, ps_old: Any, state_dir: Path
) -> dict[str, Any]:
    """One endpoint change, applied as the daemon applies it, against a full resync."""
    n, per = size
    ns_reset()
    in_ns(LEGACY_RESTORE, input=full_text)  # the rules of the previous generation
    new_text = write_state(state_dir, objects(n, per, moved=n // 2), 2)
    ps_new, lb = load_build(new_text, generation=False)
    changed, t_changed = timed(lambda: changed_services(ps_old, ps_new))
    # The daemon lists the nat table on a partial sync only outside large-cluster mode
    # (kube-proxy: once per sync period above 1,000 endpoints); here a second after the
    # full sync that last listed it.
    from refproxier.daemon import needs_chain_cleanup

    if needs_chain_cleanup(ps_new.total_endpoints, 0.0, 1.0, CFG.sync_period):
        chains, t_save = timed(nat_chains)
    else:
        chains, t_save = frozenset(), 0.0
    # The daemon's memo holds the previous generation's rules (its last render), so only
    # the changed Service is rendered again. The full resync below is rendered cold.
    memo: PortMemo = PortMemo()
    iptables.render(ps_old, CFG, memo=memo)
    part, t_render = timed(
        lambda: iptables.render(ps_new, CFG, changed=changed, existing_nat_chains=chains, memo=memo)
    )
    t_restore = in_ns(LEGACY_RESTORE, input=part)
    # The full resync of the same generation over the same rules (the daemon's full path).
    chains2, t_save_f = timed(nat_chains)
    full, t_render_f = timed(lambda: iptables.render(ps_new, CFG, existing_nat_chains=chains2))
    t_restore_f = in_ns(LEGACY_RESTORE, input=full)
    p_sync = t_changed + t_save + t_render + t_restore
    f_sync = t_save_f + t_render_f + t_restore_f
    res = {
        "changed_services": sorted(changed or ()),
        "load_s": round(lb["load_s"], 3),
        "build_s": round(lb["build_s"], 3),
        "partial": {
            "changed_s": round(t_changed, 3),
            "save_nat_s": round(t_save, 3),
            "render_s": round(t_render, 3),
            "restore_s": round(t_restore, 3),
            "lines": part.count("\n"),
            "sync_s": round(p_sync, 3),
        },
        "full": {
            "save_nat_s": round(t_save_f, 3),
            "render_s": round(t_render_f, 3),
            "restore_s": round(t_restore_f, 3),
            "lines": full.count("\n"),
            "sync_s": round(f_sync, 3),
        },
        "ratio_sync": round(p_sync / f_sync, 3),
        "ratio_with_load_build": round(
            (p_sync + lb["load_s"] + lb["build_s"]) / (f_sync + lb["load_s"] + lb["build_s"]), 3
        ),
    }
    log(
        f"  partial sync {label(size)}: {p_sync:.2f} s vs full resync {f_sync:.2f} s "
        f"(ratio {res['ratio_sync']}; with load+build {lb['load_s'] + lb['build_s']:.2f} s: {res['ratio_with_load_build']})"
    )
    return res


def _wait_applied(state_dir: Path, proc: subprocess.Popen, generation: int, t0: float, timeout: float) -> float | None:
    """Seconds from ``t0`` until the daemon reports ``generation`` applied (None: it did not)."""
    while time.perf_counter() - t0 < timeout and proc.poll() is None:
        if statedir.read_applied(state_dir, NODE) == generation:
            return time.perf_counter() - t0
        time.sleep(0.05)
    return None


def _vm_hwm_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
    return round(int(fields.get("VmHWM", "0 kB").split()[0]) / 1024, 1)


def daemon_run(state_dir: Path, size: tuple[int, int], timeout: float, mode: str,
               restart: bool = False) -> dict[str, Any]:
    """Start the daemon in the namespace on ``state_dir`` (generation 1 in state.yaml), in
    iptables mode (legacy) or nftables mode: time to generation 1 applied and peak RSS,
    then publish generation 2 (one endpoint moved) and time it until applied. The update
    includes what the state-dir contract costs: the daemon reloads the whole state.yaml.
    ``restart``: keep the namespace, so the daemon starts over the rules the previous run
    left (nftables: kube-proxy's full sync in place over the listed table)."""
    if not restart:
        ns_reset()
    applied = state_dir / statedir.APPLIED_DIR / NODE
    applied.unlink(missing_ok=True)
    argv = [
        "ip", "netns", "exec", NS, sys.executable, "-m", "refproxier", "run",
        "--state-dir", str(state_dir), "--hostname-override", NODE, "--node-ip", NODE_IP,
        "--cluster-cidr", CLUSTER_CIDR,
        *(("--proxy-mode", "nftables") if mode == "nftables" else ("--iptables", "legacy")),
    ]
    logf = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
    res: dict[str, Any] = {"mode": mode, "restart": restart, "applied": False}
    try:
        t_applied = _wait_applied(state_dir, proc, 1, t0, timeout)
        if t_applied is not None:
            res.update(applied=True, start_to_applied_s=round(t_applied, 2), vm_hwm_mib=_vm_hwm_mib(proc.pid))
            n, per = size
            write_state(state_dir, objects(n, per, moved=n // 2), 2)
            t1 = time.perf_counter()
            t_update = _wait_applied(state_dir, proc, 2, t1, timeout)
            res["update_to_applied_s"] = None if t_update is None else round(t_update, 2)
            if proc.poll() is None:
                res["vm_hwm_mib_after_update"] = _vm_hwm_mib(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logf.seek(0)
        tail = logf.read()[-1500:]
        logf.close()
        write_state(state_dir, objects(*size), 1)  # generation 1 again for the next run
    if not res["applied"] or res.get("update_to_applied_s") is None:
        log(f"  daemon ({mode}{', restarted' if restart else ''}) did not report a generation within {timeout:.0f} s; log tail:\n{tail}")
        res["log_tail"] = tail
        return res
    log(
        f"  daemon ({mode}{', restarted over its rules' if restart else ''}): generation 1 applied {res['start_to_applied_s']:.2f} s after start, peak RSS "
        f"{res['vm_hwm_mib']:.0f} MiB; one-endpoint update applied {res['update_to_applied_s']:.2f} s "
        "after publishing"
    )
    return res


# --------------------------------------------------------------------------------------


def bench_size(
    size: tuple[int, int],
    work: Path,
    nft_done: dict[int, float],
    args: argparse.Namespace,
    partial: bool,
    daemon: bool,
) -> dict[str, Any]:
    n, per = size
    log(f"{label(size)}: {n} Services x {per} endpoints")
    state_dir = work / label(size)
    t0 = time.perf_counter()
    objs = objects(n, per)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = write_state(state_dir, objs, 1)
    t_write = time.perf_counter() - t0
    del objs  # the daemon's and loader's memory is what is measured, not ours
    log(f"  objects {t_gen:.2f} s, state.yaml {len(text) / 1e6:.1f} MB written in {t_write:.2f} s")
    ps, lb = load_build(text)
    log(
        f"  load {lb['load_s']:.2f} s, build {lb['build_s']:.2f} s "
        f"(+ statedir.read_generation {lb['read_generation_s']:.2f} s in the daemon)"
    )
    # Best of --render-rounds: rendering is cheap next to a restore, and the best run is the
    # one least disturbed by whatever else the machine is doing.
    runs = [timed(lambda: iptables.render(ps, CFG)) for _ in range(args.render_rounds)]
    full, t_render = runs[0][0], min(t for _, t in runs)
    lines = full.count("\n")
    log(f"  render {t_render:.2f} s ({lines} lines)")
    res: dict[str, Any] = {
        "services": n,
        "endpoints_per_service": per,
        "state_yaml_bytes": len(text),
        "load_s": round(lb["load_s"], 3),
        "build_s": round(lb["build_s"], 3),
        "read_generation_s": round(lb["read_generation_s"], 3),
        "render_s": round(t_render, 3),
        "lines": lines,
    }
    ns_reset()
    t_legacy = in_ns(LEGACY_RESTORE, input=full)
    res["legacy_restore_s"] = round(t_legacy, 3)
    res["render_over_legacy_restore"] = round(t_render / t_legacy, 3)
    log(
        f"  iptables-legacy-restore {t_legacy:.2f} s; render/restore = {t_render / t_legacy:.2f} (goal <= 0.25)"
    )
    res["nft"] = nft_restore(size, full, lines, nft_done, args.nft_budget)
    if partial:
        res["partial_sync"] = partial_sync(size, full, ps, state_dir)
        write_state(state_dir, objects(n, per), 1)  # generation 1 again, for the daemon
    if daemon:
        res["daemon"] = daemon_run(state_dir, size, args.daemon_timeout, "iptables")
        res["daemon_nftables"] = daemon_run(state_dir, size, args.daemon_timeout, "nftables")
        res["daemon_nftables_restart"] = daemon_run(state_dir, size, args.daemon_timeout, "nftables",
                                                     restart=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-size run (seconds)")
    ap.add_argument("--sizes", help="NxE list (default 10000x10,1000x100; quick 200x10,20x100)")
    ap.add_argument(
        "--nft-sizes",
        help="extra N x E sizes for the nft ladder (default 500x10,1000x10,2000x10; quick 50x10)",
    )
    ap.add_argument(
        "--nft-budget", type=float, default=60.0, help="seconds one iptables-nft-restore may take"
    )
    ap.add_argument(
        "--render-rounds", type=int, default=3, help="renders per size; the fastest is reported"
    )
    ap.add_argument("--daemon-timeout", type=float, default=600.0)
    ap.add_argument("--no-daemon", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = parse_sizes(args.sizes or ("200x10,20x100" if args.quick else "10000x10,1000x100"))
    ladder = parse_sizes(args.nft_sizes or ("50x10" if args.quick else "500x10,1000x10,2000x10"))
    partial_at = max((s for s in sizes if s[1] == 10), default=max(sizes))
    work = Path(tempfile.mkdtemp(prefix="refproxier-bench-"))
    nft_done: dict[int, float] = {}
    results: dict[str, Any] = {}
    ladder_results: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        for size in sorted(set(ladder) - set(sizes)):
            r = bench_size(size, work, nft_done, args, False, False)
            ladder_results[label(size)] = {
                k: r[k] for k in ("lines", "render_s", "legacy_restore_s", "nft")
            }
        for size in sorted(sizes, key=lambda s: s[0] * s[1]):
            results[label(size)] = bench_size(
                size,
                work,
                nft_done,
                args,
                size == partial_at,
                size == partial_at and not args.no_daemon,
            )
    finally:
        ns_delete()
        shutil.rmtree(work, ignore_errors=True)
    goals = {}
    for k, r in results.items():
        goals[f"render_le_25pct_legacy_restore[{k}]"] = r["render_over_legacy_restore"] <= 0.25
        if "partial_sync" in r:
            goals[f"partial_le_10pct_full[{k}]"] = r["partial_sync"]["ratio_sync"] <= 0.10
    env = {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "iptables": sh(["iptables-legacy", "--version"]).stdout.strip(),
        "libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
    }
    log(f"total {time.perf_counter() - t0:.0f} s")
    print(
        json.dumps(
            {
                "benchmark": "refproxier_sync",
                "quick": args.quick,
                "env": env,
                "results": results,
                "nft_ladder": ladder_results,
                "nft_budget_s": args.nft_budget,
                "goals_met": goals,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
