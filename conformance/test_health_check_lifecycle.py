"""The health check node port over a Service's life: what a cloud load balancer asks each
node ("may I send you external traffic?") must follow the node's local endpoints and the
Service's externalTrafficPolicy.

kube-proxy's ServiceHealthServer (pkg/proxy/healthcheck/service_health.go) answers 200 with
``localEndpoints`` = the node's local *ready* endpoints, 503 with none: a node whose local
endpoints are all serving-and-terminating says 503, so the load balancer drains it, while
the traffic still arriving goes to those endpoints (KEP-1669). The port exists only while
the Service has externalTrafficPolicy Local: switched to Cluster, the API server clears
``healthCheckNodePort`` and kube-proxy closes the server, and external traffic is
masqueraded again; switched back, a port is allocated again and served. The test bed routes
the LB range (203.0.113.0/24) from the client to node1 (``cluster.nodes[0]``).
"""

import http.client
import json

import pytest

from harness.api import (
    EndpointSpec,
    PortSpec,
    expect,
    expect_true,
    probe,
    reached_only,
    source_seen,
)

pytestmark = [pytest.mark.traffic_policy, pytest.mark.loadbalancer,
              pytest.mark.requires("health-check-nodeport")]

REF_HC = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/healthcheck/service_health.go"
REF_KEP_1669 = ("https://github.com/kubernetes/enhancements/tree/master/keps/sig-network/"
                "1669-proxy-terminating-endpoints")
REF_ETP = "https://kubernetes.io/docs/reference/networking/virtual-ips/#external-traffic-policy"
CLOSED = "closed (connection refused)"


def _http_get(ip, port, timeout):
    """(status, localEndpoints) from GET / on ip:port, or CLOSED when nothing listens."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read()
    except ConnectionRefusedError:
        return CLOSED
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body).get("localEndpoints")
    except (ValueError, AttributeError):
        return resp.status, f"(unparsable body {body[:200]!r})"


def await_health(cluster, timing, node, port, expected):
    """What ``node``'s health check node port says, asked by the client until it says
    ``expected`` (kube-proxy updates the server just after the rules the harness saw
    applied) or the positive timeout passes; the last answer."""
    seen = []

    def answered():
        seen.append(cluster.client.call(_http_get, node.ip, port, timing.positive_s))
        return seen[-1] == expected

    try:
        timing.wait_for(answered, f"health check node port {node.ip}:{port} to answer {expected}")
    except TimeoutError:
        pass
    return seen[-1]


def state(pod, ready):
    """``pod`` as a ready endpoint, or as a serving-and-terminating one."""
    return EndpointSpec(ip=pod.ip, node=pod.node.name, pod=pod.name, ready=ready, serving=True,
                        terminating=not ready)


@pytest.mark.behavior(
    "service/etp-local/health-check-nodeport/serving-terminating-unhealthy",
    must="A node whose only local endpoints of an externalTrafficPolicy Local Service are serving "
         "and terminating MUST answer 503 (0 local endpoints) on the healthCheckNodePort, while "
         "the external traffic it still receives MUST reach those endpoints.",
    ref=REF_KEP_1669,
)
def test_health_check_says_503_while_terminating_endpoints_still_serve(cluster, timing):
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    local, remote = cluster.add_pod(n1), cluster.add_pod(n2)
    lb_ip = cluster.lb_ip(67)
    svc = cluster.create_service([state(local, True), state(remote, True)],
                                 ports=[PortSpec(80, 8080, "TCP")], type="LoadBalancer",
                                 load_balancer_ips=[lb_ip], external_traffic_policy="Local")
    port = svc.spec.health_check_node_port

    seen = await_health(cluster, timing, n1, port, (200, 1))
    expect_true(seen == (200, 1), f"control: {n1.name}:{port} with ready local endpoint "
                f"{local.name} must answer (status, localEndpoints) (200, 1)", f"observed {seen}")

    svc.set_endpoints([state(local, False), state(remote, True)])
    seen = await_health(cluster, timing, n1, port, (503, 0))
    expect_true(seen == (503, 0), f"{n1.name}:{port}, whose only local endpoint {local.name} is "
                "serving and terminating, must answer (503, 0)", f"observed {seen}")
    obs = probe(cluster.client, lb_ip, 80, "tcp", count=6)
    expect(reached_only(obs, {local.name}),
           f"client → LB IP {lb_ip}:80 via {n1.name} (eTP Local, local endpoint terminating): "
           f"the traffic still arriving must reach {local.name}, not {remote.name} on {n2.name}")


@pytest.mark.behavior(
    "service/etp-local/health-check-nodeport/follows-policy-changes",
    must="Switching a LoadBalancer Service from externalTrafficPolicy Local to Cluster MUST close "
         "its healthCheckNodePort and masquerade external traffic again; switching it back MUST "
         "serve the new healthCheckNodePort and preserve the client's address again.",
    ref=REF_ETP,
)
def test_health_check_port_and_masquerade_follow_the_policy(cluster, timing):
    n1 = cluster.nodes[0]
    pods = cluster.add_pods(2, node=n1)
    names = {p.name for p in pods}
    lb_ip = cluster.lb_ip(68)
    client = cluster.client
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="LoadBalancer",
                                 load_balancer_ips=[lb_ip], external_traffic_policy="Local")

    def step(policy, port, expected_hc, source_ok, source_what):
        seen = await_health(cluster, timing, n1, port, expected_hc)
        expect_true(seen == expected_hc, f"eTP {policy}: health check node port {n1.name}:{port} "
                    f"must be {expected_hc}", f"observed {seen}")
        obs = probe(client, lb_ip, 80, "tcp", count=6)
        what = f"eTP {policy}: client {client.ip} → LB IP {lb_ip}:80 via {n1.name}"
        expect(reached_only(obs, names), what)
        expect(source_seen(obs, source_ok, description=source_what), what)

    def preserved(src):
        return src == client.ip

    def masqueraded(src):
        return src is not None and src != client.ip

    first = svc.spec.health_check_node_port
    step("Local", first, (200, 2), preserved, f"the client's own address {client.ip}")
    svc.update(external_traffic_policy="Cluster")
    step("Cluster (from Local)", first, CLOSED, masqueraded, f"a node address, not {client.ip}")
    svc.update(external_traffic_policy="Local")
    step("Local (from Cluster)", svc.spec.health_check_node_port, (200, 2), preserved,
         f"the client's own address {client.ip}")
