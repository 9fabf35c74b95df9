"""How a sync's nft script is ordered and committed (refproxier.nftables.split_replace_script,
refproxier.nft_exec.Nft.apply). No root needed: nft is faked.

Each rule binding an anonymous set (the per-service numgen vmaps) makes the kernel walk the
whole transaction so far, so those rules come before the endpoint chains' rules and the
maps' elements, and a table created from nothing is committed in parts: its empty chains
and sets first, then the per-service rules a few thousand Services at a time, then the
rest."""

from __future__ import annotations

import subprocess

import pytest

from refproxier import nft_exec, nftables
from refproxier.nftables import PART_END, SKELETON_END, render_nft, split_replace_script
from refproxier.proxystate import changed_services
from tests.unit.refproxier.builders import proxy_state
from tests.unit.refproxier.test_overall_rules import overall_objects
from tests.unit.refproxier_nft.builders import nft_config
from tests.unit.refproxier_nft.nftscript import NftError, Table, load
from tests.unit.refproxier_nft.test_syncs import CFG, STEPS

OVERALL_CFG = nft_config()


def _overall() -> str:
    return render_nft(proxy_state(*overall_objects(), config=OVERALL_CFG), OVERALL_CFG)


def _kinds(text: str) -> list[tuple[str, str, str]]:
    """(verb, kind, chain-or-set) of each command line."""
    out = []
    for line in text.splitlines():
        w = line.split(" ")
        if line and not line.startswith("#"):
            out.append((w[0], w[1], w[4] if len(w) > 4 else ""))
    return out


def test_replace_script_splits_into_skeleton_and_parts(monkeypatch):
    monkeypatch.setattr(nftables, "PART_CHAINS", 3)  # 10 per-service chains: 4 parts of 3 or 2
    script = _overall()
    (skeleton, _), *parts = split_replace_script(script)  # type: ignore[misc]
    assert len(parts) == 5  # and the rest
    assert skeleton.splitlines()[0].startswith("create table ip kube-proxy")
    assert not any(line.startswith("delete") for line in skeleton.splitlines())
    # The skeleton only declares; the parts declare nothing, and only the last one adds
    # rules to the top-level chains or elements.
    assert {k for _, k, _ in _kinds(skeleton)} <= {"table", "chain", "set", "map"}
    lines = script.splitlines()
    for i, (text, offset) in enumerate(parts):
        kinds = _kinds(text)
        assert kinds and all(v == "add" and k in ("rule", "element") for v, k, _ in kinds)
        if i < len(parts) - 1:
            assert all(k == "rule" and "/" in c for _, k, c in kinds)
        assert all(lines[n + offset - 1] == line for n, line in enumerate(text.splitlines(), 1))
    assert lines[parts[0][1] - 1] == SKELETON_END
    assert lines[parts[1][1] - 1] == PART_END
    # Committed in parts on a node without the table, it gives the same table as the
    # whole script in one transaction; the skeleton refuses an existing table.
    t = Table()
    for text in (skeleton, *(text for text, _ in parts)):
        t.apply(text)
    assert t == load(script)
    with pytest.raises(NftError, match="exists"):
        load(script).apply(skeleton)


def test_only_replace_scripts_are_split():
    a, b = proxy_state(*STEPS[5], config=CFG), proxy_state(*STEPS[6], config=CFG)
    assert split_replace_script(render_nft(b, CFG, changed=changed_services(a, b), previous=a)) is None
    assert split_replace_script(render_nft(b, CFG, changed=None, previous=a)) is None


@pytest.mark.parametrize("mode", ["replace", "full-in-place", "partial"])
def test_anonymous_set_rules_come_before_endpoint_rules_and_elements(mode: str):
    a, b = proxy_state(*STEPS[8], config=CFG), proxy_state(*STEPS[9], config=CFG)
    if mode == "replace":
        text = render_nft(b, CFG)
    else:
        text = render_nft(b, CFG, changed=None if mode == "full-in-place" else changed_services(a, b), previous=a)
    kinds = _kinds(text)
    numgen = [i for i, line in enumerate(text.splitlines()) if "numgen" in line]
    later = [i for i, (v, k, c) in enumerate(kinds)
             if k == "element" or (k in ("rule", "chain") and v != "add" and c.startswith("endpoint-"))
             or (k == "rule" and c.startswith("endpoint-"))]
    assert numgen and later and max(numgen) < min(later)


class _FakeRun:
    """Nft._run replaced: records each nft call; ``fail`` maps a call index to stderr."""

    def __init__(self, exists: bool = False, fail: dict[int, str] | None = None) -> None:
        self.exists, self.fail, self.calls = exists, fail or {}, []

    def __call__(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if args[:2] == ["list", "set"]:  # Nft.table_exists
            return subprocess.CompletedProcess(args, 0 if self.exists else 1, "", "")
        self.calls.append(stdin or "")
        err = self.fail.get(len(self.calls) - 1)
        return subprocess.CompletedProcess(args, 1 if err else 0, "", err or "")


def _nft(run: _FakeRun) -> nft_exec.Nft:
    n = nft_exec.Nft(4)
    n._run = run  # type: ignore[method-assign]
    return n


def test_apply_commits_a_new_table_in_parts():
    script = _overall()
    run = _FakeRun()
    assert _nft(run).apply(script).ok
    assert run.calls == [text for text, _ in split_replace_script(script)]  # type: ignore[union-attr]
    assert len(run.calls) == 3  # skeleton, per-service rules, the rest


def test_apply_replaces_an_existing_table_in_one_transaction():
    script = _overall()
    run = _FakeRun(exists=True)
    assert _nft(run).apply(script).ok
    assert run.calls == [script]
    # The table appeared between the check and the skeleton: "create table" fails, and the
    # whole script runs as one transaction.
    run = _FakeRun(fail={0: "/dev/stdin:1:1-30: Error: Could not process rule: File exists"})
    assert _nft(run).apply(script).ok
    assert run.calls[1] == script


def test_apply_reports_the_failing_line_of_the_whole_script():
    script = _overall()
    parts = split_replace_script(script)
    assert parts is not None
    text, offset = parts[2]
    run = _FakeRun(fail={2: "/dev/stdin:3:1-5: Error: injected"})
    res = _nft(run).apply(script)
    assert not res.ok and len(run.calls) == 3  # stops at the failed part
    assert res.failed_line_no == 3 + offset
    assert res.failed_line == script.splitlines()[2 + offset] == text.splitlines()[2]
