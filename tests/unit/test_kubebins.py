"""harness.kubebins' pure parts: versions, the go.mod rewrite for another release, where
binaries live, and the errors that say what to do. (Builds themselves run in .ci/run.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import kubebins
from harness.kubebins import BuildError, Version


def test_versions_parse_and_name_their_staging_modules():
    v = Version.parse("v1.33.13")
    assert (v.minor, v.patch, str(v), v.staging) == (33, 13, "v1.33.13", "v0.33.13")
    for bad in ("1.33.13", "v1.33", "v2.0.0", "latest"):
        with pytest.raises(BuildError, match="v1.MINOR.PATCH"):
            Version.parse(bad)


K8S_GOMOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-proxy => ./staging/src/k8s.io/kube-proxy
)
"""


def test_staging_modules_are_read_from_the_releases_go_mod():
    assert kubebins.staging_modules(K8S_GOMOD) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/kube-proxy"]


def test_the_wrapper_module_is_rewritten_for_another_release():
    template = (kubebins.MODULE_DIR / "go.mod").read_text()
    out = kubebins.render_gomod(template, Version.parse("v1.33.13"), ["k8s.io/api", "k8s.io/client-go"])
    assert out.splitlines()[0] == "module svc-conformance/gobuild"
    assert "require k8s.io/kubernetes v1.33.13" in out
    assert "replace k8s.io/api => k8s.io/api v0.33.13" in out
    assert "replace k8s.io/client-go => k8s.io/client-go v0.33.13" in out


def test_the_committed_module_pins_every_staging_module_of_its_release():
    gomod = (kubebins.MODULE_DIR / "go.mod").read_text()
    v = Version.parse(kubebins.DEFAULT_VERSION)
    assert f"require k8s.io/kubernetes {v}" in gomod or f"k8s.io/kubernetes {v}" in gomod
    for line in gomod.splitlines():
        if line.startswith("replace k8s.io/"):
            assert line.endswith(v.staging), line
    assert gomod.count("replace k8s.io/") >= 30


def test_binaries_live_in_the_cache_and_a_missing_one_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SVC_CONFORMANCE_CACHE", str(tmp_path))
    assert kubebins.binary_path("kube-proxy", "v1.37.2") == tmp_path / "kube/v1.37.2/bin/kube-proxy"
    with pytest.raises(BuildError, match=r"python -m harness.kubebins build v1.33.13 --component kube-proxy"):
        kubebins.locate("kube-proxy", "v1.33.13")
    fake = kubebins.binary_path("kube-proxy", "v1.33.13")
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    assert kubebins.locate("kube-proxy", "v1.33.13") == fake
    assert kubebins.built_versions() == ["v1.33.13"]
    with pytest.raises(BuildError, match="unknown component"):
        kubebins.binary_path("kubelet", "v1.33.13")


def test_no_go_toolchain_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SVC_CONFORMANCE_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="Go toolchain is not on PATH"):
        kubebins.build("v1.37.2", ["kube-proxy"])


def test_iptables_shims_name_each_flavour(tmp_path, monkeypatch):
    monkeypatch.setenv("SVC_CONFORMANCE_CACHE", str(tmp_path))
    root = kubebins.iptables_shims()
    for flavour in ("nft", "legacy"):
        link = root / flavour / "iptables-restore"
        if link.is_symlink():  # where the tools are installed
            assert Path(link.resolve()).name.startswith(f"xtables-{flavour}")


OLD_K8S_GOMOD = """module k8s.io/kubernetes

go 1.15

require (
\tgithub.com/modern-go/reflect2 v1.0.1
\tk8s.io/api v0.0.0
)

replace (
\tcloud.google.com/go => cloud.google.com/go v0.51.0
\tgithub.com/modern-go/reflect2 => github.com/modern-go/reflect2 v1.0.1
\tgolang.org/x/sys v0.0.0-2020 => golang.org/x/sys v0.0.0-20200622214017-ed371f2e16b4
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/utils => k8s.io/utils v0.0.0-20200729134348-d5654de09c73
)
"""


