"""kube-proxy's ProxyHealthServer answers (refproxier.proxyhealth)."""

import json
from types import SimpleNamespace as NS

from refproxier.proxyhealth import ProxyHealth, node_eligible, parse_bind_address


class Clock:
    def __init__(self):
        self.t = 1_700_000_000.0

    def __call__(self):
        return self.t


def node(deleting=False, taints=()):
    return NS(metadata=NS(deletionTimestamp="2026-01-01T00:00:00Z" if deleting else None),
              spec=NS(taints=[NS(key=k) for k in taints]))


def test_healthy_after_a_sync_with_last_updated_now():
    clock = Clock()
    h = ProxyHealth(60, clock)
    h.queued_update(4)
    h.updated(4)
    clock.t += 5
    for path in ("/healthz", "/livez"):
        status, body = h.answer(path)
        assert status == 200
        assert json.loads(body)["lastUpdated"] == json.loads(body)["currentTime"]
    assert json.loads(h.answer("/healthz")[1])["nodeEligible"] is True


def test_an_update_queued_longer_than_the_timeout_is_unhealthy():
    clock = Clock()
    h = ProxyHealth(60, clock)
    h.updated(4)
    h.queued_update(4)
    clock.t += 61
    assert h.answer("/healthz")[0] == h.answer("/livez")[0] == 503


def test_a_draining_node_fails_healthz_only():
    h = ProxyHealth(60, Clock())
    for n in (node(deleting=True), node(taints=("ToBeDeletedByClusterAutoscaler",))):
        assert not node_eligible(n)
        h.sync_node(n)
        assert h.answer("/healthz")[0] == 503
        assert json.loads(h.answer("/healthz")[1])["nodeEligible"] is False
        assert h.answer("/livez")[0] == 200
    h.sync_node(node(taints=("other",)))
    assert h.answer("/healthz")[0] == 200
    assert h.answer("/metrics")[0] == 404


def test_bind_address():
    assert parse_bind_address("0.0.0.0:10256") == ("0.0.0.0", 10256)
    assert parse_bind_address("[::]:10256") == ("::", 10256)
