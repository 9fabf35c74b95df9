"""Faulty proxiers for traffic policies, hairpin, terminating endpoints and Service objects
(EndpointSlices, proxy labels, type and port changes).

Each fault changes one decision of the reference proxier: a fault-injection point of
``refproxier.iptables`` (its module docstring lists them), a function of
``refproxier.proxystate`` (which Services, slices and endpoints are proxied), or the
health check server's answer (``refproxier.healthcheck.response_for``).
"""

from __future__ import annotations

from dataclasses import replace

from refproxier import healthcheck, iptables, proxystate
from tests.faulty.faults import Fault, _wrap


def _wrap_state(name: str, make):
    setattr(proxystate, name, make(getattr(proxystate, name)))


# --- hairpin -----------------------------------------------------------------------------

def _hairpin_masquerade_tcp_only() -> None:
    def make(orig):
        def hp(ctx, sp, ep):
            if sp.protocol == "TCP":
                return orig(ctx, sp, ep)
            return iptables.rule(iptables.sep_chain(sp, ep), iptables.comment("hairpin: TCP only (fault)"))
        return hp
    _wrap("hairpin_masquerade_rule", make)


def _hairpin_masquerade_clusterip_only() -> None:
    # Masquerades a pod reaching itself only when it came through the ClusterIP.
    def make(orig):
        def hp(ctx, sp, ep):
            return orig(ctx, sp, ep).replace(" -j ", f" -m conntrack --ctorigdst {sp.cluster_ip} -j ", 1)
        return hp
    _wrap("hairpin_masquerade_rule", make)


# --- externalTrafficPolicy Local ---------------------------------------------------------

def _etp_local_masquerade() -> None:
    # Masquerades all external traffic, as for eTP Cluster: the client's address is lost.
    def make(orig):
        def masq(ctx, sp):
            ext = iptables.Chains.of(sp).ext
            return [iptables.rule(ext, iptables.comment("masquerade everything (fault)"), ["-j", iptables.KUBE_MARK_MASQ])]
        return masq
    _wrap("external_masquerade_rules", make)


def _etp_local_to_remote_endpoints() -> None:
    # External traffic goes to every endpoint of the cluster, local or not.
    def make(orig):
        def ext(ctx, sp, has_external):
            rules = orig(ctx, sp, has_external)
            if not sp.external_policy_local:
                return rules
            ch = iptables.Chains.of(sp)
            return [r for r in rules if not r.endswith(f"-j {ch.svl}")] + [iptables.rule(ch.ext, ["-j", ch.svc])]
        return ext
    _wrap("external_destination_rules", make)


def _etp_local_falls_back_to_cluster() -> None:
    # A node without local endpoints proxies external traffic as for eTP Cluster.
    def make(orig):
        def spr(ctx, sp):
            if sp.external_policy_local and sp.has_endpoints and not sp.local_endpoints:
                sp = replace(sp, external_policy_local=False)
            return orig(ctx, sp)
        return spr
    _wrap("service_port_rules", make)


def _drop_ext_rule(marker: str):
    def make(orig):
        return lambda ctx, sp, has_external: [r for r in orig(ctx, sp, has_external) if marker not in r]
    _wrap("external_destination_rules", make)


def _etp_local_no_pod_short_circuit() -> None:
    _drop_ext_rule('"pod traffic for ')


def _etp_local_no_node_short_circuit() -> None:
    _drop_ext_rule('"route LOCAL traffic for ')


def _health_check_always_200() -> None:
    orig = healthcheck.response_for
    healthcheck.response_for = lambda target: (200, orig(target)[1])


def _health_check_counts_all_endpoints() -> None:
    # Reports every ready endpoint of the Service, wherever it runs.
    def health_checks(self):
        ips: dict[str, set[str]] = {}
        for sp in self.service_ports:
            ips.setdefault(sp.service_key, set()).update(ep.ip for ep in sp.endpoints if ep.ready)
        return [proxystate.HealthCheck(sp.namespace, sp.name, sp.health_check_node_port, len(ips[sp.service_key]))
                for sp in self.service_ports if sp.health_check_node_port]
    proxystate.ProxyState.health_checks = health_checks


