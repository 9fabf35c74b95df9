"""Faulty proxiers that reproduce historical Service-proxy bugs, for scenarios/bugs/.

Each fault is the reference proxier with one historical defect put back; the scenario that
reproduces the bug names it in ``caught_by_fault`` (scenarios also name faults defined in the
other fault modules, e.g. ``udp-cleanup-skipped`` in faults_dataplane.py). ``caught_by`` lists the scenario's
behaviour id (``scenario/bugs/k8s-NNNNN``) and ``pytest_args`` adds the scenario file to the
self-test's conformance run, so ``tests/selftest/test_faults_caught.py`` checks it too;
``tests/selftest/test_scenarios_catch_faults.py`` runs every scenario against its fault.
"""

from __future__ import annotations

from tests.faulty.faults import Fault


def _scenario(name: str) -> dict:
    return {"caught_by": (f"scenario/bugs/{name}",), "pytest_args": (f"scenarios/bugs/{name}.yaml",)}


def _no_reject_from_forward() -> None:
    # kube-proxy before kubernetes PR #72534: the REJECT rules for Services without
    # endpoints were only reached from OUTPUT, so pods (FORWARD) saw a black hole.
    from refproxier import iptables

    iptables._JUMPS = tuple(j for j in iptables._JUMPS
                            if not (j[0] == "filter" and j[1] == "FORWARD" and j[2] == iptables.KUBE_SERVICES))


def _no_affinity_local_chain() -> None:
    # kube-proxy before kubernetes#55429 was fixed: no affinity rules in the local-endpoints
    # chain (KUBE-XLB then, KUBE-SVL now) used by externalTrafficPolicy Local.
    from refproxier import iptables

    orig = iptables.affinity_rules

    def aff(ctx, sp, chain, endpoints):
        return [] if chain.startswith(iptables.SVL_PREFIX) else orig(ctx, sp, chain, endpoints)
    iptables.affinity_rules = aff


def _affinity_timeout_minutes_as_seconds() -> None:
    # kubernetes#35677: the default 180-minute stickiness was written as 180 seconds.
    import re

    from refproxier import iptables

    orig = iptables.affinity_rules

    def aff(ctx, sp, chain, endpoints):
        return [re.sub(r"--seconds (\d+)", lambda m: f"--seconds {max(1, int(m.group(1)) // 60)}", r)
                for r in orig(ctx, sp, chain, endpoints)]
    iptables.affinity_rules = aff


FAULTS_LIST = [
    Fault("no-reject-from-forward",
          "Services without endpoints are only rejected for the node's own traffic (OUTPUT)",
          _no_reject_from_forward, **_scenario("k8s-60124")),
    Fault("no-affinity-local-chain",
          "ClientIP affinity is ignored on the externalTrafficPolicy Local chain",
          _no_affinity_local_chain,
          caught_by=("scenario/bugs/k8s-55429", "service/affinity/clientip/load-balancer-ip"),
          pytest_args=_scenario("k8s-55429")["pytest_args"]),
    Fault("affinity-timeout-minutes-as-seconds",
          "ClientIP affinity timeout divided by 60 (minutes taken for seconds)",
          _affinity_timeout_minutes_as_seconds, **_scenario("k8s-35677")),
]


def _localhost_nodeports_unconditional() -> None:
    # kube-proxy before kubernetes PRs #107684/#108250 (issue #90259): localhost NodePorts,
    # and route_localnet=1, whatever the flags say.
    from refproxier.config import ProxierConfig

    ProxierConfig._localhost_nodeports_allowed = lambda self: not self.is_ipv6


FAULTS_LIST.append(
    Fault("localhost-nodeports-unconditional",
          "NodePorts answer on 127.0.0.1 (route_localnet=1) even with localhost nodePorts off",
          _localhost_nodeports_unconditional, **_scenario("k8s-90259")))



def _lb_ips_of_any_family() -> None:
    # kubernetes#73157 and #88316: load-balancer ingress IPs were not filtered by the
    # proxier's IP family, so an IPv4 LB address reached ip6tables-restore (and an IPv6
    # one iptables-restore), which rejected the whole ruleset: no Service worked.
    from dataclasses import replace

    from refproxier import proxystate

    orig = proxystate._service_ports

    def service_ports(b, svc):
        ports = orig(b, svc)
        ingress = (svc.status.loadBalancer.ingress
                   if svc.status and svc.status.loadBalancer else None) or []
        every = tuple(i.ip for i in ingress if i.ip and i.ipMode != "Proxy")
        if not ports or not every:
            return ports
        return [replace(sp, load_balancer_ips=every) for sp in ports]
    proxystate._service_ports = service_ports


FAULTS_LIST.append(
    Fault("lb-ips-any-family",
          "load-balancer ingress IPs of the other IP family are written into the rules",
          _lb_ips_of_any_family,
          caught_by=("scenario/bugs/k8s-73157", "scenario/bugs/k8s-88316"),
          pytest_args=("scenarios/bugs/k8s-73157.yaml", "scenarios/bugs/k8s-88316.yaml")))


def _no_reject_from_input() -> None:
    # kube-proxy v1.6.0 (kubernetes#43969, fixed by PR #43972): the "has no endpoints"
    # REJECT rules were reached from OUTPUT (and FORWARD) only, not from INPUT, so packets
    # from outside to a nodePort without endpoints reached whatever held the port on the
    # node (kube-proxy itself then held every nodePort open: CLOSE_WAIT sockets piled up).
    from refproxier import iptables

    iptables._JUMPS = tuple(j for j in iptables._JUMPS
                            if not (j[0] == "filter" and j[1] == "INPUT"
                                    and j[2] == iptables.KUBE_EXTERNAL_SERVICES))


