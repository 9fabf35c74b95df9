"""Evidence: what a failed check carries, decided in this one module.

A failed check (a conformance test on a cluster fixture, or a scenario) gets, as sections
of its report (``evidence`` in report.json, folded in report.html):

* whatever the check attached while running (``attach``; packet traces from
  ``harness.trace.attach_trace``), also kept for passing checks;
* for each node, the proxier's last log lines, its rules (``harness.netfilter.dump_rules``)
  and its conntrack table;
* whatever a plugin adds through the ``pytest_svc_conformance_evidence(env, item)`` hook
  (``harness.hookspecs``): a proxier adapter can add its own (kube-proxy's metrics, say);
* the verdict that decided (``harness.expect.VerdictFailure``) under ``statistics``.

A scenario tears its cluster down before pytest reports, so its runner calls
``record_failure(item, env)`` while the cluster is still up; for fixture-based checks the
report hook finds the cluster among the test's fixtures (``env_of``).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from harness.cluster import ClusterEnv, ClusterScope

# Attached while a check runs: (title, text), in order.
ATTACHMENTS = pytest.StashKey[list[tuple[str, str]]]()
# Collected by record_failure (scenarios), added to the call report.
_RECORDED = pytest.StashKey[list[tuple[str, str]]]()

LOG_LINES = 40


def attach(request: pytest.FixtureRequest | pytest.Item, title: str, text: str) -> None:
    """Attach evidence to the running check: it appears under ``evidence[title]`` in
    report.json (for failed, xfailed and informational checks; packet traces for all) and
    folded under the check in report.html."""
    item = getattr(request, "node", request)
    item.stash.setdefault(ATTACHMENTS, []).append((title, text))


def env_of(item: pytest.Item) -> ClusterEnv | None:
    """The cluster a check ran on, found among its fixtures (session or module env)."""
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, ClusterScope):
            return value.env
        if isinstance(value, ClusterEnv):
            return value
    return None


def cluster_evidence(env: ClusterEnv) -> list[tuple[str, str]]:
    """The harness's own evidence about a cluster: per node, the proxier's log tail, its
    rules and its conntrack table."""
    out = [(f"proxier log, node {name} (last lines)", proc.log_tail(LOG_LINES))
           for name, proc in env.proxiers.items()]
    for node in env.nodes:
        out.append((f"rules on node {node.name}", rules_text(node.netns)))
        out.append((f"conntrack on node {node.name}", conntrack_text(node.netns)))
    return out


def rules_text(netns: str) -> str:
    """Every flavour's rules in ``netns``; the raw save tools if the dump fails."""
    try:
        from harness import netfilter

        return str(netfilter.dump_rules(netns))
    except Exception:  # noqa: BLE001 - evidence is best effort; fall back to the raw tools
        parts = []
        for tool in ("iptables-nft-save", "iptables-legacy-save"):
            r = subprocess.run(["ip", "netns", "exec", netns, tool], capture_output=True,
                               text=True)
            if r.stdout.strip():
                parts.append(f"# {tool}\n{r.stdout}")
        return "\n".join(parts) or "(no rules)"


def conntrack_text(netns: str) -> str:
    """The conntrack table of ``netns``, one entry per line."""
    try:
        from harness import netfilter

        return netfilter.entries_text(netfilter.conntrack_entries(netns))
    except Exception as exc:  # noqa: BLE001 - evidence is best effort
        return f"(no conntrack table: {exc})"


def collect(item: pytest.Item, env: ClusterEnv) -> list[tuple[str, str]]:
    """Everything a failure on ``env`` carries: the harness's evidence, then each hook
    implementation's (a failing implementation is reported, not raised)."""
    out = list(cluster_evidence(env))
    try:
        results = item.config.hook.pytest_svc_conformance_evidence(env=env, item=item)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not hide the failure
        results = [[("evidence hook failed", f"{type(exc).__name__}: {exc}")]]
    for pairs in results:
        out.extend((str(t), str(x)) for t, x in pairs or ())
    return out


def record_failure(item: pytest.Item, env: ClusterEnv) -> None:
    """Collect the evidence now, while ``env`` is still up; the call report gets it."""
    item.stash.setdefault(_RECORDED, []).extend(collect(item, env))


# --- the pytest plugin (registered by harness.plugin) -------------------------------------

def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from harness import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


# trylast: the innermost wrapper, so it sees a failure before harness.reporting grades an
# informational check as passed.
@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    attachments = item.stash.get(ATTACHMENTS, None)
    if attachments:
        report.sections.extend(attachments)
        attachments.clear()
    if report.when != "call" or not report.failed:
        return report
    recorded = item.stash.get(_RECORDED, None)
    if recorded:
        report.sections.extend(recorded)
        recorded.clear()
    else:
        env = env_of(item)
        if env is not None:
            report.sections.extend(collect(item, env))
    verdict = getattr(call.excinfo.value if call.excinfo else None, "verdict", None)
    if verdict is not None:
        # the report's list is the item's own: a copy, so a rerun starts clean
        report.user_properties = [*report.user_properties, ("statistics", verdict.to_dict())]
    return report