# --- internalTrafficPolicy Local ---------------------------------------------------------

def _itp_local_ignored() -> None:
    def make(orig):
        def ports(b, svc):
            out = orig(b, svc)
            return None if out is None else [replace(sp, internal_policy_local=False) for sp in out]
        return ports
    _wrap_state("_service_ports", make)


def _itp_local_no_local_rejected() -> None:
    def make(orig):
        def rules(ctx, sp, internal, external):
            return [r.replace("-j DROP", "-j REJECT") if f"-d {sp.cluster_ip} " in r else r
                    for r in orig(ctx, sp, internal, external)]
        return rules
    _wrap("no_local_endpoints_rules", make)


# --- terminating endpoints ---------------------------------------------------------------

def _wrap_categorize(transform_in=None, transform_out=None) -> None:
    def make(orig):
        def cat(sp, endpoints, zone=""):
            if transform_in:
                endpoints = tuple(transform_in(e) for e in endpoints)
            out = orig(sp, endpoints, zone)
            return transform_out(sp, endpoints, out) if transform_out else out
        return cat
    _wrap_state("categorize_endpoints", make)


def _terminating_used_with_ready() -> None:
    # Serving terminating endpoints join the cluster-wide set even when ready ones exist.
    def out(sp, endpoints, result):
        cluster, local, allr, has = result
        if not cluster:
            return result
        extra = tuple(e for e in endpoints if e.serving and e.terminating and e not in cluster)
        merged = tuple(sorted((*cluster, *extra), key=lambda e: e.address))
        return merged, local, merged if allr == cluster else allr, has
    _wrap_categorize(transform_out=out)


def _not_serving_terminating_used() -> None:
    # Every terminating endpoint is taken for a serving one.
    _wrap_categorize(transform_in=lambda e: replace(e, serving=True) if e.terminating else e)


def _no_terminating_fallback() -> None:
    # Only ready endpoints are ever used (kube-proxy before ProxyTerminatingEndpoints).
    _wrap_categorize(transform_in=lambda e: e if e.ready else replace(e, serving=False))


def _no_local_terminating_fallback() -> None:
    # The fallback is applied to the cluster-wide set only, never to the local one.
    def out(sp, endpoints, result):
        cluster, local, allr, has = result
        if local and not any(e.ready for e in local):
            local = ()
            allr = cluster if sp.uses_cluster_endpoints else ()
        return cluster, local, allr, has
    _wrap_categorize(transform_out=out)


# --- Service objects ---------------------------------------------------------------------

def _only_first_slice() -> None:
    # Reads one EndpointSlice per Service (the first by name) and ignores the others.
    def make(orig):
        def eps(b, sl, ports):
            first = b.__dict__.setdefault("_fault_first_slice", {})
            key = (sl.metadata.namespace, proxystate._service_name(sl))
            if first.setdefault(key, sl.metadata.name) != sl.metadata.name:
                return {}
            return orig(b, sl, ports)
        return eps
    _wrap_state("_slice_endpoints", make)


def _label_ignored(label: str) -> None:
    # The objects carrying ``label`` are seen as if it were not there.
    def make(orig):
        def skipped(obj):
            return False if label in (obj.metadata.labels or {}) else orig(obj)
        return skipped
    _wrap_state("_skipped_by_labels", make)


def _service_proxy_name_ignored() -> None:
    _label_ignored(proxystate.SERVICE_PROXY_NAME_LABEL)


def _headless_label_ignored() -> None:
    _label_ignored(proxystate.HEADLESS_LABEL)


def _stale_nodeport_after_type_change() -> None:
    # Keeps a Service's nodePort after the Service stops having one.
    last: dict[tuple[str, str, str, str], int] = {}

    def make(orig):
        def ports(b, svc):
            out = orig(b, svc)
            fixed = []
            for sp in out or []:
                key = (sp.namespace, sp.name, sp.port_name, sp.protocol)
                if sp.node_port:
                    last[key] = sp.node_port
                elif key in last:
                    sp = replace(sp, node_port=last[key])
                fixed.append(sp)
            return fixed if out is not None else None
        return ports
    _wrap_state("_service_ports", make)