FAULTS_LIST.append(
    Fault("no-reject-from-input",
          "nodePorts without endpoints are not rejected on the way in (no INPUT jump)",
          _no_reject_from_input, **_scenario("k8s-43969")))


def _probability_two_decimals() -> None:
    # kubernetes PR #83599: kube-proxy printed the statistic probabilities with 5 decimals,
    # so from 319 endpoints on neighbouring rules got the same probability. That skew is
    # at most 0.16% per endpoint at 320 (no traffic sample can show it); the same defect at
    # 2 decimals rounds 1/k to 0.00 for k > 200, which starves 120 of 320 endpoints.
    from refproxier import iptables

    iptables.compute_probability = lambda n: f"{1.0 / n:0.2f}"


FAULTS_LIST.append(
    Fault("probability-two-decimals",
          "statistic probabilities printed with 2 decimals (kubernetes#83599's defect, coarser)",
          _probability_two_decimals, **_scenario("k8s-83599")))


def _nodeless_endpoints_local() -> None:
    # A proxier that counts an endpoint without nodeName as local on every node (kube-proxy
    # compares nodeName with its hostname, so such an endpoint is never local: with
    # externalTrafficPolicy Local it is not served through any node; kubernetes#48437).
    from dataclasses import replace

    from refproxier import proxystate

    orig = getattr(proxystate, "_slice_endpoints", None)
    if orig is None:
        raise RuntimeError("refproxier.proxystate._slice_endpoints is gone; update the fault")

    def by_port(*args, **kwargs):
        out = orig(*args, **kwargs)
        return {k: [replace(e, is_local=True) if e.node_name is None else e for e in lst]
                for k, lst in out.items()}
    proxystate._slice_endpoints = by_port


FAULTS_LIST.append(
    Fault("nodeless-endpoints-local",
          "endpoints without nodeName are counted local on every node",
          _nodeless_endpoints_local, **_scenario("k8s-48437")))


def _nodeport_addresses_ignored() -> None:
    # kubernetes#111863: kube-proxy's iptables mode accepted nodePorts on every local
    # address (addrtype LOCAL), an LB IP assigned to the node included; the fix
    # (--nodeport-addresses primary, PR #123105) is ignored here.
    from refproxier.config import ProxierConfig

    ProxierConfig.nodeport_match_all = property(lambda self: True)  # type: ignore[assignment]


FAULTS_LIST.append(
    Fault("nodeport-addresses-ignored",
          "--nodeport-addresses is ignored: nodePorts answer on every local address",
          _nodeport_addresses_ignored, **_scenario("k8s-111863")))


def _no_local_source_to_cluster_chain() -> None:
    # Before kubernetes PR #77523 (issue #66354): with externalTrafficPolicy Local, a
    # node's own traffic to an external destination (an externalIP that is its own
    # address, an LB IP) went to the local-endpoints chain, dropped without local pods.
    from refproxier import iptables

    orig = iptables.external_destination_rules

    def rules(ctx, sp, has_external_endpoints):
        return [r for r in orig(ctx, sp, has_external_endpoints)
                if "route LOCAL traffic" not in r]
    iptables.external_destination_rules = rules


FAULTS_LIST.append(
    Fault("no-local-source-to-cluster-chain",
          "eTP Local: node-originated traffic to an external destination uses local endpoints only",
          _no_local_source_to_cluster_chain, **_scenario("k8s-66354")))


def _lb_ip_source_always_allowed() -> None:
    # kubernetes#119656 (ipvs, fixed by PR #119791): a node's own traffic to a local LB IP,
    # sent from the LB IP, passed loadBalancerSourceRanges whatever they said. Here: the
    # "-s LB_IP" allowFromNode rule is written even when no range holds the node's IP.
    from refproxier import iptables

    orig = iptables.firewall_chain_rules

    def rules(ctx, sp):
        out = orig(ctx, sp)
        ch = iptables.Chains.of(sp)
        if not any(f"-s {ip} " in r for r in out for ip in sp.load_balancer_ips):
            head = iptables.comment(f"{sp.port_name_string} loadbalancer IP")
            out[-1:-1] = [iptables.rule(ch.fw, head, ["-s", ip, "-j", ch.ext])
                          for ip in sp.load_balancer_ips]
        return out
    iptables.firewall_chain_rules = rules


FAULTS_LIST.append(
    Fault("lb-ip-source-always-allowed",
          "packets from an LB IP pass loadBalancerSourceRanges even when no range holds the node",
          _lb_ip_source_always_allowed, **_scenario("k8s-119656-lb-ip-source")))



def _udp_cleanup_keeps_unnatted_entries() -> None:
    # kubernetes#126468: datagrams sent to a ClusterIP before the proxier had the Service
    # got conntrack entries without DNAT (reply source: the ClusterIP itself), and the
    # cleanup never looked at them (it cleared entries DNATed to stale endpoints), so a
    # client that kept sending from one port stayed blackholed.
    from refproxier import conntrack

    orig = conntrack.stale_deletions

    def stale(entries, ports):
        kept = [e for e in entries if conntrack.canonical_ip(e.reply_src) != conntrack.canonical_ip(e.orig_dst)]
        return orig(kept, ports)
    conntrack.stale_deletions = stale


FAULTS_LIST.append(
    Fault("udp-cleanup-keeps-unnatted-entries",
          "the UDP conntrack cleanup leaves entries made without DNAT (before the Service's rules)",
          _udp_cleanup_keeps_unnatted_entries, **_scenario("k8s-126468")))
