"""One home for the harness's waits.

Two different questions need two different waits (as in PTF's ``verify_packet`` /
``verify_no_packet``):

* ``positive``: how long to wait for something that must arrive (a reply, a listening socket,
  a proxier applying its rules). Exceeding it is a failure, so it can be generous: a correct
  system answers long before it expires.
* ``silence``: how long to listen before concluding that nothing arrives (a DROP). Every
  negative check costs this much, so it is shorter, but long enough that a slow reply is
  not mistaken for silence on a loaded CI machine.

Two more deadlines belong to the proxier under test: ``startup`` for its first sync (the
process starting, its interpreter or binary loading, its first full rule write) and
``sync`` for applying each later generation.

``scale`` multiplies all of them (slow machines, ``--timeout-scale``, or
$SVC_CONFORMANCE_TIMING_SCALE). Nothing in the harness sleeps or waits for a literal number
of seconds; it asks a ``Timing``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

T = TypeVar("T")

_ENV_SCALE = "SVC_CONFORMANCE_TIMING_SCALE"


@dataclass(frozen=True)
class Timing:
    """Timeouts for the harness.

    Example::

        timing = Timing(scale=2.0)          # a slow CI runner
        sock.settimeout(timing.positive_s)
    """

    positive: float = 2.0
    silence: float = 0.5
    scale: float = 1.0
    #: how often ``wait_for`` re-checks its condition
    poll: float = 0.01
    #: the proxier's first sync on every node, start-up included
    startup: float = 30.0
    #: the proxier applying one later generation on every node
    sync: float = 10.0

    def __post_init__(self) -> None:
        if min(self.positive, self.silence, self.scale, self.startup, self.sync) <= 0:
            raise ValueError(f"Timing values must be > 0, got {self!r}")

    @property
    def positive_s(self) -> float:
        """Seconds to wait for something that must happen."""
        return self.positive * self.scale

    @property
    def silence_s(self) -> float:
        """Seconds to listen before concluding that nothing arrives."""
        return self.silence * self.scale

    @property
    def startup_s(self) -> float:
        """Seconds for the proxier's first sync on every node (start-up included)."""
        return self.startup * self.scale

    @property
    def sync_s(self) -> float:
        """Seconds for every proxier to apply one later generation."""
        return self.sync * self.scale

    def scaled(self, factor: float) -> Timing:
        """A copy with ``scale`` multiplied by ``factor``."""
        return replace(self, scale=self.scale * factor)

    def wait_idle(self, seconds: float) -> None:
        """Stay idle for ``seconds`` because idleness is the behaviour under test (an
        affinity or conntrack timeout expiring). Not scaled: the timeout is the Service's.
        Never use this to wait for something to happen; use ``wait_for``."""
        time.sleep(seconds)

    def wait_for(
        self,
        condition: Callable[[], T],
        what: str,
        timeout: float | None = None,
    ) -> T:
        """Poll ``condition`` until it returns a truthy value; return that value.

        Raises ``TimeoutError`` naming ``what`` after ``timeout`` (default: ``positive_s``).
        """
        limit = self.positive_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {limit:.2f}s waiting for {what}")
            time.sleep(self.poll)


def default_timing() -> Timing:
    """The default ``Timing``, with ``scale`` from $SVC_CONFORMANCE_TIMING_SCALE if set."""
    raw = os.environ.get(_ENV_SCALE)
    return Timing(scale=float(raw)) if raw else Timing()
