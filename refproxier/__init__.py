"""The reference Service proxy: kube-proxy's iptables and nftables modes in Python."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

# kube-proxy behaviour this port follows (proxier.go and proxier_test.go of about this
# release, with later fixes noted where they are implemented), and our own
# package version; both go into conformance reports.
KUBE_PROXY_VERSION = "v1.33"

try:
    __version__ = _version("svc-conformance")
except PackageNotFoundError:  # run from a checkout without installing
    __version__ = "0+unknown"


def version_string() -> str:
    return f"refproxier {__version__} (follows kube-proxy {KUBE_PROXY_VERSION})"
