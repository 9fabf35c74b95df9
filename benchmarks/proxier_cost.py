"""Cost of a proxier (root): time, CPU seconds and peak memory of a full sync at N x 10
(default 10,000 x 10) and of one-endpoint updates, for any proxier.

One one-node cluster per (proxier, size): the bulk Services (every endpoint a real pod)
and one probed Service (one endpoint, pod A) are published before the proxier starts.

* full sync: from the proxier's start to the state applied (the harness's sentinel
  Service, published last, answers on the node: probes, not the proxier's word); CPU
  seconds consumed by then (/proc/<pid>/stat utime+stime of the proxier, plus cutime and
  cstime of the children it waited for: iptables-restore, nft), and again after
  ``--settle`` seconds (work a proxier does after its rules are in);
* memory: VmHWM of the proxier process, and the peak RSS of its process tree (children
  included) sampled every 50 ms over the whole run;
* ``--updates`` one-endpoint updates (the probed Service's endpoint A replaced by B, then
  back): published to forwarding to the new pod (probes from the node), CPU seconds by
  then and after ``--settle-update`` seconds.

Usage: sudo .venv/bin/python benchmarks/proxier_cost.py [--proxiers reference,kube-proxy,...]
       [--iptables legacy|nft] [--sizes 10000] [--updates 5] [--quick] [--out FILE]
Progress on stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import _cluster as bc

from harness.controlplane.statedir import SyncTimeout
from harness.proxiers import ProxierSpec
from harness.proxiers.process import ProxierCrashed


def measure_sync(spec: ProxierSpec, iptables: str, control_plane: str, size: int,
                 per: int = 10, updates: int = 5, settle: float = 5.0,
                 settle_update: float = 2.0, budget: float = 900.0,
                 label: str = "", before_updates: Any = None) -> dict[str, Any]:
    """One fresh cluster: full sync then ``updates`` one-endpoint updates
    (``before_updates(pid)`` is called between them)."""
    out: dict[str, Any] = {"size": size, "per_service": per, "loadavg": [bc.loadavg()]}
    with bc.BenchCluster(spec, iptables=iptables, control_plane=control_plane, nodes=1,
                         bulk_pods=max(10, per), per_service=per,
                         timeout_scale=max(1.0, budget / 30.0)) as c:  # first sync: 30 s x scale
        env = c.env
        node = env.nodes[0]
        a = c.topo.add_pod("cost-a", node.name, ports=[(8080, "tcp")])
        b = c.topo.add_pod("cost-b", node.name, ports=[(8080, "tcp")])
        svc = env.create_service([a], name="probed", sync=False)
        c.put_bulk(size)
        with bc.PeakSampler(c.pids) as sampler:
            try:
                full = c.start()
            except (SyncTimeout, ProxierCrashed) as exc:
                out["error"] = f"full sync: {str(exc).splitlines()[0]}"
                bc.log(f"{label}: {out['error']}")
                out["loadavg"].append(bc.loadavg())
                return out
            pid = c.pids()[node.name]
            cpu_full = bc.cpu_seconds(pid)
            hwm_full = bc.status_kb(pid, "VmHWM")
            time.sleep(settle)
            cpu_settled = bc.cpu_seconds(pid)
            out["full"] = {"seconds": round(full, 3), "cpu_s": round(cpu_full, 2),
                           "cpu_s_settled": round(cpu_settled, 2),
                           "vmhwm_mib": round((hwm_full or 0) / 1024, 1)}
            bc.log(f"{label}: full sync {full:.2f} s, {cpu_full:.2f} CPU s "
                   f"({cpu_settled:.2f} after {settle:.0f} s), VmHWM {out['full']['vmhwm_mib']} MiB")
            if before_updates is not None:
                before_updates(pid)
            ups = []
            for u in range(updates):
                new = b if u % 2 == 0 else a
                cpu0 = bc.cpu_seconds(pid)
                svc.set_endpoints([new], sync=False)
                gen, t_pub = c.publish()
                [got] = bc.await_all([node], svc.cluster_ip, 80, "sees", t_pub, pod=new.name,
                                     timeout=budget)
                cpu1 = bc.cpu_seconds(pid)
                time.sleep(settle_update)
                cpu2 = bc.cpu_seconds(pid)
                ups.append({"seconds": got.seconds, "cpu_s": round(cpu1 - cpu0, 2),
                            "cpu_s_settled": round(cpu2 - cpu0, 2), "error": got.error})
                bc.log(f"{label}: update {u + 1}/{updates}: "
                       + (f"{got.seconds:.3f} s" if got.seconds is not None else got.error)
                       + f", {cpu1 - cpu0:.2f} CPU s ({cpu2 - cpu0:.2f} after {settle_update:.0f} s)")
            hwm = bc.status_kb(pid, "VmHWM")
        ok = [u["seconds"] for u in ups if u["seconds"] is not None]
        out["update"] = {
            "n": len(ups), "seconds": bc.summary(ok),
            "cpu_s_median": round(statistics.median([u["cpu_s"] for u in ups]), 2) if ups else None,
            "cpu_s_settled_median": (round(statistics.median([u["cpu_s_settled"] for u in ups]), 2)
                                     if ups else None),
            "each": ups}
        out["memory"] = {"vmhwm_mib": round((hwm or 0) / 1024, 1),
                         "tree_peak_rss_mib": round(sampler.peak.get(node.name, 0) / 1024, 1)}
    out["loadavg"].append(bc.loadavg())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bc.add_proxier_args(ap, many=True)
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--settle-update", type=float, default=2.0)
    ap.add_argument("--budget", type=float, default=900.0,
                    help="seconds a full sync may take before it is reported as not done")
    ap.add_argument("--quick", action="store_true", help="200 Services, 3 updates")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    bc.require_root()
    bc.install_signal_handlers()
    if args.quick:
        args.sizes, args.updates, args.settle, args.settle_update = "200", 3, 1.0, 0.5
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    names = [p for p in (args.proxiers or "reference").split(",") if p]
    specs = [bc.proxier_spec(n, kube_proxy_version=args.kube_proxy_version) for n in names]
    result: dict[str, Any] = {"benchmark": "proxier_cost", "iptables": args.iptables,
                              "control_plane": args.control_plane,
                              "environment": bc.environment(), "runs": []}
    for size in sizes:
        for spec in specs:
            label = bc.spec_label(spec, args.iptables)
            bc.log(f"{label}: {size} x {args.per_service}")
            r = measure_sync(spec, args.iptables, args.control_plane, size, args.per_service,
                             args.updates, args.settle, args.settle_update, args.budget, label)
            result["runs"].append({"proxier": spec.name, "label": label,
                                   "version": spec.version, **r})
    bc.emit(result, args.out)


if __name__ == "__main__":
    main()
