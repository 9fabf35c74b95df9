"""Endpoint churn: endpoints come and go while clients keep opening connections.

A proxier that has acknowledged a new set of endpoints MUST NOT send a new connection to an
endpoint it removed, and while a Service keeps at least one endpoint its clients MUST NOT
see refusals or silence (kube-proxy replaces a Service's chains in one atomic
iptables-restore, so every new connection meets either the old or the new set). The time
from publishing a change to its first visible effect is measured and reported as
informational (``convergence`` in the report), never asserted against a wall clock.

A probing thread opens one new TCP connection after another from a pod on the other node
(where the DNAT happens) while the test adds and removes endpoints; every removed pod stays
up, so a connection that should not have reached it is answered and seen.
"""

import threading
import time

import pytest

from harness.api import Outcome, PortSpec, churn_timeline, probe

pytestmark = pytest.mark.churn

# Per change: if k of the n endpoints in the rules are removed ones, 40 connections all miss
# them with probability ((n-k)/n)^40 <= (3/4)^40 ~ 1e-5 (here n <= 5, k >= 1), and the four
# changes multiply.
MIN_PROBES_AFTER_ACK = 40


class Prober:
    """Opens connections back to back on a thread; each record: (start, end, Observation)."""

    def __init__(self, src, dst, port, timing):
        self.src, self.dst, self.port, self.timing = src, dst, port, timing
        self.records = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn-prober", daemon=True)
        self.error = None

    def _run(self):
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                (o,) = probe(self.src, self.dst, self.port, "tcp", timeout=self.timing.positive_s)
                self.records.append((t0, time.monotonic(), o))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def count_since(self, t):
        return sum(1 for s, _, _ in self.records if s >= t)

    def wait_probes_since(self, t, n):
        self.timing.wait_for(lambda: self.count_since(t) >= n or self.error,
                             f"{n} probes after the acknowledgement", timeout=10 * self.timing.positive_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10 * self.timing.positive_s)


@pytest.mark.behavior(
    "service/churn/no-removed-endpoint-after-ack",
    must="After the proxier acknowledges an endpoint change, no new connection MUST reach a "
         "removed endpoint, and no connection MUST fail while the Service has endpoints.",
    ref="https://kubernetes.io/docs/reference/networking/virtual-ips/",
)
def test_no_new_connection_reaches_a_removed_endpoint(cluster, timing, record_property):
    node = cluster.nodes[0]
    pool = cluster.add_pods(5, node=node)
    a, b, c, d, e = pool
    # (endpoints after the change); every step removes at least one and keeps at least two
    steps = [[a, b, c], [b, c, d], [c, d, e], [d, e, a], [e, a, b]]
    svc = cluster.create_service(steps[0], ports=[PortSpec(80, 8080, "TCP")])
    src = cluster.add_pod(cluster.nodes[1])

    changes = []  # (published, acked, endpoints now, removed)
    prober = Prober(src, svc.cluster_ip, 80, timing)
    try:
        with prober:
            prober.wait_probes_since(0, MIN_PROBES_AFTER_ACK)
            current = steps[0]
            for nxt in steps[1:]:
                removed = {p.name for p in current} - {p.name for p in nxt}
                published = time.monotonic()
                svc.set_endpoints(nxt)
                acked = time.monotonic()
                changes.append((published, acked, {p.name for p in nxt}, removed))
                prober.wait_probes_since(acked, MIN_PROBES_AFTER_ACK)
                current = nxt
    finally:
        # the probes as a timeline for the report, also when the probing stalled
        record_property("churn_timeline", churn_timeline(list(prober.records), changes,
                                                         [p.name for p in steps[0]]))
    assert prober.error is None, f"the probing thread failed: {prober.error!r}"

    violations, failures, convergence = [], [], []
    for i, (published, acked, now, removed) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else float("inf")
        window = [(s, o) for s, _, o in prober.records if published <= s < until]
        added = now - (changes[i - 1][2] if i else {p.name for p in steps[0]})
        first_new = next((s for s, o in window if o.pod in added), None)
        last_old = max((s for s, o in window if o.pod in removed), default=None)
        convergence.append({
            "change": i + 1, "removed": sorted(removed), "added": sorted(added),
            "ack_s": round(acked - published, 4),
            "first_reply_from_added_s": None if first_new is None else round(first_new - published, 4),
            "last_reply_from_removed_s": None if last_old is None else round(last_old - published, 4),
            "probes": len(window),
        })
        for s, o in window:
            if s >= acked and o.pod in removed:
                violations.append(f"change {i + 1} (removed {sorted(removed)}), "
                                  f"{(s - acked) * 1000:.0f} ms after the ack: {o}")
    for s, _, o in prober.records:
        if o.outcome is not Outcome.REPLY:
            failures.append(f"t={s - changes[0][0]:+.3f}s: {o}")
    record_property("convergence", convergence)
    record_property("probes", len(prober.records))

    assert not violations and not failures, (
        f"{len(prober.records)} connections to {svc.cluster_ip}:80 from {src.name} during "
        f"{len(changes)} endpoint changes.\nreached a removed endpoint after the proxier "
        f"acknowledged ({len(violations)}):\n  " + "\n  ".join(violations[:15] or ["none"])
        + f"\nfailed ({len(failures)}):\n  " + "\n  ".join(failures[:15] or ["none"])
        + f"\nconvergence per change: {convergence}"
    )
