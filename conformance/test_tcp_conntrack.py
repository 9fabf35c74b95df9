"""TCP conntrack timeouts on the node: a half-closed connection through a Service keeps its
NAT state as long as kube-proxy says.

kube-proxy writes ``net.netfilter.nf_conntrack_tcp_timeout_close_wait`` (its
``--conntrack-tcp-timeout-close-wait``, default 1 h) in the node's network namespace at start
(``pkg/proxy/conntrack/sysctls.go``, in every mode). The kernel's own default is 60 s: a
client that keeps a connection open after the server closed its side (CLOSE_WAIT) would
lose the Service's DNAT state after a minute, and its next segments would no longer be
translated. Upstream's e2e (``test/e2e/network/kube_proxy.go``, "should set TCP CLOSE_WAIT
timeout") leaves a connection in CLOSE_WAIT and reads its conntrack entry's timeout on the
node; so does this check, through a ClusterIP.
"""

import math
import time

import pytest

from harness.api import PortSpec, conntrack_entries, entries_text, expect_true

pytestmark = pytest.mark.conntrack

CLOSE_WAIT_TIMEOUT_S = 3600  # kube-proxy's default --conntrack-tcp-timeout-close-wait (1h)
# Bounds: upstream's e2e accepts |timeout - 3600| < 60. Here the entry is read within a second
# or two of the segment that put it in CLOSE_WAIT (its timeout counts down from then), so the
# lower bound's slack is the measured time since then, rounded up, plus a second for the
# kernel rounding the timeout down; the upper bound is the setting itself. The kernel's
# default (60 s) or any timeout the proxier did not set is far outside.
LISTEN_PORT = 7070  # a port of the endpoint pod the echo server does not use


@pytest.mark.behavior(
    "service/conntrack/tcp-close-wait-timeout",
    must="The node's conntrack entry of a TCP connection through a ClusterIP, left in "
         "CLOSE_WAIT (the endpoint closed, the client did not), MUST have the proxier's "
         "CLOSE_WAIT timeout (kube-proxy: --conntrack-tcp-timeout-close-wait, 1 h), not the "
         "kernel's 60 s.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/test/e2e/network/kube_proxy.go",
)
@pytest.mark.requires("conntrack-tcp-timeouts")
def test_a_half_closed_connection_keeps_its_nat_state_for_the_close_wait_timeout(cluster, timing):
    server = cluster.add_pod(cluster.nodes[0], ports=[(8080, "tcp")])
    svc = cluster.create_service([server], ports=[PortSpec(80, LISTEN_PORT, "TCP")])
    node = cluster.nodes[1]  # the client's node: where the ClusterIP is translated
    client = cluster.add_pod(node, ports=[(8080, "tcp")])

    listener = server.socket()
    conn = client.socket()
    try:
        listener.bind((server.ip, LISTEN_PORT))
        listener.listen(1)
        listener.settimeout(timing.positive_s)
        conn.settimeout(timing.positive_s)
        conn.connect((svc.cluster_ip, 80))
        accepted, _ = listener.accept()
        accepted.sendall(b"bye\n")
        accepted.close()  # the server's FIN; the client's kernel ACKs it, the client stays open
        expect_true(read_to_eof(conn) == b"bye\n",
                    f"control: {client.name} -> {svc.cluster_ip}:80 must reach {server.name}'s "
                    f"listener on port {LISTEN_PORT}", "no data before the server's close")
        closed_at = time.monotonic()
        sport = conn.getsockname()[1]

        def in_close_wait():
            found = [e for e in conntrack_entries(node.netns, proto="tcp", orig_dst=svc.cluster_ip,
                                                  orig_dport=80, orig_sport=sport)
                     if e.state == "CLOSE_WAIT"]
            return found or None
        try:
            (entry, *_) = timing.wait_for(in_close_wait, "the CLOSE_WAIT conntrack entry")
        except TimeoutError:
            entries = conntrack_entries(node.netns, proto="tcp", orig_dst=svc.cluster_ip)
            pytest.fail(f"{node.name}: no conntrack entry in CLOSE_WAIT for {client.ip}:{sport} -> "
                        f"{svc.cluster_ip}:80 within {timing.positive_s:.1f}s after the endpoint "
                        f"closed its side; the entries to the ClusterIP:\n{entries_text(entries)}")
        elapsed = time.monotonic() - closed_at
        low = CLOSE_WAIT_TIMEOUT_S - math.ceil(elapsed) - 1
        expect_true(
            entry.timeout is not None and low <= entry.timeout <= CLOSE_WAIT_TIMEOUT_S,
            f"{node.name}: the conntrack entry of {client.ip}:{sport} -> {svc.cluster_ip}:80 in "
            f"CLOSE_WAIT has {entry.timeout} s left, {elapsed:.1f} s after the endpoint closed; "
            f"it must be in [{low}, {CLOSE_WAIT_TIMEOUT_S}] (kube-proxy's "
            "--conntrack-tcp-timeout-close-wait, 1 h, in the node's network namespace; the "
            "kernel's default is 60 s)",
            f"entry: {entry}\nnet.netfilter.nf_conntrack_tcp_timeout_close_wait on {node.name}: "
            f"{read_sysctl(node, 'net.netfilter.nf_conntrack_tcp_timeout_close_wait')}")
    finally:
        conn.close()
        listener.close()


def read_to_eof(conn) -> bytes:
    """What the server sent before its FIN (everything up to the end of the stream)."""
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data


def read_sysctl(node, name: str) -> str:
    r = node.run(["sysctl", "-n", name], check=False)
    return (r.stdout or r.stderr).strip()
