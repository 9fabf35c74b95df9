"""ServiceCIDR objects in nftables mode: their CIDRs join ``--service-cidr``'s in the drop
rule for unallocated ClusterIPs (kube-proxy ``OnServiceCIDRsChanged``), per family, and a
change of them alone is written at the next full sync, as kube-proxy's setupNFTables."""

from __future__ import annotations

from harness import model
from refproxier.nftables import render_nft
from refproxier.proxystate import changed_services
from tests.unit.refproxier.builders import ep, eps_slice, proxy_state, service
from tests.unit.refproxier_nft.builders import nft_config

SVC = [service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1")])]


def drop_rules(script: str) -> list[str]:
    return [ln for ln in script.splitlines() if "cluster-ips-check" in ln and " drop " in ln]


def test_service_cidr_objects_are_added_per_family():
    cfg = nft_config()
    objs = [*SVC, model.service_cidr_object("extra", ["172.31.0.0/24", "fd00:10:97::/112"])]
    st = proxy_state(*objs, config=cfg)
    assert st.service_cidrs == ("172.31.0.0/24",)
    assert drop_rules(render_nft(st, cfg)) == [
        'add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16, 172.31.0.0/24 } drop '
        'comment "Drop traffic to unallocated ClusterIPs"']


def test_a_new_service_cidr_waits_for_a_full_sync():
    cfg = nft_config()
    before = proxy_state(*SVC, config=cfg)
    after = proxy_state(*SVC, model.service_cidr_object("extra", ["172.31.0.0/24"]), config=cfg)
    changed = changed_services(before, after)
    assert changed == set()  # no Service changed: a partial sync with nothing to write
    assert drop_rules(render_nft(after, cfg, changed=changed, previous=before)) == []
    assert "172.31.0.0/24" in drop_rules(render_nft(after, cfg, changed=None, previous=before))[0]
