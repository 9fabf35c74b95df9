"""The feature markers: one per Service feature a check belongs to (registered by
``harness.plugin``, used by scenario files' ``features``, grouped by in reports)."""

FEATURE_MARKERS = {
    "dnat": "ClusterIP DNAT to the Service's ready endpoints",
    "distribution": "load-balancing distribution over endpoints",
    "affinity": "sessionAffinity ClientIP",
    "nodeport": "NodePort reachability",
    "no_endpoints": "Services without endpoints are refused",
    "masquerade": "SNAT / masquerade and the masquerade mark",
    "externalips": "spec.externalIPs",
    "loadbalancer": "LoadBalancer ingress IPs and loadBalancerSourceRanges",
    "traffic_policy": "externalTrafficPolicy / internalTrafficPolicy Local",
    "hairpin": "a pod reaching itself through its Service",
    "terminating": "terminating endpoints and their fallback",
    "conntrack": "UDP flows and conntrack cleanup",
    "invalid": "INVALID packets (kube-proxy's ct state INVALID drop)",
    "churn": "endpoint churn while traffic flows",
    "restart": "proxier restarts and flushed rules",
    "slices": "multiple EndpointSlices, selector-less Services, proxy labels, type changes",
    "ipv6": "IPv6 and dual-stack Services",
    "sctp": "SCTP Services",
    "topology": "topology-aware routing: zone and node hints, trafficDistribution",
    "proxier_health": "the proxier's own health server (/healthz, /livez)",
    "scenario": "declarative scenario files (scenarios/)",
    "smoke": "the harness itself: topology, echo, probes",
    "slow": "takes more than a few seconds",
}
