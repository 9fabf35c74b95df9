"""Hooks the harness calls, for plugins (a conftest.py, or a proxier adapter's pytest11
entry point) to implement."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_svc_conformance_evidence(env: Any, item: pytest.Item) -> list[tuple[str, str]] | None:
    """Extra evidence for a check that failed on ``env`` (a ``harness.cluster.ClusterEnv``,
    still running): ``(title, text)`` pairs, added to the check's report after the harness's
    own (proxier logs, rules, conntrack). Called once per failed check, on the worker.

    Example (a kube-proxy adapter adding its metrics)::

        def pytest_svc_conformance_evidence(env, item):
            return [(f"metrics, node {n.name}", n.run(["curl", "-s", "localhost:10249/metrics"]).stdout)
                    for n in env.nodes]
    """
