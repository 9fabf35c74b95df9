"""What the daemon needs of its host, the node's network namespace: whether it is the
host's own namespace (refused), kube-proxy's sysctls, the local addresses, and logging."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from refproxier.config import ProxierConfig

log = logging.getLogger("refproxier.daemon")


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def in_root_netns() -> bool:
    """True if this process is (or may be) in the host's network namespace.

    The host's namespace is PID 1's; where PID 1 cannot be inspected (sandboxes deny it),
    kthreadd's (PID 2), since kernel threads always live in the initial namespace. If neither
    is readable, a namespace named under /run/netns (``ip netns exec``) counts as not the
    host's; anything else is treated as the host's, to be safe.
    """
    me = _ns_id("/proc/self/ns/net")
    if me is None:
        return True
    init = _ns_id("/proc/1/ns/net")
    if init is None and _is_kthreadd(2):
        init = _ns_id("/proc/2/ns/net")
    if init is not None:
        return me == init
    return me not in _named_netns_ids()


def _is_kthreadd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "kthreadd"
    except OSError:
        return False


def _named_netns_ids() -> list[tuple[int, int] | None]:
    try:
        return [_ns_id(str(p)) for p in Path("/run/netns").iterdir()]
    except OSError:
        return []


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    if _read_sysctl(name) == value:
        return
    Path("/proc/sys", name.replace(".", "/")).write_text(value)
    log.info("sysctl %s=%s", name, value)


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def set_sysctls(config: ProxierConfig) -> ProxierConfig:
    """The sysctls kube-proxy sets, written in this (node) namespace only. Returns the config
    with ``conntrack_tcp_be_liberal`` as read from the kernel."""
    if config.ip_family == 4 and config.localhost_nodeports:
        _write_sysctl("net.ipv4.conf.all.route_localnet", "1")
    # br_netfilter's sysctls are per network namespace only since Linux 5.3; before that,
    # writing one would change the host's, which we must never do.
    if _read_sysctl("net.bridge.bridge-nf-call-iptables") is not None:
        if _kernel_at_least(5, 3):
            _write_sysctl("net.bridge.bridge-nf-call-iptables", "1")
        else:
            log.warning("not setting net.bridge.bridge-nf-call-iptables: global before Linux 5.3")
    # As kube-proxy's conntrack.SetSysctls: the TCP timeouts, per network namespace.
    for name, seconds in (("established", config.conntrack_tcp_timeout_established),
                          ("close_wait", config.conntrack_tcp_timeout_close_wait)):
        if seconds > 0:
            _write_sysctl(f"net.netfilter.nf_conntrack_tcp_timeout_{name}", str(int(seconds)))
    # kube-proxy omits the INVALID drop rule when the kernel is liberal; the config flag
    # (--conntrack-tcp-be-liberal) can only add that assumption, never take it away.
    liberal = _read_sysctl("net.netfilter.nf_conntrack_tcp_be_liberal")
    if liberal not in (None, "", "0") and not config.conntrack_tcp_be_liberal:
        log.info("net.netfilter.nf_conntrack_tcp_be_liberal=%s: no INVALID drop rule", liberal)
        config = dataclasses.replace(config, conntrack_tcp_be_liberal=True)
    return config


def local_addresses(family: int) -> tuple[str, ...]:
    """Addresses of this namespace's interfaces (kube-proxy reads them for
    --nodeport-addresses)."""
    p = subprocess.run(["ip", "-j", f"-{family}", "addr", "show"], capture_output=True,
                       text=True, timeout=10, check=False)
    if p.returncode != 0:
        return ()
    try:
        links = json.loads(p.stdout or "[]")
    except ValueError:
        return ()
    return tuple(a["local"] for ln in links for a in ln.get("addr_info", []) if "local" in a)


def refresh_local_addresses(config: ProxierConfig) -> ProxierConfig:
    addrs = local_addresses(config.ip_family)
    if addrs and addrs != config.local_addresses:
        return dataclasses.replace(config, local_addresses=addrs)
    return config


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


def setup_logging(hostname: str) -> None:
    logger = logging.getLogger("refproxier")
    if logger.handlers or logging.getLogger().handlers:
        return  # the caller configured logging
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_UTCFormatter(f"%(asctime)s refproxier[{hostname}] %(levelname)s %(message)s"))
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False




def refuse_root_netns() -> bool:
    """True (after saying why) when this process runs in the host's namespace."""
    if in_root_netns():
        print("refproxier: refusing to run in the root network namespace; start it inside a "
              "node namespace (ip netns exec <ns> ...)", file=sys.stderr)
        return True
    return False
