"""INVALID packets: a segment conntrack cannot place must not reach a client un-NATed.

A backend's TCP segment that is outside the connection's window (a late retransmission
after the window moved, a middlebox's mangled packet) is conntrack state INVALID: conntrack
does not translate it, so without a rule it is forwarded with the backend's own address.
The client, which talks to the ClusterIP, does not know that address and answers with a
RST that reaches the backend and kills the connection ("connection reset by peer",
kubernetes#74839). kube-proxy's iptables mode drops it:
``-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`` (omitted only when
nf_conntrack_tcp_be_liberal is set).

The check injects such a segment with scapy from the backend's namespace (source address and
port of the backend's side of a live connection, sequence number far beyond the client's
window) and watches the client's interface and the connection itself.
"""


import pytest

from harness.api import (
    PortSpec,
    ip_header,
    ip_layer,
    read_greeting,
    read_line,
    send_crafted,
    sniff_in,
)

pytestmark = [pytest.mark.invalid, pytest.mark.requires("invalid-drop")]

OUT_OF_WINDOW = 1 << 30  # bytes beyond the backend's next sequence number


def _tcp(pkt):
    from scapy.layers.inet import TCP

    return ip_layer(pkt) if TCP in pkt else None


@pytest.mark.behavior(
    "service/invalid/out-of-window-not-leaked",
    must="An out-of-window TCP segment from a backend MUST NOT reach the client un-NATed, and "
         "the client's connection through the ClusterIP MUST survive it.",
    ref="https://github.com/kubernetes/kubernetes/issues/74839",
)
def test_out_of_window_segment_from_backend_is_dropped(cluster, timing):
    from scapy.layers.inet import TCP

    backend = cluster.add_pod(cluster.nodes[0], ports=[(8080, "tcp")])
    svc = cluster.create_service([backend], ports=[PortSpec(80, 8080, "TCP")])
    client = cluster.add_pod(cluster.nodes[1])

    with sniff_in(backend) as at_backend:
        sock = client.socket()
        try:
            sock.connect((svc.cluster_ip, 80))
            hello = read_greeting(sock, timing.positive_s)
            sock.sendall(b"before\n")
            echoed = read_line(sock, timing.positive_s)
            assert b"before" in echoed, f"the echo server did not echo: {echoed!r}"
            sport = int(hello["sport"])
            # the backend's last segment to the client: its next sequence number, and the
            # client's (what it acknowledged)
            mine = [_tcp(p) for p in at_backend.packets(wait=timing.silence_s)
                    if _tcp(p) is not None and _tcp(p).src == backend.ip and p[TCP].dport == sport]
            assert mine, "no segment of the backend's side of the connection was captured"
            last = mine[-1]
            nxt = last[TCP].seq + len(bytes(last[TCP].payload))
            ack = last[TCP].ack
            segment = (ip_header(backend.ip, hello["src"])
                       / TCP(sport=8080, dport=sport, flags="PA", seq=(nxt + OUT_OF_WINDOW) % (1 << 32),
                             ack=ack, window=502)
                       / b"out of window\n")

            with sniff_in(client) as at_client:
                send_crafted(backend, segment)
                leaked = [_tcp(p) for p in at_client.packets(wait=timing.silence_s)
                          if _tcp(p) is not None and _tcp(p).src == backend.ip]
            survived, detail = True, ""
            try:
                sock.sendall(b"after\n")
                data = read_line(sock, timing.positive_s)
                survived = b"after" in data
                detail = f"got {data!r}"
            except OSError as e:
                survived, detail = False, f"{type(e).__name__}: {e}"
        finally:
            sock.close()

    assert not leaked and survived, (
        f"out-of-window segment {backend.ip}:8080 -> {hello['src']}:{sport} seq={segment[TCP].seq} "
        f"(backend's next seq {nxt}) injected in {backend.name}:\n"
        f"  reached the client un-NATed: {[p.summary() for p in leaked] or 'no'}\n"
        f"  connection to {svc.cluster_ip}:80 afterwards: "
        f"{'alive' if survived else 'broken'} ({detail})\n"
        "expected: dropped as conntrack INVALID (KUBE-FORWARD), connection alive"
    )