def test_an_old_releases_own_pins_are_carried_and_raised_where_go_needs_it():
    pins = kubebins.pinned_replaces(OLD_K8S_GOMOD)
    assert pins == {"cloud.google.com/go": ("cloud.google.com/go", "v0.51.0"),
                    "github.com/modern-go/reflect2": ("github.com/modern-go/reflect2", "v1.0.1"),
                    "golang.org/x/sys": ("golang.org/x/sys", "v0.0.0-20200622214017-ed371f2e16b4"),
                    "k8s.io/utils": ("k8s.io/utils", "v0.0.0-20200729134348-d5654de09c73")}
    out = kubebins.render_gomod((kubebins.MODULE_DIR / "go.mod").read_text(), Version.parse("v1.19.16"),
                                kubebins.staging_modules(OLD_K8S_GOMOD), pins)
    assert "replace k8s.io/api => k8s.io/api v0.19.16" in out
    assert "replace cloud.google.com/go => cloud.google.com/go v0.51.0" in out
    # reflect2 v1.0.1 crashes with Go >= 1.18: raised to the compatible floor
    assert "replace github.com/modern-go/reflect2 => github.com/modern-go/reflect2 v1.0.2" in out
    assert "v1.0.1" not in out


def test_an_old_release_module_names_only_the_commands_asked_for():
    text = kubebins.tools_go(["kube-proxy", "etcd"])
    assert '_ "k8s.io/kubernetes/cmd/kube-proxy"' in text and "kube-apiserver" not in text
    assert "etcd" not in text  # etcd is its own command directory, not a k/k import


def test_releases_are_ordered_by_minor_then_patch():
    assert Version.parse("v1.9.0") < Version.parse("v1.19.16") < Version.parse("v1.20.0")


def test_staging_substitutes_and_moved_dependencies_are_written():
    pins = {"vbom.ml/util": ("vbom.ml/util", "v0.0.0-20160121211510-db5cfe13f5cc")}
    out = kubebins.render_gomod((kubebins.MODULE_DIR / "go.mod").read_text(), Version.parse("v1.26.15"),
                                ["k8s.io/api", "k8s.io/kube-proxy"], pins, {"k8s.io/kube-proxy": "v0.26.1"})
    assert "replace k8s.io/api => k8s.io/api v0.26.15" in out
    assert "replace k8s.io/kube-proxy => k8s.io/kube-proxy v0.26.1" in out
    assert "replace vbom.ml/util => github.com/fvbommel/util v0.0.0-20160121211510-db5cfe13f5cc" in out


def test_an_unserved_staging_module_gets_an_empty_stand_in(tmp_path):
    out = kubebins.render_gomod((kubebins.MODULE_DIR / "go.mod").read_text(), Version.parse("v1.26.15"),
                                ["k8s.io/api", "k8s.io/sample-cli-plugin"], {},
                                {"k8s.io/sample-cli-plugin": kubebins.STUB})
    assert "replace k8s.io/sample-cli-plugin => ./stubs/k8s.io/sample-cli-plugin" in out
    kubebins.write_stubs(tmp_path, {"k8s.io/sample-cli-plugin": kubebins.STUB, "k8s.io/api": "v0.26.1"})
    assert (tmp_path / "stubs/k8s.io/sample-cli-plugin/go.mod").read_text().startswith(
        "module k8s.io/sample-cli-plugin")
    assert not (tmp_path / "stubs/k8s.io/api").exists()


def test_pre_releases_parse_and_sort_before_their_release():
    b = Version.parse("v1.38.0-beta.0")
    assert (str(b), b.staging) == ("v1.38.0-beta.0", "v0.38.0-beta.0")
    assert Version.parse("v1.37.2") < Version.parse("v1.38.0-alpha.1") < b < Version.parse("v1.38.0-rc.1") \
        < Version.parse("v1.38.0")
    with pytest.raises(BuildError):
        Version.parse("v1.38.0-gamma.1")
