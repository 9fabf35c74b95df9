"""Faulty proxiers for the data-plane areas: UDP conntrack, INVALID packets, endpoint churn,
proxier restarts (conformance/test_udp_conntrack.py, test_invalid_packets.py,
test_endpoint_churn.py, test_proxier_restart.py, test_sctp.py, test_ipv6.py).

Each fault patches one point of ``refproxier.iptables`` or of the daemon
(``refproxier.daemon``) and names the behaviours that must catch it. Gathered into the one
registry by ``tests.faulty.faults``. (faults_scenarios.py has the same defects as
``no-udp-conntrack-cleanup`` / ``no-invalid-drop`` for its bug scenarios; these are the
feature checks' own, under their own names.)
"""

from __future__ import annotations

from harness.proxiers import KUBE_PROXY_IPTABLES_CAPABILITIES
from refproxier import daemon, iptables, nethost, runner
from tests.faulty.faults import Fault

# The self-test's default capability list predates invalid-drop and resync-on-flush; these
# faults declare what the reference declares, so no check they must fail is skipped.
_CAPS = ",".join(sorted(KUBE_PROXY_IPTABLES_CAPABILITIES))


def _no_udp_conntrack_cleanup() -> None:
    # The daemon calls refproxier.daemon.clean_stale_entries through its module namespace.
    daemon.clean_stale_entries = lambda ports, family=4, run=None: []


def _service_keyed_by_port_number() -> None:
    # A service map keyed by ClusterIP:port: the second protocol on one port number is lost.
    first: dict[tuple[str, int], str] = {}
    orig = iptables.service_port_rules

    def spr(ctx, sp):
        proto = first.setdefault((sp.cluster_ip, sp.port), sp.protocol)
        if proto != sp.protocol:
            return iptables.ServicePortRules([], [], [], [])
        return orig(ctx, sp)
    iptables.service_port_rules = spr


def _no_invalid_drop() -> None:
    orig = iptables.forward_rules
    iptables.forward_rules = lambda ctx: [r for r in orig(ctx) if "INVALID" not in r]


def _endpoint_removal_ignored() -> None:
    # Removed endpoints stay in the load-balancing chain while the Service has others (a
    # proxier that only ever adds endpoints until a Service loses all of them).
    from dataclasses import replace

    seen: dict[tuple[str, str], dict[str, object]] = {}
    orig = iptables.service_port_rules

    def spr(ctx, sp):
        key = (sp.port_name_string, sp.protocol)
        if not sp.cluster_endpoints:
            seen.pop(key, None)
            return orig(ctx, sp)
        known = seen.setdefault(key, {})
        known.update({ep.address: ep for ep in sp.cluster_endpoints})
        every = tuple(known[a] for a in sorted(known))
        return orig(ctx, replace(sp, cluster_endpoints=every, all_reachable_endpoints=every))
    iptables.service_port_rules = spr


def _restart_flushes_conntrack() -> None:
    # A proxier that "starts clean": conntrack -F in its node's namespace on every start.
    import subprocess

    orig = runner.run

    def run(config, state_dir):
        if not nethost.in_root_netns():  # the daemon refuses the root namespace; so do we
            subprocess.run(["conntrack", "-F"], capture_output=True, check=False)
        return orig(config, state_dir)
    runner.run = run


def _canary_ignored() -> None:
    # Flushed tables are then noticed only by the hourly full sync (kube-proxy's
    # FullSyncPeriod), long after the check gives up.
    daemon.Daemon.check_canaries = lambda self: None


def _sctp_ignored() -> None:
    # SCTP service ports get no rules at all (a proxier that only knows TCP and UDP).
    orig = iptables.service_port_rules

    def spr(ctx, sp):
        if sp.protocol == "SCTP":
            return iptables.ServicePortRules([], [], [], [])
        return orig(ctx, sp)
    iptables.service_port_rules = spr


def _ipv6_dnat_unbracketed() -> None:
    # "--to-destination fd00::5:8080" parses as the address fd00::5:8080, port unchanged.
    orig = iptables.dnat_rule

    def dnat(ctx, sp, ep):
        r = orig(ctx, sp, ep)
        return r.replace(f"[{ep.ip}]:{ep.port}", f"{ep.ip}:{ep.port}") if ":" in ep.ip else r
    iptables.dnat_rule = dnat


def _ipv6_cleanup_ipv4_only() -> None:
    # The UDP cleanup always lists and deletes in the IPv4 table.
    orig = daemon.clean_stale_entries
    daemon.clean_stale_entries = lambda ports, family=4, run=None: orig(ports, 4)


def _udp_cleanup_ignores_nodeports() -> None:
    # The cleanup knows the Service addresses but not the NodePorts.
    from dataclasses import replace

    orig = daemon.clean_stale_entries
    daemon.clean_stale_entries = lambda ports, family=4, run=None: orig(
        [replace(p, node_port=0) for p in ports], family)


FAULTS_LIST: list[Fault] = [
    Fault("udp-cleanup-skipped", "stale UDP conntrack entries are never deleted (the daemon's cleanup seam)",
          _no_udp_conntrack_cleanup,
          ("service/udp/conntrack/flow-follows-endpoint-removal",
           "service/udp/conntrack/zero-to-n-endpoints",
           "service/udp/conntrack/scaled-to-zero-and-back",
           "service/udp/conntrack/nodeport-flow-follows-endpoint-removal",
           "service/udp/conntrack/deleted-service-flow-stops",
           "service/udp/conntrack/removed-port-flow-stops"),
          capabilities=_CAPS),
    Fault("udp-cleanup-ignores-nodeports", "stale UDP entries to NodePorts are not deleted",
          _udp_cleanup_ignores_nodeports,
          ("service/udp/conntrack/nodeport-flow-follows-endpoint-removal",), capabilities=_CAPS),
    Fault("service-keyed-by-port-number", "a Service port's second protocol on the same number is ignored",
          _service_keyed_by_port_number, ("service/udp/conntrack/same-port-tcp-and-udp",),
          capabilities=_CAPS),
    Fault("invalid-forwarded", "no ct state INVALID drop in KUBE-FORWARD (forward_rules)",
          _no_invalid_drop, ("service/invalid/out-of-window-not-leaked",),
          capabilities=_CAPS),
    Fault("endpoint-removal-ignored", "removed endpoints stay in the rules while others remain",
          _endpoint_removal_ignored, ("service/churn/no-removed-endpoint-after-ack",),
          capabilities=_CAPS),
    Fault("restart-flushes-conntrack", "conntrack -F when the proxier starts",
          _restart_flushes_conntrack, ("service/restart/established-flows-survive",),
          capabilities=_CAPS),
    Fault("canary-ignored", "flushed tables are not noticed (canary chains not watched)",
          _canary_ignored, ("service/restart/rules-recreated-after-flush",), capabilities=_CAPS),
    Fault("sctp-ignored", "SCTP Service ports get no rules",
          _sctp_ignored, ("service/sctp/clusterip-dnat",), capabilities=_CAPS),
    Fault("ipv6-dnat-unbracketed", "IPv6 DNAT targets written without brackets (ip:port)",
          _ipv6_dnat_unbracketed, ("service/ipv6/clusterip-dnat",), capabilities=_CAPS),
    Fault("ipv6-cleanup-ipv4-only", "UDP conntrack cleanup looks only at the IPv4 table",
          _ipv6_cleanup_ipv4_only, ("service/ipv6/udp-flow-follows-endpoint-removal",),
          capabilities=_CAPS),
]
