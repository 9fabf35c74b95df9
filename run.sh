#!/usr/bin/env bash
# The project's two entry points, each doing its own set-up on a Debian machine (as root):
#   bash run.sh conformance [pytest args]   the conformance suite (and bug scenarios) against the reference proxier
#   bash run.sh tests [pytest args]         the project's own tests (unit, self-test, lint: ruff, lint-imports)
#   bash run.sh matrix                      compatibility matrix: the reference proxier and real kube-proxy
#                                           (each built release) on iptables-nft, -legacy, nftables; IPv4, IPv6
#   bash run.sh build-kube [VERSION...]     build real kube-proxy (default: the pinned releases) into the cache
#   bash run.sh bugs [pytest args]          the bug library against one proxier: which reported bugs it still has
#   bash run.sh history [pytest args]       each kube-proxy bug scenario on the release before its fix (must
#                                           fail) and the fix release (must pass); builds those releases first
#   bash run.sh diff A B [--budget 10m] [--seed N] [...]
#                                           differential testing of two proxiers (python -m harness.diff):
#                                           generated clusters, every flow compared, disagreements shrunk
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
venv="$here/.venv"

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "run.sh: this needs root (network namespaces, netfilter). Run it as root, e.g. sudo bash run.sh $*" >&2
    exit 2
  fi
}

