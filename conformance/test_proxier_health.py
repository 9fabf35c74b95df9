"""The proxier's own health server: kube-proxy's ``/healthz`` and ``/livez`` on port 10256.

kube-proxy's ProxyHealthServer (pkg/proxy/healthcheck/proxy_health.go; KEP-3836 added
``/livez`` and the node's eligibility): both answer 200 while the proxier has applied
what it was given (a JSON body with ``lastUpdated`` and ``currentTime``); ``/healthz`` also
answers 503 while its node is being deleted (a deletionTimestamp) or is tainted
``ToBeDeletedByClusterAutoscaler``, so a load balancer using it for externalTrafficPolicy
Cluster drains the node, while ``/livez`` stays 200 so the proxier is not restarted. The
server is asked from the node itself (127.0.0.1:10256), as a node-local probe would.
"""

import http.client
import json
import re
from datetime import datetime

import pytest

from harness.api import NodeMeta, PortSpec, eras, expect_true

pytestmark = [pytest.mark.proxier_health, pytest.mark.requires("proxier-healthz")]

REF = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/healthcheck/proxy_health.go"
REF_KEP = ("https://github.com/kubernetes/enhancements/tree/master/keps/sig-network/"
           "3836-kube-proxy-improved-ingress-connectivity-reliability")
PORT = 10256
TAINT = "ToBeDeletedByClusterAutoscaler"


def _get(path, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except OSError as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def ask(node, path, timing):
    """(status, body) of GET ``path`` on the node's 127.0.0.1:10256 (status None: no answer)."""
    return node.call(_get, path, timing.positive_s)


def await_status(node, path, status, timing):
    """Ask until ``path`` answers ``status`` or the positive timeout passes; the last answer."""
    seen = []

    def answered():
        seen.append(ask(node, path, timing))
        return seen[-1][0] == status

    try:
        timing.wait_for(answered, f"{node.name} {path} to answer {status}")
    except TimeoutError:
        pass
    return seen[-1]


# Go's time.Time.String(): "2026-12-04 23:29:16.950260179 +0000 UTC m=+7.935722800"
GO_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4}) \S+(?: m=[+-][\d.]+)?")


def parse_time(value, form):
    """A datetime from ``value`` written in ``form`` (an era of BEHAVIOUR_HEALTHY), or None."""
    if form == "rfc3339":
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    m = GO_TIME.fullmatch(value)
    if not m:
        return None
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    return datetime.strptime(f"{m.group(1)}.{frac} {m.group(3)}", "%Y-%m-%d %H:%M:%S.%f %z")


def timestamp(body, key, form="rfc3339"):
    """``key`` of the JSON ``body`` as a datetime, or None when absent or not in ``form``."""
    try:
        return parse_time(json.loads(body)[key], form)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


BEHAVIOUR_HEALTHY = "service/proxier-health/healthy-after-sync"


@pytest.mark.behavior(
    "service/proxier-health/healthy-after-sync",  # literal: `svc-conformance list` reads ids from the source
    must="After the proxier has applied a change, its /healthz and /livez on port 10256 MUST "
         "answer 200 with a JSON body whose lastUpdated is a real time (not Go's zero time).",
    ref=REF,
)
def test_healthz_and_livez_answer_200_after_a_sync(cluster, timing, proxier_spec):
    # The time's notation changed on purpose in v1.33 (harness/eras.py); a zero time is
    # refused in either.
    form = eras.expectation(BEHAVIOUR_HEALTHY, proxier_spec.release)
    pods = cluster.add_pods(1)
    cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])  # returns once applied
    for node in cluster.nodes:
        for path in ("/healthz", "/livez"):
            status, body = await_status(node, path, 200, timing)
            expect_true(status == 200, f"{node.name} 127.0.0.1:{PORT}{path} after a sync must "
                        "answer 200", f"observed {status}: {body[:300]}")
            last = timestamp(body, "lastUpdated", form)
            expect_true(last is not None and last.year > 1,
                        f"{node.name} {path}: the body must carry lastUpdated, a time ({form}) "
                        "that is not Go's zero time; "
                        + eras.describe(BEHAVIOUR_HEALTHY, proxier_spec.release), body[:300])


@pytest.mark.behavior(
    "service/proxier-health/healthz-node-draining",
    must="While its node is being deleted or is tainted ToBeDeletedByClusterAutoscaler, the "
         "proxier's /healthz MUST answer 503 and its /livez MUST keep answering 200; /healthz "
         "MUST answer 200 again once the node is back.",
    ref=REF_KEP,
)
@pytest.mark.parametrize("how", ["deletion-timestamp", "autoscaler-taint"])
def test_healthz_says_503_on_a_draining_node_while_livez_stays_200(cluster, timing, how):
    if how == "deletion-timestamp" and not cluster.can_mark_node_deleting:
        pytest.skip("the control plane cannot mark a Node as being deleted and take it back "
                    "(kube-apiserver: only a DELETE sets deletionTimestamp); the autoscaler "
                    "taint case checks the same /healthz answer")
    node, other = cluster.nodes[1], cluster.nodes[0]
    meta = (NodeMeta(deletion_timestamp="2026-01-01T00:00:00Z") if how == "deletion-timestamp"
            else NodeMeta(taints=(TAINT,)))
    status, body = await_status(node, "/healthz", 200, timing)
    expect_true(status == 200, f"control: {node.name} /healthz before the change", f"{status}: {body}")

    cluster.set_node_meta(node, meta)
    status, body = await_status(node, "/healthz", 503, timing)
    expect_true(status == 503, f"{node.name} marked ({how}): /healthz must answer 503",
                f"observed {status}: {body[:300]}")
    status, body = ask(node, "/livez", timing)
    expect_true(status == 200, f"{node.name} marked ({how}): /livez must still answer 200",
                f"observed {status}: {body[:300]}")
    status, body = ask(other, "/healthz", timing)
    expect_true(status == 200, f"{other.name} (not marked) /healthz must stay 200",
                f"observed {status}: {body[:300]}")

    cluster.set_node_meta(node, NodeMeta())
    status, body = await_status(node, "/healthz", 200, timing)
    expect_true(status == 200, f"{node.name} unmarked: /healthz must answer 200 again",
                f"observed {status}: {body[:300]}")
