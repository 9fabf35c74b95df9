"""Convergence of any proxier (root): from publishing a change to every node forwarding
accordingly, observed by probes from every node, never by the proxier's word.

One cluster (``--nodes``, default 2) runs the proxier on every node over the control
plane (default ``api``). Bulk Services (N x 10 endpoints; the endpoints are the addresses
of 10 real pods, shared) make the ruleset large; the sizes grow in the same cluster
(default 100, 1,000, 10,000). At each size, ``--changes`` changes (default 52) of one
probed Service with two real pods A (first node) and B (second node) cycle through:

* ``create``: a new Service (new ClusterIP) with endpoint A: done when it answers;
* ``add``: endpoint B added: done when B answers (bursts of 8 probes);
* ``remove``: endpoint A removed: done at the first of 24 replies in a row none from A;
* ``delete``: the Service deleted: done at the first of 3 probes in a row unanswered.

The time of a change is the latest node's (every node forwarding); its resolution is one
probe burst (probe timeout 50 ms + 20 ms gap). Reported per size: median, 95th percentile
and max over all changes and per kind, and each node's times.

Usage: sudo .venv/bin/python benchmarks/convergence.py [--proxier reference|reference-nft|
       kube-proxy|kube-proxy-nft | --proxier-cmd CMD] [--iptables legacy|nft]
       [--sizes 100,1000,10000] [--changes 52] [--quick] [--out FILE]
Progress on stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _cluster as bc

KINDS = ("create", "add", "remove", "delete")


def run_size(cluster: bc.BenchCluster, a: Any, b: Any, changes: int, timeout: float,
             serial: list[int]) -> dict[str, Any]:
    env = cluster.env
    assert env is not None
    nodes = env.nodes
    records: list[dict[str, Any]] = []
    la0 = bc.loadavg()
    svc = None
    for i in range(changes):
        kind = KINDS[i % 4]
        if kind == "create":
            serial[0] += 1
            svc = env.create_service([a], name=f"conv{serial[0]}", sync=False)
            expect = ("reply", None)
        elif kind == "add":
            svc.set_endpoints([a, b], sync=False)
            expect = ("sees", b.name)
        elif kind == "remove":
            svc.set_endpoints([b], sync=False)
            expect = ("not_sees", a.name)
        else:
            env.remove_service(svc)
            expect = ("silent", None)
        gen, t_pub = cluster.publish()
        got = bc.await_all(nodes, svc.cluster_ip, 80, expect[0], t_pub, pod=expect[1],
                           timeout=timeout)
        secs = [g.seconds for g in got]
        done = None if any(s is None for s in secs) else max(secs)
        rec = {"kind": kind, "generation": gen, "seconds": done,
               "per_node": {g.node: g.seconds for g in got},
               "probes": sum(g.probes for g in got)}
        errs = [f"{g.node}: {g.error}" for g in got if g.error]
        if errs:
            rec["error"] = "; ".join(errs)
        records.append(rec)
        bc.log(f"  {i + 1:3d}/{changes} {kind:6s} "
               + (f"{done:.3f} s" if done is not None else "NOT CONVERGED " + rec["error"])
               + "  (" + ", ".join(f"{n}={s:.3f}" if s is not None else f"{n}=-"
                                   for n, s in rec["per_node"].items()) + ")")
    if svc is not None and (svc.namespace, svc.name) in env.services:
        env.remove_service(svc)
        cluster.publish()
    ok = [r["seconds"] for r in records if r["seconds"] is not None]
    out = {"changes": len(records), "converged": len(ok), "all": bc.summary(ok),
           "by_kind": {k: bc.summary([r["seconds"] for r in records
                                      if r["kind"] == k and r["seconds"] is not None])
                       for k in KINDS},
           "loadavg": [la0, bc.loadavg()], "records": records}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bc.add_proxier_args(ap)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--changes", type=int, default=52)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=180.0, help="per change, seconds")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to wait after growing the bulk, before the changes")
    ap.add_argument("--quick", action="store_true", help="100 Services, 8 changes")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    bc.require_root()
    bc.install_signal_handlers()
    if args.quick:
        args.sizes, args.changes = "100", 8
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    spec = bc.proxier_spec(args.proxier, args.proxier_cmd, args.proxier_capabilities,
                           args.kube_proxy_version)
    label = bc.spec_label(spec, args.iptables)
    result: dict[str, Any] = {
        "benchmark": "convergence", "proxier": spec.name, "label": label,
        "proxier_version": spec.version, "netfilter": spec.netfilter,
        "iptables": args.iptables if spec.netfilter == "iptables" else None,
        "control_plane": args.control_plane, "nodes": args.nodes,
        "per_service": args.per_service, "environment": bc.environment(), "sizes": {}}
    bc.log(f"convergence: {label}, sizes {sizes}, {args.changes} changes each, "
           f"{args.nodes} nodes, control plane {args.control_plane}")
    serial = [0]
    with bc.BenchCluster(spec, iptables=args.iptables, control_plane=args.control_plane,
                         nodes=args.nodes, bulk_pods=max(10, args.per_service),
                         per_service=args.per_service) as cluster:
        env = cluster.env
        node_names = [n.name for n in env.nodes]
        a = cluster.topo.add_pod("conv-a", node_names[0], ports=[(8080, "tcp")])
        b = cluster.topo.add_pod("conv-b", node_names[-1], ports=[(8080, "tcp")])
        cluster.put_bulk(sizes[0])
        t0 = time.monotonic()
        first = cluster.start()
        bc.log(f"started on {sizes[0]} Services: applied on every node {first:.2f} s after the "
               f"proxiers started ({time.monotonic() - t0:.1f} s with publishing)")
        result["first_sync_s"] = round(first, 3)
        for size in sizes:
            grow = None
            if size > cluster.bulk:
                cluster.put_bulk(size)
                grow = cluster.sync()
                bc.log(f"grown to {size} Services: applied {grow:.2f} s after publishing")
            time.sleep(args.settle)
            bc.log(f"size {size}: {args.changes} changes (load {bc.loadavg()})")
            res = run_size(cluster, a, b, args.changes, args.timeout, serial)
            res["grow_sync_s"] = None if grow is None else round(grow, 3)
            result["sizes"][str(size)] = res
            s = res["all"]
            bc.log(f"size {size}: median {s.get('median')} s, p95 {s.get('p95')} s, "
                   f"max {s.get('max')} s over {s['n']} changes")
    bc.emit(result, args.out)


if __name__ == "__main__":
    main()
