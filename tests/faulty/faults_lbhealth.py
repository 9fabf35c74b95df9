"""Faulty proxiers for LoadBalancer ipMode and health checking (issue 20, items 2-4):
ipMode Proxy treated as VIP, the health check node port's life cycle, and the proxier's own
/healthz and /livez (``refproxier.proxyhealth``)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from tests.faulty.faults import Fault

CAPS = ("acks,localhost-nodeports,masquerade-mark,affinity,reject-no-endpoints,"
        "health-check-nodeport,udp-conntrack-cleanup,ipv6,lb-ip-mode,proxier-healthz")


def _ip_mode_proxy_ignored() -> None:
    # Every ingress IP is claimed by the node, ipMode Proxy too (kube-proxy before KEP-1860).
    from refproxier import proxystate

    orig = proxystate._service_ports

    def service_ports(b, svc):
        ports = orig(b, svc)
        ingress = (svc.status.loadBalancer.ingress
                   if svc.status and svc.status.loadBalancer else None) or []
        every = tuple(i.ip for i in ingress
                      if i.ip and ipaddress.ip_address(i.ip).version == b.config.ip_family)
        if not ports or not every:
            return ports
        return [replace(sp, load_balancer_ips=every) for sp in ports]
    proxystate._service_ports = service_ports


def _ip_mode_unset_is_proxy() -> None:
    # An ingress IP without ipMode is left to the load balancer, as if it said Proxy (the
    # API's default is VIP).
    from refproxier import proxystate

    orig = proxystate._service_ports

    def service_ports(b, svc):
        ports = orig(b, svc)
        ingress = (svc.status.loadBalancer.ingress
                   if svc.status and svc.status.loadBalancer else None) or []
        unset = {i.ip for i in ingress if i.ip and not i.ipMode}
        if not ports or not unset:
            return ports
        return [replace(sp, load_balancer_ips=tuple(ip for ip in sp.load_balancer_ips
                                                    if ip not in unset)) for sp in ports]
    proxystate._service_ports = service_ports


def _hc_counts_serving_terminating() -> None:
    # The health check node port counts serving-terminating local endpoints as healthy.
    from refproxier import proxystate

    def health_checks(self):
        ips: dict[str, set[str]] = {}
        for sp in self.service_ports:
            ips.setdefault(sp.service_key, set()).update(
                ep.ip for ep in sp.endpoints if ep.is_local and (ep.ready or ep.serving))
        seen = {}
        for sp in self.service_ports:
            if sp.health_check_node_port and (sp.namespace, sp.name) not in seen:
                seen[(sp.namespace, sp.name)] = proxystate.HealthCheck(
                    sp.namespace, sp.name, sp.health_check_node_port, len(ips[sp.service_key]))
        return list(seen.values())
    proxystate.ProxyState.health_checks = health_checks


def _etp_fixed_at_creation() -> None:
    # A Service keeps the externalTrafficPolicy (and health check node port) it had when
    # the proxier first saw it.
    from refproxier import proxystate

    first: dict[tuple[str, str, str, str], tuple[bool, int]] = {}
    orig = proxystate._service_ports

    def service_ports(b, svc):
        out = orig(b, svc)
        if out is None:
            return None
        kept = []
        for sp in out:
            local, hc = first.setdefault((sp.namespace, sp.name, sp.port_name, sp.protocol),
                                         (sp.external_policy_local, sp.health_check_node_port))
            kept.append(replace(sp, external_policy_local=local, health_check_node_port=hc))
        return kept
    proxystate._service_ports = service_ports


def _healthz_ignores_node() -> None:
    # /healthz stays 200 on a node being deleted or drained by the cluster autoscaler.
    from refproxier import proxyhealth

    proxyhealth.node_eligible = lambda node: True


def _livez_follows_node() -> None:
    # /livez answers like /healthz: 503 on a node being deleted (the proxier would be restarted).
    from refproxier import proxyhealth

    orig = proxyhealth.ProxyHealth.answer

    def answer(self, path):
        if path.split("?", 1)[0] == "/livez":
            status, body = orig(self, "/healthz")
            return status, body
        return orig(self, path)
    proxyhealth.ProxyHealth.answer = answer


def _healthz_without_last_updated() -> None:
    # The body leaves out lastUpdated.
    from refproxier import proxyhealth

    orig = proxyhealth.ProxyHealth.answer

    def answer(self, path):
        status, body = orig(self, path)
        return status, body.replace('"lastUpdated"', '"updated"')
    proxyhealth.ProxyHealth.answer = answer


FAULTS_LIST = [
    Fault("lb-ip-mode-proxy-ignored", "LB ingress IPs with ipMode Proxy are proxied like VIPs",
          _ip_mode_proxy_ignored, ("service/loadbalancer/ip-mode-proxy/not-short-circuited",),
          capabilities=CAPS),
    Fault("lb-ip-mode-unset-is-proxy", "LB ingress IPs without ipMode are not proxied (as Proxy)",
          _ip_mode_unset_is_proxy, ("service/loadbalancer/ip-mode-vip/short-circuited",),
          capabilities=CAPS),
    Fault("hc-counts-serving-terminating",
          "the health check node port counts serving-terminating local endpoints",
          _hc_counts_serving_terminating,
          ("service/etp-local/health-check-nodeport/serving-terminating-unhealthy",),
          capabilities=CAPS),
    Fault("etp-fixed-at-creation",
          "externalTrafficPolicy and the health check node port keep their first value",
          _etp_fixed_at_creation,
          ("service/etp-local/health-check-nodeport/follows-policy-changes",), capabilities=CAPS),
    Fault("healthz-ignores-node", "/healthz stays 200 on a node being deleted or drained",
          _healthz_ignores_node, ("service/proxier-health/healthz-node-draining",),
          capabilities=CAPS),
    Fault("livez-follows-node", "/livez turns 503 with /healthz on a node being deleted",
          _livez_follows_node, ("service/proxier-health/healthz-node-draining",),
          capabilities=CAPS),
    Fault("healthz-without-last-updated", "/healthz and /livez leave lastUpdated out",
          _healthz_without_last_updated, ("service/proxier-health/healthy-after-sync",),
          capabilities=CAPS),
]