def _stale_port_kept() -> None:
    # After a port change, the old port and nodePort still lead to the Service.
    first: dict[tuple[str, str, str], tuple[int, int]] = {}

    def make(orig):
        def spr(ctx, sp):
            out = orig(ctx, sp)
            old = first.setdefault((sp.service_key, sp.port_name, sp.protocol), (sp.port, sp.node_port))
            if old != (sp.port, sp.node_port) and sp.has_endpoints:
                stale = orig(ctx, replace(sp, port=old[0], node_port=old[1]))
                out = replace(out, nat_rules=[*out.nat_rules, *stale.nat_rules])
            return out
        return spr
    _wrap("service_port_rules", make)


def _keep_vanished(what: str) -> None:
    # Service ports that vanish from the proxier's view stay in its state with their last
    # endpoints: whole Services (``what == "services"``) or single ports of a Service that
    # still exists (``"ports"``).
    last: dict[tuple[str, str], dict[tuple[str, str], proxystate.ServicePortInfo]] = {}

    def make(orig):
        def build(cluster, config):
            state = orig(cluster, config)
            now: dict[tuple[str, str], dict[tuple[str, str], proxystate.ServicePortInfo]] = {}
            for sp in state.service_ports:
                now.setdefault((sp.namespace, sp.name), {})[(sp.port_name, sp.protocol)] = sp
            kept = []
            for key, ports in last.items():
                if what == "services" and key not in now:
                    kept += ports.values()
                    now[key] = ports
                elif what == "ports" and key in now:
                    for pk, sp in ports.items():
                        if pk not in now[key]:
                            kept.append(sp)
                            now[key][pk] = sp
            last.clear()
            last.update(now)
            if not kept:
                return state
            merged = sorted((*state.service_ports, *kept), key=lambda sp: (sp.port_name_string, sp.protocol))
            return replace(state, service_ports=tuple(merged))
        return build
    _wrap_state("_build_proxy_state", make)


def _deleted_service_kept() -> None:
    _keep_vanished("services")


def _removed_port_kept() -> None:
    _keep_vanished("ports")


def _externalname_keeps_rules() -> None:
    # A Service changed to type ExternalName keeps the ports it had as a ClusterIP Service.
    last: dict[tuple[str, str], list] = {}

    def make(orig):
        def ports(b, svc):
            key = (svc.metadata.namespace, svc.metadata.name)
            if svc.spec is not None and svc.spec.type == "ExternalName" and key in last:
                return last[key]
            out = orig(b, svc)
            if out:
                last[key] = out
            return out
        return ports
    _wrap_state("_service_ports", make)


def _etp_local_nodeport_types_only() -> None:
    # Found by harness.diff against kube-proxy v1.37.2, whose ExternalPolicyLocal also counts
    # a ClusterIP Service with externalIPs as externally accessible.
    proxystate.external_policy_local = (
        lambda spec: spec.type in ("NodePort", "LoadBalancer") and spec.externalTrafficPolicy == "Local")


