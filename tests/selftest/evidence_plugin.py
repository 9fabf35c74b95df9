"""A plugin as a proxier adapter would ship one: its own evidence for failed checks
(loaded with ``-p tests.selftest.evidence_plugin`` by test_evidence.py)."""


def pytest_svc_conformance_evidence(env, item):
    return [("adapter evidence", f"{len(env.nodes)} nodes; check {item.name}")]
