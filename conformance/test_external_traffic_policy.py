"""externalTrafficPolicy: Local — external traffic goes only to node-local endpoints, keeps
the client's source address, and is dropped by nodes without a local endpoint; pods and the
node itself still reach the Service from any node (the short-circuit); the health check
node port tells a load balancer which nodes have local endpoints.

Kubernetes docs, "Preserving the client source IP" and "Traffic policies"; kube-proxy
(iptables and nftables) sends external destinations (nodePorts, externalIPs, LB IPs) to
the KUBE-EXT chain: pod sources and the node's own (LOCAL) sources go to the cluster-wide
chain, everything else only to local endpoints, unmasqueraded; with no local endpoint the
filter table DROPs it. The test bed routes 203.0.113.0/24 (LB IPs) from the client to
node1 (``cluster.nodes[0]``); nodes are reached on their lan addresses directly.
"""

import http.client
import json

import pytest

from harness.api import PortSpec, dropped, expect, probe, reached_only, source_seen

pytestmark = pytest.mark.traffic_policy

REF_SOURCE = ("https://kubernetes.io/docs/tasks/access-application-cluster/"
              "create-external-load-balancer/#preserving-the-client-source-ip")
REF_POLICY = "https://kubernetes.io/docs/reference/networking/virtual-ips/#external-traffic-policy"
REF_CODE = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go"
REF_HC = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/healthcheck/service_health.go"


def local_service(cluster, pods, lb_ip=None, type="NodePort"):
    kw = {"load_balancer_ips": [lb_ip]} if lb_ip else {}
    if lb_ip:
        type = "LoadBalancer"
    return cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type=type,
                                  external_traffic_policy="Local", **kw)


@pytest.mark.behavior(
    "service/etp-local/external-client-source-preserved",
    must="With externalTrafficPolicy Local, external traffic to a nodePort or LB IP MUST reach "
         "only endpoints on the receiving node, and the endpoint MUST see the client's own address.",
    ref=REF_SOURCE,
)
@pytest.mark.parametrize("via", ["nodeport", "lb-ip"])
def test_external_client_source_is_preserved(cluster, via):
    # The receiving node: node2 for its nodePort, node1 (the client's route) for the LB IP.
    target = cluster.nodes[1] if via == "nodeport" else cluster.nodes[0]
    other = next(n for n in cluster.nodes if n is not target)
    local, remote = cluster.add_pod(target), cluster.add_pod(other)
    lb_ip = cluster.lb_ip(31) if via == "lb-ip" else None
    svc = local_service(cluster, [local, remote], lb_ip)
    dst, port = (lb_ip, 80) if lb_ip else (target.ip, svc.node_port())
    client = cluster.client

    obs = probe(client, dst, port, "tcp", count=8)

    what = f"client {client.ip} → {via} {dst}:{port} (received by {target.name}, eTP Local)"
    v = reached_only(obs, {local.name})
    expect(v, f"{what}: only {local.name} (local to {target.name}) may answer, not "
                      f"{remote.name} on {other.name}")
    v = source_seen(obs, client.ip)
    expect(v, f"{what}: the endpoint must see the client's address")


@pytest.mark.behavior(
    "service/etp-local/no-local-endpoint-dropped",
    must="With externalTrafficPolicy Local, external traffic to a nodePort or LB IP received by "
         "a node without a local endpoint MUST be dropped (no reply, no reset, no ICMP error).",
    ref=REF_CODE,
)
@pytest.mark.parametrize("via", ["nodeport", "lb-ip"])
def test_external_traffic_without_local_endpoint_is_dropped(cluster, timing, via):
    # nodeport: endpoints on node1, probe node2. lb-ip: endpoints on node2, the LB IP is
    # routed to node1.
    with_ep, without = (cluster.nodes[0], cluster.nodes[1]) if via == "nodeport" else (cluster.nodes[1], cluster.nodes[0])
    pods = cluster.add_pods(2, node=with_ep)
    lb_ip = cluster.lb_ip(32) if via == "lb-ip" else None
    svc = local_service(cluster, pods, lb_ip)
    client = cluster.client

    # Control: the node with endpoints answers on its nodePort, so silence below is the policy.
    v = reached_only(probe(client, with_ep.ip, svc.node_port(), "tcp", count=2), {p.name for p in pods})
    expect(v, f"control: client → {with_ep.name}:{svc.node_port()} (has local endpoints)")
    dst, port = (lb_ip, 80) if lb_ip else (without.ip, svc.node_port())
    obs = probe(client, dst, port, "tcp", count=4, timeout=timing.silence_s)

    v = dropped(obs)
    expect(v, f"client → {via} {dst}:{port}, received by {without.name} which has no local "
                      f"endpoint (endpoints only on {with_ep.name}, eTP Local)")


