"""``refproxier``: the reference proxier's command line (flags mirror kube-proxy's).

Subcommands::

    refproxier render [flags] [--show-problems] FILE...   # print iptables-restore (or nft) input; no root
    refproxier run --state-dir DIR [--kubeconfig F] [flags]  # the daemon (refproxier.runner.run)
    refproxier cleanup [flags]                           # remove rules (refproxier.runner.cleanup)

Input errors are reported as one message naming the file, object and field; exit status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable, Sequence

from refproxier.config import ProxierConfig

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


def _comma_list(values: Sequence[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or ():
        out += [x.strip() for x in v.split(",") if x.strip()]
    return tuple(out)


def _add_proxier_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kube-proxy flags")
    g.add_argument("--hostname-override", dest="hostname", help="node name (default: this host's name)")
    g.add_argument("--node-ip", action="append", metavar="IP[,IP]", help="node IP(s); repeatable or comma list")
    g.add_argument("--cluster-cidr", action="append", metavar="CIDR[,CIDR]",
                   help="pod CIDRs; traffic from outside them to a ClusterIP is masqueraded")
    g.add_argument("--masquerade-all", action="store_true", help="masquerade all traffic to ClusterIPs")
    g.add_argument("--nodeport-addresses", action="append", metavar="CIDR[,CIDR]",
                   help="accept NodePorts only on local addresses in these CIDRs, or 'primary' for the "
                   "--node-ip addresses (default: all)")
    g.add_argument("--iptables-localhost-nodeports", type=_bool, default=True, metavar="true|false",
                   help="accept NodePorts on 127.0.0.1 (default true)")
    g.add_argument("--masquerade-bit", type=int, default=14, help="fwmark bit for SNAT (default 14)")
    g.add_argument("--ip-family", type=_families, default=None, metavar="4|6|4,6",
                   help="IP family or families to proxy; '4,6' runs both in one process, as "
                   "kube-proxy does on a dual-stack node (default: the families of --node-ip, "
                   "else 4)")
    g.add_argument("--proxy-mode", choices=("iptables", "nftables"), default="iptables",
                   help="iptables (default) or nftables")
    g.add_argument("--service-cidr", action="append", metavar="CIDR[,CIDR]",
                   help="service CIDRs (kube-proxy reads ServiceCIDR objects); nftables mode drops "
                        "traffic to unallocated addresses in them")
    g.add_argument("--iptables", dest="iptables_mode", choices=("legacy", "nft", "auto"), default="auto",
                   help="iptables flavour (default: auto-detect)")
    g.add_argument("--sync-period", type=_duration, default=30.0,
                   help="stale-chain cleanup period in large clusters (default 30s); full resyncs run hourly, as kube-proxy's")
    g.add_argument("--healthz-bind-address", default="0.0.0.0:10256", metavar="HOST:PORT",
                   help="where /healthz and /livez are served (default 0.0.0.0:10256; empty: off)")
    g.add_argument("--min-sync-period", type=_duration, default=1.0, help="minimum time between syncs (default 1s)")
    g.add_argument("--conntrack-tcp-be-liberal", type=_bool, default=False, metavar="true|false",
                   help="assume net.netfilter.nf_conntrack_tcp_be_liberal is set (no INVALID drop rule)")
    g.add_argument("--conntrack-tcp-timeout-established", type=_duration, default=86400.0,
                   help="idle timeout of established TCP conntrack entries, set in the node "
                        "namespace at start (default 24h; 0: leave the kernel's)")
    g.add_argument("--conntrack-tcp-timeout-close-wait", type=_duration, default=3600.0,
                   help="timeout of TCP conntrack entries in CLOSE_WAIT, set in the node "
                        "namespace at start (default 1h; 0: leave the kernel's)")
    g.add_argument("--nfacct", type=_bool, default=False, metavar="true|false",
                   help="add kube-proxy's nfacct counter matches (render only)")
    g.add_argument("--random-fully", type=_bool, default=True, metavar="true|false",
                   help="iptables supports MASQUERADE --random-fully (default true)")


def _families(value: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in value.split(","):
        if part.strip() not in ("4", "6") or int(part) in out:
            raise argparse.ArgumentTypeError(f"expected 4, 6, 4,6 or 6,4, not {value!r}")
        out.append(int(part))
    return tuple(out)


def families_from_args(args: argparse.Namespace) -> tuple[int, ...]:
    """The IP families to proxy: ``--ip-family``, else those of ``--node-ip`` in order."""
    if args.ip_family:
        return tuple(args.ip_family)
    versions: list[int] = []
    for ip in _comma_list(args.node_ip):
        try:
            v = ipaddress.ip_address(ip).version
        except ValueError:
            continue  # reported by config_from_args
        if v not in versions:
            versions.append(v)
    return tuple(versions) or (4,)


def _duration(value: str) -> float:
    """Seconds, or a Go-style duration such as 30s, 1m, 500ms."""
    v = value.strip()
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, factor in units:
        if v.endswith(suffix) and v[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(v[: -len(suffix)]) * factor
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (use e.g. 30s, 1m, 0.5)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="refproxier", description="Reference Service proxy (a Python port of kube-proxy, iptables mode).")
    from refproxier import version_string

    parser.add_argument("--version", action="version", version=version_string())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("render", help="print the iptables-restore input for one node (no root)")
    _add_proxier_flags(r)
    r.add_argument("--show-problems", action="store_true", help="list ignored or invalid input on stderr")
    r.add_argument("files", nargs="+", metavar="FILE", help="manifests (YAML or JSON), as kubectl get -o yaml prints them")
    run = sub.add_parser("run", help="run the proxier on a state directory")
    _add_proxier_flags(run)
    run.add_argument("--state-dir", help="directory holding state.yaml (with --kubeconfig: "
                     "where applied/<node> acknowledgements are written)")
    run.add_argument("--kubeconfig", default="",
                     help="list and watch Services, EndpointSlices and Nodes from this API "
                          "server instead of reading state.yaml; empty means none, so a "
                          "command template may say --kubeconfig={kubeconfig}")
    c = sub.add_parser("cleanup", help="remove the proxier's rules and exit")
    _add_proxier_flags(c)
    return parser


def config_from_args(args: argparse.Namespace) -> ProxierConfig:
    """A ProxierConfig from parsed flags; raises ValueError naming the bad flag."""
    import socket

    node_ips = _checked(args.node_ip, "--node-ip", ipaddress.ip_address, "an IP address")
    cidrs = _checked(args.cluster_cidr, "--cluster-cidr", _cidr, "a CIDR")
    service_cidrs = _checked(args.service_cidr, "--service-cidr", _cidr, "a CIDR")
    npa = _comma_list(args.nodeport_addresses)
    if npa == ("primary",):
        # kube-proxy's special value: only the node's primary IP(s).
        npa = tuple(f"{ip}/{32 if ipaddress.ip_address(ip).version == 4 else 128}" for ip in node_ips)
    else:
        npa = _checked(npa, "--nodeport-addresses", _cidr, "a CIDR")
    family = families_from_args(args)[0]  # the first; see main() for dual-stack
    if not 0 <= args.masquerade_bit <= 31:
        raise ValueError(f"--masquerade-bit: {args.masquerade_bit} is not in [0, 31]")
    return ProxierConfig(
        hostname=(args.hostname or socket.gethostname()).strip().lower(),
        node_ips=node_ips,
        ip_family=family,
        cluster_cidrs=cidrs,
        masquerade_all=args.masquerade_all,
        masquerade_bit=args.masquerade_bit,
        nodeport_addresses=npa,
        localhost_nodeports=args.iptables_localhost_nodeports,
        random_fully=args.random_fully,
        iptables_mode=args.iptables_mode,
        sync_period=args.sync_period,
        min_sync_period=args.min_sync_period,
        conntrack_tcp_be_liberal=args.conntrack_tcp_be_liberal,
        conntrack_tcp_timeout_established=args.conntrack_tcp_timeout_established,
        conntrack_tcp_timeout_close_wait=args.conntrack_tcp_timeout_close_wait,
        nfacct=args.nfacct,
        service_cidrs=service_cidrs,
        proxy_mode=args.proxy_mode,
        healthz_bind_address=args.healthz_bind_address,
    )


def _cidr(value: str) -> object:
    return ipaddress.ip_network(value, strict=False)


def _checked(values: Sequence[str] | None, flag: str, parse: Callable[[str], object], what: str) -> tuple[str, ...]:
    out = _comma_list(values)
    for v in out:
        try:
            parse(v)
        except ValueError:
            raise ValueError(f"{flag}: {v!r} is not {what}") from None
    return out


def _render(args: argparse.Namespace, config: ProxierConfig) -> int:
    from refproxier import iptables
    from refproxier.proxystate import build_proxy_state
    from servicemodel.cluster import ClusterState
    from servicemodel.load import load_objects

    objs = []
    for f in args.files:
        objs += load_objects(f)
    state = build_proxy_state(ClusterState.from_objects(objs), config)
    if args.show_problems:
        for p in state.problems:
            print(f"problem: {p}", file=sys.stderr)
    if config.proxy_mode == "nftables":
        from refproxier import nftables

        sys.stdout.write(nftables.render_nft(state, config))
    else:
        sys.stdout.write(iptables.render(state, config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from servicemodel.load import ModelError

    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"refproxier: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    import dataclasses

    families = families_from_args(args)
    configs = [dataclasses.replace(config, ip_family=f) for f in families]
    try:
        if args.command == "render":
            if args.ip_family and len(args.ip_family) > 1:
                print("refproxier: error: --ip-family: render one family at a time",
                      file=sys.stderr)
                return EXIT_USAGE
            return _render(args, config)  # without --ip-family: the first node IP's
        # The daemon needs root and netfilter; import it only when asked to run.
        from refproxier import runner

        if args.command == "run":
            if not args.state_dir:
                print("refproxier: error: run needs --state-dir (state.yaml, or with "
                      "--kubeconfig the directory for applied/<node>)", file=sys.stderr)
                return EXIT_USAGE
            # an empty --kubeconfig= (the harness's placeholder without an API) is none
            api = {"kubeconfig": args.kubeconfig} if args.kubeconfig else {}
            if len(configs) > 1:
                return int(runner.run_dual_stack(configs, args.state_dir, **api))
            return int(runner.run(config, args.state_dir, **api))
        return max(int(runner.cleanup(c)) for c in configs)
    except ModelError as e:
        print(f"refproxier: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