install_debian_packages() {
  local missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v iptables-legacy-restore >/dev/null || missing+=(iptables)
  command -v nft >/dev/null || missing+=(nftables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_python_env() {
  local stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if [ ! -f "$stamp" ]; then
    echo "run.sh: installing the project into $venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -e ".[dev]"
    rm -f "$venv"/.installed-*
    touch "$stamp"
  fi
}

setup() {
  need_root "$@"
  install_debian_packages
  install_python_env
  mkdir -p reports
}

# Real kube-proxy from its Go module (gobuild/, harness/kubebins.py), into ~/.cache; a
# release already built is not built again.
build_kube() {
  if ! command -v go >/dev/null; then
    for d in /usr/local/go/bin /usr/lib/go/bin; do [ -x "$d/go" ] && export PATH="$d:$PATH" && break; done
  fi
  if ! command -v go >/dev/null; then
    echo "run.sh: real kube-proxy is built from its Go module and needs the Go toolchain (1.24 or" >&2
    echo "newer) on PATH; install it (e.g. a go.dev release in /usr/local/go) and run again." >&2
    exit 2
  fi
  "$venv/bin/python" -m harness.kubebins build "$@"
}

wants_kube_proxy() {
  case " $* " in *kube-proxy*) return 0 ;; esac
  return 1
}

# The release named by --kube-proxy-version in the arguments, else the default one.
kube_proxy_version() {
  local want="" prev=""
  for a in "$@"; do
    case "$a" in --kube-proxy-version=*) want=${a#*=} ;; esac
    [ "$prev" = --kube-proxy-version ] && want=$a
    prev=$a
  done
  [ -n "$want" ] || want=$("$venv/bin/python" -c 'from harness.kubebins import DEFAULT_VERSION as v; print(v)')
  echo "$want"
}

cmd=${1:-}
shift || true
case "$cmd" in
  conformance)
    setup conformance
    if wants_kube_proxy "$@"; then build_kube "$(kube_proxy_version "$@")" >/dev/null; fi
    exec "$venv/bin/python" -m pytest conformance/ scenarios/ -n 2 \
      --junitxml=reports/junit.xml --report-dir=reports "$@"
    ;;
  matrix)
    # The compatibility matrix: the reference proxier on iptables-nft, on iptables-legacy
    # and in nftables mode, over IPv4 and IPv6, one run each, rendered side by side.
    setup matrix
    rm -rf reports/matrix  # only this run's columns
    status=0
    for run in "reference nft ipv4" "reference legacy ipv4" "reference-nft nft ipv4" \
               "reference nft ipv6" "reference-nft nft ipv6"; do
      set -- $run
      "$venv/bin/python" -m pytest conformance/ -n 2 -q --proxier="$1" --iptables="$2" \
        --ip-family="$3" --report-dir="reports/matrix/$1-$2-$3" \
        --known-gaps="known-gaps/$1.yaml" || status=1
    done
    # Real kube-proxy, every release in the cache (build more with: bash run.sh build-kube V),
    # over the API; its known gaps come from known-gaps/<mode>-<release>.yaml.
    build_kube >/dev/null
    for version in $("$venv/bin/python" -c 'from harness.kubebins import built_versions; print(*built_versions())'); do
      for run in "kube-proxy nft ipv4" "kube-proxy legacy ipv4" "kube-proxy-nft nft ipv4" \
                 "kube-proxy nft ipv6" "kube-proxy-nft nft ipv6"; do
        set -- $run
        "$venv/bin/python" -m pytest conformance/ -n 2 -q --proxier="$1" --iptables="$2" \
          --ip-family="$3" --control-plane=api --kube-proxy-version="$version" \
          --report-dir="reports/matrix/$1-$version-$2-$3" || status=1
      done
    done
    "$venv/bin/python" -m harness.report matrix reports/matrix/*/report.json \
      -o reports/matrix.html --markdown reports/matrix.md
    echo "run.sh: compatibility matrix in reports/matrix.html and reports/matrix.md"
    exit $status
    ;;
  build-kube)
    setup build-kube
    build_kube "$@"
    ;;
  bugs)
    # The bug library (scenarios/bugs/) against one proxier, e.g.
    #   bash run.sh bugs --proxier kube-proxy --control-plane api --kube-proxy-version v1.25.16
    # prints the table (bug, link, outcome, fixed in, and for kube-proxy whether the release
    # predates the fix); the HTML report has it too (reports/bugs/report.html).
    setup bugs
    if wants_kube_proxy "$@"; then build_kube "$(kube_proxy_version "$@")" >/dev/null; fi
    rm -rf reports/bugs
    status=0
    "$venv/bin/python" -m pytest scenarios/bugs/ -q --report-dir=reports/bugs \
      --junitxml=reports/bugs/junit.xml --known-bugs=fail "$@" >reports/bugs-pytest.log 2>&1 || status=$?
    if [ ! -f reports/bugs/report.json ]; then
      tail -30 reports/bugs-pytest.log >&2
      exit "$status"
    fi
    "$venv/bin/python" -m harness.report bugs reports/bugs/report.json
    echo "run.sh: HTML report in reports/bugs/report.html (pytest output in reports/bugs-pytest.log)"
    # exit 0 when the only failures are bug reproductions (the answer, not an error)
    [ "$status" = 1 ] && status=0
    exit "$status"
    ;;
  history)
    # Before/after sweep of the bug library against kube-proxy's releases (issue 15).
    setup history
    for v in $("$venv/bin/python" -c 'from harness.bughistory import needed_releases; print(*needed_releases())'); do
      build_kube "$v" >/dev/null || echo "run.sh: kube-proxy $v did not build; its pairs are skipped" >&2
    done
    SVC_CONFORMANCE_HISTORY=1 exec "$venv/bin/python" -m pytest tests/selftest/test_bug_history.py -v "$@"
    ;;
  diff)
    # Differential testing (docs/differential.md): e.g. bash run.sh diff reference kube-proxy --budget 10m
    setup diff
    if wants_kube_proxy "$@"; then build_kube "$(kube_proxy_version "$@")" >/dev/null; fi
    exec "$venv/bin/python" -m harness.diff "$@"
    ;;
  tests)
    setup tests
    # tests/selftest/test_kube_proxy.py runs real kube-proxy: one release, the default;
    # tests/selftest/test_bug_history.py's CI pair needs v1.36.3 too (k8s-139628)
    build_kube "$(kube_proxy_version)" v1.36.3 >/dev/null
    # the kube-apiserver control plane's tests and its contract test run real etcd and
    # kube-apiserver of the default release
    build_kube "$(kube_proxy_version)" --component kube-apiserver,etcd >/dev/null
    "$venv/bin/ruff" check .
    "$venv/bin/lint-imports"  # the layers and no import cycles (pyproject.toml)
    exec "$venv/bin/python" -m pytest tests/ -n 2 --junitxml=reports/tests-junit.xml "$@"
    ;;
  *)
    echo "usage: bash run.sh conformance|tests|matrix|bugs|history [pytest args] | build-kube [VERSION...] | diff A B [--budget 10m] [--seed N]" >&2
    exit 2
    ;;
esac
