"""harness.timing: scaling and condition waits. No root."""

from __future__ import annotations

import itertools

import pytest

from harness.timing import Timing


def test_scale_applies_to_every_wait() -> None:
    t = Timing(positive=2.0, silence=0.5, startup=30.0, sync=10.0).scaled(3)
    assert (t.positive_s, t.silence_s, t.startup_s, t.sync_s) == (6.0, 1.5, 90.0, 30.0)


def test_wait_for_returns_the_value_and_times_out_with_a_name() -> None:
    counter = itertools.count()
    assert Timing(poll=0.001).wait_for(lambda: next(counter) >= 3, "three") is True
    with pytest.raises(TimeoutError, match="never"):
        Timing(poll=0.001).wait_for(lambda: False, "never", timeout=0.01)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Timing(scale=0)
