#!/usr/bin/env bash
# The project's two entry points, each doing its own set-up on a Debian machine (as root):
#   bash run.sh conformance [pytest args]   the conformance suite (and bug scenarios) against the reference proxier
#   bash run.sh tests [pytest args]         the project's own tests (unit, self-test, lint)
#   bash run.sh matrix                      compatibility matrix: iptables-nft, -legacy, nftables mode; IPv4, IPv6
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

cmd=${1:-}
shift || true
case "$cmd" in
  conformance)
    setup conformance
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
    "$venv/bin/python" -m harness.report matrix reports/matrix/*/report.json \
      -o reports/matrix.html --markdown reports/matrix.md
    echo "run.sh: compatibility matrix in reports/matrix.html and reports/matrix.md"
    exit $status
    ;;
  tests)
    setup tests
    "$venv/bin/ruff" check .
    exec "$venv/bin/python" -m pytest tests/ -n 2 --junitxml=reports/tests-junit.xml "$@"
    ;;
  *)
    echo "usage: bash run.sh conformance|tests|matrix [pytest args]" >&2
    exit 2
    ;;
esac
