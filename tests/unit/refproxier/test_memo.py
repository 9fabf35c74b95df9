"""The daemon's per-port memo (refproxier.memo) changes how much a sync computes, never
what it renders: with and without it, every render of kube-proxy's
TestSyncProxyRulesRepeated sequence (and a few more changes) is the same text."""

from __future__ import annotations

import pytest

from refproxier import iptables, nftables
from refproxier.memo import PortMemo
from refproxier.proxystate import changed_services
from tests.unit.refproxier.builders import proxy_state
from tests.unit.refproxier_nft.test_syncs import CFG as NFT_CFG
from tests.unit.refproxier_nft.test_syncs import STEPS, sl, svc

# The sequence, then: one more service, one endpoint changed, a port's affinity timeout.
MORE_STEPS = [
    *STEPS,
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.1", "10.0.3.2"])],
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.1", "10.0.3.9"])],
    [svc(1, "172.30.0.41", affinity=30), svc(3, "172.30.0.43"), sl(1, ["10.0.1.1"]),
     sl(3, ["10.0.3.1", "10.0.3.9"])],
]


def _renders(mode: str, memo: PortMemo | None) -> list[str]:
    states = [proxy_state(*objs, config=NFT_CFG) for objs in MORE_STEPS]
    out = []
    prev = None
    for cur in states:
        changed = changed_services(prev, cur)
        if mode == "nftables":
            nftables._MODEL_CACHE.clear()  # the model cache must not hide a difference
            out.append(nftables.render_nft(cur, NFT_CFG, changed=changed, previous=prev, memo=memo))
        else:
            out.append(iptables.render(cur, NFT_CFG, changed=changed, memo=memo))
        prev = cur
    return out


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_memo_changes_no_render(mode: str):
    memo: PortMemo = PortMemo()
    assert _renders(mode, memo) == _renders(mode, None)


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_only_ports_that_differ_are_computed_again(mode: str):
    memo: PortMemo = PortMemo()
    a = proxy_state(svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.1"]),
                    config=NFT_CFG)
    b = proxy_state(svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.2"]),
                    config=NFT_CFG)

    def render(state, **kw):  # type: ignore[no-untyped-def]
        nftables._MODEL_CACHE.clear()
        if mode == "nftables":
            return nftables.render_nft(state, NFT_CFG, memo=memo, **kw)
        return iptables.render(state, NFT_CFG, memo=memo, **kw)

    render(a)
    assert (memo.hits, memo.misses) == (0, 2)
    render(b, changed={"ns3/svc3"}, **({"previous": a} if mode == "nftables" else {}))
    assert (memo.hits, memo.misses) == (1, 1), "svc1 is reused, svc3 computed again"


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_patched_rule_function_is_not_served_from_the_memo(mode: str, monkeypatch: pytest.MonkeyPatch):
    memo: PortMemo = PortMemo()
    state = proxy_state(svc(1, "172.30.0.41"), sl(1, ["10.0.1.1"]), config=NFT_CFG)
    module = nftables if mode == "nftables" else iptables

    def render() -> str:
        nftables._MODEL_CACHE.clear()
        if mode == "nftables":
            return nftables.render_nft(state, NFT_CFG, memo=memo)
        return iptables.render(state, NFT_CFG, memo=memo)

    before = render()
    real = module.dnat_rule
    monkeypatch.setattr(module, "dnat_rule", lambda ctx, sp, ep: real(ctx, sp, ep) + " comment")
    after = render()
    assert memo.misses == 1 and after != before
