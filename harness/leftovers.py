"""Rules another proxy mode left behind on a node.

A node whose kube-proxy moves from iptables to nftables mode (or back) still holds the
old mode's rules; kube-proxy removes them when it starts (``platformCleanup`` in
cmd/kube-proxy/app/server_linux.go), or they keep translating Services that are long
gone. :func:`plant_other_mode_rules` writes, inside a node's namespace, what kube-proxy's
*other* mode would have written for some objects (rendered by the reference proxier), so
that a check can restart the proxier under test and see whether they go.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from harness.netfilter import run_in_netns


class LeftoverError(RuntimeError):
    """The leftover rules could not be written (names the node and the tool)."""


def other_mode(netfilter: str) -> str:
    """The kube-proxy mode that is not ``netfilter`` ("iptables" <-> "nftables")."""
    return "iptables" if netfilter == "nftables" else "nftables"


def mode_in_use(node: Any) -> str:
    """"nftables" if ``node`` holds kube-proxy's nftables table (ip or ip6 ``kube-proxy``),
    else "iptables": read from the kernel, so it holds for a ``--proxier-cmd`` proxier too."""
    proc = run_in_netns(node.netns, ["nft", "list", "tables"], check=False)
    if proc.returncode != 0:
        raise LeftoverError(f"nft list tables on {node.name} exited {proc.returncode}: "
                            f"{proc.stderr.strip()[:300]}")
    tables = {tuple(ln.split()[1:3]) for ln in proc.stdout.splitlines() if ln.startswith("table ")}
    return "nftables" if tables & {("ip", "kube-proxy"), ("ip6", "kube-proxy")} else "iptables"


def plant_other_mode_rules(node: Any, netfilter: str, objects: Iterable[dict[str, Any]], *,
                           cluster_cidr: str, iptables_flavour: str) -> str:
    """Write into ``node``'s namespace the rules kube-proxy's mode other than ``netfilter``
    (the mode the node's proxier uses: :func:`mode_in_use`) would have for ``objects``
    (Services, EndpointSlices as the API serves them); returns that mode's name. iptables
    rules go to ``iptables_flavour`` ("nft" or "legacy"), with kube-proxy's jump rules
    from the built-in chains."""
    from refproxier import iptables, nftables
    from refproxier.config import ProxierConfig
    from refproxier.proxystate import build_proxy_state
    from servicemodel.cluster import ClusterState
    from servicemodel.load import load_dict

    mode = other_mode(netfilter)
    family = ipaddress.ip_address(node.ip).version
    cidrs = tuple(c for c in cluster_cidr.split(",")
                  if ipaddress.ip_network(c, strict=False).version == family)
    config = ProxierConfig(hostname=node.name, node_ips=(node.ip,), ip_family=family,  # type: ignore[arg-type]
                           cluster_cidrs=cidrs, proxy_mode=mode)  # type: ignore[arg-type]
    objs = [o for o in (load_dict(d, source=f"leftovers for {node.name}") for d in objects) if o]
    state = build_proxy_state(ClusterState.from_objects(objs), config)
    if mode == "nftables":
        _run(node, ["nft", "-f", "-"], nftables.render_nft(state, config))
        return mode
    tool = ("ip6tables" if family == 6 else "iptables") + f"-{iptables_flavour}"
    text = iptables.render(state, config)
    _run(node, [f"{tool}-restore", "--noflush"], text)
    declared = {ln[1:].split()[0] for ln in text.splitlines() if ln.startswith(":")}
    for j in iptables.jump_rules(config):
        if j.target in declared:
            _run(node, [tool, "-w", "-t", j.table, "-I", j.chain, "1", *j.args], None)
    return mode


def _run(node: Any, argv: list[str], stdin: str | None) -> None:
    proc = run_in_netns(node.netns, argv, input=stdin, check=False)
    if proc.returncode != 0:
        raise LeftoverError(f"writing leftover rules on {node.name}: {' '.join(argv[:3])} exited "
                            f"{proc.returncode}: {proc.stderr.strip()[:500]}")
