"""The EndpointSlice controller's hints for trafficDistribution (harness.trafficdist)."""

from harness.model import EndpointSpec, SliceSpec
from harness.trafficdist import reconcile


def sl(*eps):
    return [SliceSpec("s", list(eps), [("", 80, "TCP")])]


def hints(slices):
    return [(e.for_zones, e.for_nodes) for e in slices[0].endpoints]


def test_prefer_close_and_same_zone_hint_ready_endpoints_for_their_zone():
    for td in ("PreferClose", "PreferSameZone"):
        out = reconcile(td, sl(EndpointSpec("10.0.0.1", "n1", zone="a"),
                               EndpointSpec("10.0.0.2", "n2")))
        assert hints(out) == [(("a",), None), (None, None)]


def test_prefer_same_node_adds_node_hints():
    out = reconcile("PreferSameNode", sl(EndpointSpec("10.0.0.1", "n1", zone="a")))
    assert hints(out) == [(("a",), ("n1",))]


def test_unready_endpoints_keep_their_hints_and_other_values_clear_them():
    e = EndpointSpec("10.0.0.1", "n1", zone="a", ready=False, for_zones=("b",))
    assert hints(reconcile("PreferClose", sl(e))) == [(("b",), None)]
    assert hints(reconcile("Other", sl(e))) == [(None, None)]
    assert hints(reconcile(None, sl(e))) == [(("b",), None)]  # unset: the test's own hints