@pytest.mark.behavior(
    "service/etp-local/pods-and-node-short-circuit",
    must="With externalTrafficPolicy Local, pods and the node itself MUST reach the Service at "
         "a node's nodePort or an LB IP even when that node has no local endpoint.",
    ref=REF_POLICY,
)
@pytest.mark.parametrize("via", ["nodeport", "lb-ip"])
@pytest.mark.parametrize("where", ["pod", "node"])
def test_pods_and_node_short_circuit_to_any_endpoint(cluster, where, via):
    gateway, with_ep = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.add_pods(2, node=with_ep)  # node1 has no local endpoint
    lb_ip = cluster.lb_ip(33 if where == "pod" else 34) if via == "lb-ip" else None
    svc = local_service(cluster, pods, lb_ip)
    src = cluster.add_pod(gateway) if where == "pod" else gateway
    dst, port = (lb_ip, 80) if lb_ip else (gateway.ip, svc.node_port())

    obs = probe(src, dst, port, "tcp", count=6)

    v = reached_only(obs, {p.name for p in pods})
    expect(v, f"{where} {src.name} ({src.ip}) on {gateway.name} (no local endpoint) → {via} "
                      f"{dst}:{port}: endpoints on {with_ep.name} must answer (eTP Local)")


def _http_get(ip: str, port: int, timeout: float) -> tuple[int, bytes] | None:
    """GET / on ip:port; None when nothing listens yet (refused)."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    except ConnectionRefusedError:
        return None
    finally:
        conn.close()


def health(cluster, timing, node, port):
    """(status, localEndpoints) from ``node``'s health check node port, fetched by the client."""
    client = cluster.client
    status, body = timing.wait_for(
        lambda: client.call(_http_get, node.ip, port, timing.positive_s),
        f"an HTTP answer from {node.name} ({node.ip}):{port} (health check node port) to {client.name}",
    )
    try:
        count = json.loads(body).get("localEndpoints")
    except (ValueError, AttributeError):
        count = f"(unparsable body {body[:200]!r})"
    return status, count


@pytest.mark.behavior(
    "service/etp-local/health-check-nodeport",
    must="For a LoadBalancer Service with externalTrafficPolicy Local, every node MUST answer "
         "HTTP on the healthCheckNodePort: 200 with its local endpoint count when it has local "
         "ready endpoints, 503 when it has none, following endpoint changes.",
    ref=REF_HC,
)
@pytest.mark.loadbalancer
@pytest.mark.requires("health-check-nodeport")
def test_health_check_node_port_reports_local_endpoints(cluster, timing):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.add_pods(2, node=n1)
    svc = local_service(cluster, pods, cluster.lb_ip(35))
    port = svc.spec.health_check_node_port
    assert port, f"{svc.name}: the harness gave no healthCheckNodePort"

    def check(expected, step):
        # kube-proxy updates its health server just after writing the rules that the
        # harness saw applied, so the answer is awaited (bounded), not read once.
        seen: dict = {}

        def reported() -> bool:
            seen.update({n.name: health(cluster, timing, n, port) for n in (n1, n2)})
            return seen == expected

        try:
            timing.wait_for(reported, f"health check node port {port} to report {expected}")
        except TimeoutError:
            pass
        assert seen == expected, (
            f"{step}: health check node port {port} of {svc.name} (eTP Local), fetched from "
            f"{cluster.client.name}: expected (status, localEndpoints) {expected}, observed {seen}"
        )

    check({n1.name: (200, 2), n2.name: (503, 0)}, "2 endpoints on node1")
    moved = cluster.add_pod(n2)
    svc.set_endpoints([moved])
    check({n1.name: (503, 0), n2.name: (200, 1)}, "endpoints moved to 1 pod on node2")
