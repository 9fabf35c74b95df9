"""The proxier contract's pure parts: resolving --proxier options into a ProxierSpec."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.proxiers import ProxierConfigError, resolve


def test_reference_proxier_states_its_version() -> None:
    spec = resolve(None, None, None)
    assert spec.name == "reference" and spec.version and spec.version.startswith("refproxier ")
    out = subprocess.run([sys.executable, "-m", "refproxier", "--version"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == spec.version


def test_version_option_is_what_the_report_states() -> None:
    custom = resolve(None, "myproxy --node {node}", "acks", "myproxy v0.3.1")
    assert (custom.name, custom.version, custom.capabilities) == (
        "custom", "myproxy v0.3.1", frozenset({"acks"}))
    assert resolve(None, "myproxy", None).version is None
    assert resolve("reference-nft", None, None, "patched").version == "patched"


def test_unknown_proxier_and_placeholder_say_what_to_do() -> None:
    with pytest.raises(ProxierConfigError, match="not known; choose one of"):
        resolve("nope", None, None)
    with pytest.raises(ProxierConfigError, match="unknown placeholders"):
        resolve(None, "myproxy {nodename}", None)


def test_nftables_mode_claims_no_iptables_flavour() -> None:
    assert resolve("reference-nft", None, None).netfilter == "nftables"
    assert resolve("reference", None, None).netfilter == "iptables"
    assert resolve(None, "myproxy", None).netfilter == "iptables"
