"""Expectation helpers (harness.expect): a miss fails by itself, first line in words."""

from __future__ import annotations

import pytest

from harness.expect import (
    VerdictFailure,
    expect_dropped,
    expect_reached,
    expect_refused,
    expect_true,
    expect_uniform,
    headline,
)
from harness.traffic.probe import Observation, Outcome
from harness.verdicts import reached_only


def reply(pod: str) -> Observation:
    return Observation(Outcome.REPLY, "192.0.2.101", 40000, "10.96.1.1", 80, "tcp", pod=pod,
                       seen_src="192.0.2.101", seen_sport=40000)


def silence() -> Observation:
    return Observation(Outcome.TIMEOUT, "192.0.2.101", 40001, "10.96.1.1", 80, "tcp")


class FakePod:
    def __init__(self, name: str) -> None:
        self.name = name


def test_a_met_expectation_returns_its_verdict() -> None:
    v = expect_reached([reply("a"), reply("b")], [FakePod("a"), "b"], "from the client")
    assert v.passed and v.check == "reached-only"


def test_a_miss_says_in_words_what_went_wrong_then_explains() -> None:
    with pytest.raises(VerdictFailure) as e:
        expect_reached([reply("a"), silence()], ["a"], "via node2 (192.0.2.12)",
                       details="rules: (none)")
    text = str(e.value)
    first, rest = text.split("\n", 1)
    assert first == ("via node2 (192.0.2.12): expected a reply from one of ['a']; "
                     "observed 1x REPLY pod=a saw=192.0.2.101, 1x TIMEOUT")
    assert "FAIL reached-only" in rest and "probes:" in rest and rest.endswith("rules: (none)")
    assert e.value.verdict is not None and not e.value.verdict.passed
    assert isinstance(e.value, AssertionError)  # pytest reports it as a failed check


def test_headline_without_context_names_the_check() -> None:
    v = reached_only([silence()], ["a"])
    assert headline(v).startswith("reached-only: expected a reply from one of ['a']")


def test_refused_dropped_uniform_and_true() -> None:
    expect_dropped([silence()])
    with pytest.raises(VerdictFailure, match="^refused: expected ICMP type=3 code=3"):
        expect_refused([silence()])
    with pytest.raises(VerdictFailure, match="^spread: expected every new connection"):
        expect_uniform([reply("a")] * 100, ["a", "b"], "spread")
    expect_true(True, "never shown")
    with pytest.raises(VerdictFailure, match=r"^3 stale entries\nthe entries$") as e:
        expect_true(False, "3 stale entries", "the entries")
    assert e.value.verdict is None