FAULTS_LIST: list[Fault] = [
    Fault("hairpin-masquerade-tcp-only", "hairpin traffic is masqueraded for TCP Services only",
          _hairpin_masquerade_tcp_only, ("service/hairpin/clusterip-sees-node-address",)),
    Fault("hairpin-masquerade-clusterip-only", "hairpin traffic is masqueraded only when it came via the ClusterIP",
          _hairpin_masquerade_clusterip_only, ("service/hairpin/nodeport-sees-node-address",)),
    Fault("etp-local-masquerade", "externalTrafficPolicy Local traffic is masqueraded like Cluster",
          _etp_local_masquerade, ("service/etp-local/external-client-source-preserved",)),
    Fault("etp-local-to-remote-endpoints", "externalTrafficPolicy Local traffic is sent to remote endpoints too",
          _etp_local_to_remote_endpoints, ("service/etp-local/external-client-source-preserved",)),
    Fault("etp-local-falls-back-to-cluster", "a node without local endpoints proxies eTP Local traffic as for Cluster",
          _etp_local_falls_back_to_cluster, ("service/etp-local/no-local-endpoint-dropped",)),
    Fault("etp-local-no-pod-short-circuit", "pods reaching an eTP Local nodePort/LB IP get only local endpoints",
          _etp_local_no_pod_short_circuit, ("service/etp-local/pods-and-node-short-circuit",)),
    Fault("etp-local-no-node-short-circuit", "the node's own traffic to an eTP Local nodePort/LB IP gets only local endpoints",
          _etp_local_no_node_short_circuit, ("service/etp-local/pods-and-node-short-circuit",)),
    Fault("health-check-always-200", "the health check node port answers 200 even without local endpoints",
          _health_check_always_200, ("service/etp-local/health-check-nodeport",)),
    Fault("health-check-counts-all-endpoints", "the health check counts the Service's endpoints on every node",
          _health_check_counts_all_endpoints, ("service/etp-local/health-check-nodeport",)),
    Fault("itp-local-ignored", "internalTrafficPolicy Local is ignored (treated as Cluster)",
          _itp_local_ignored, ("service/itp-local/local-endpoints-only",
                               "service/itp-local/no-local-endpoint-dropped")),
    Fault("itp-local-no-local-rejected", "iTP Local without local endpoints is rejected (ICMP), not dropped",
          _itp_local_no_local_rejected, ("service/itp-local/no-local-endpoint-dropped",)),
    Fault("terminating-used-with-ready", "serving terminating endpoints are used even when ready ones exist",
          _terminating_used_with_ready, ("service/terminating/serving-used-only-without-ready",)),
    Fault("not-serving-terminating-used", "terminating endpoints that are not serving are used as a fallback",
          _not_serving_terminating_used, ("service/terminating/not-serving-never-used",)),
    Fault("no-terminating-fallback", "serving terminating endpoints are never used",
          _no_terminating_fallback, ("service/terminating/serving-used-only-without-ready",
                                     "service/terminating/local-policy-fallback")),
    Fault("no-local-terminating-fallback", "Local policies do not fall back to local serving terminating endpoints",
          _no_local_terminating_fallback, ("service/terminating/local-policy-fallback",)),
    Fault("only-first-slice", "only the first EndpointSlice of a Service is read",
          _only_first_slice, ("service/slices/multiple-slices-merged",)),
    Fault("service-proxy-name-ignored", "Services labelled service.kubernetes.io/service-proxy-name are proxied",
          _service_proxy_name_ignored, ("service/labels/not-proxied-when-labelled",)),
    Fault("headless-label-ignored", "EndpointSlices labelled service.kubernetes.io/headless are used",
          _headless_label_ignored, ("service/labels/not-proxied-when-labelled",)),
    Fault("stale-nodeport-after-type-change", "a Service keeps its nodePort after changing to type ClusterIP",
          _stale_nodeport_after_type_change, ("service/type-change/follows-type",)),
    Fault("deleted-service-kept", "a deleted Service keeps being proxied to its last endpoints",
          _deleted_service_kept, ("service/lifecycle/deleted-silent-recreated-works",)),
    Fault("removed-port-kept", "a port removed from a live Service keeps being proxied",
          _removed_port_kept, ("service/port-change/add-and-remove-port",)),
    Fault("externalname-keeps-rules", "a Service changed to ExternalName keeps its ClusterIP rules",
          _externalname_keeps_rules, ("service/type-change/externalname",)),
    Fault("stale-port-kept", "after a port change the old port and nodePort still work",
          _stale_port_kept, ("service/port-change/old-port-stops",)),
    Fault("etp-local-nodeport-types-only",
          "externalTrafficPolicy Local is honoured only on NodePort and LoadBalancer Services, "
          "not on a ClusterIP Service with externalIPs (the reference before differential testing)",
          _etp_local_nodeport_types_only, ("scenario/diff/etp-local-external-ip-pod-source",),
          pytest_args=("scenarios/diff/etp-local-external-ip-pod-source.yaml",)),
]

