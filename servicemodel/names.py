"""Kubernetes names the harness and the reference proxier share: well-known labels and the
Service port protocols. One place, imported by both."""

#: EndpointSlice label naming its Service
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: Service label: another proxier serves this Service (kube-proxy skips it)
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
#: Service label of a headless Service (kube-proxy skips it)
HEADLESS_LABEL = "service.kubernetes.io/headless"
#: Service port protocols, as the API spells them
PROTOCOLS = ("TCP", "UDP", "SCTP")
