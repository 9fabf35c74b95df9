"""Faulty proxiers whose defect is in the reference proxier's process rather than its rules:
its node-namespace set-up (``refproxier.runner.set_sysctls``) and its API watch
(``refproxier.apiwatch.ApiSource``). Checks: conformance/test_tcp_conntrack.py,
conformance/test_control_plane_restart.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from harness.proxiers import KUBE_PROXY_IPTABLES_CAPABILITIES
from refproxier import apiwatch, runner
from tests.faulty.faults import Fault

_IPT_CAPS = ",".join(sorted(KUBE_PROXY_IPTABLES_CAPABILITIES))


def _close_wait_timeout_not_set() -> None:
    # The CLOSE_WAIT conntrack timeout is left at the kernel's default (60 s).
    orig = runner.set_sysctls

    def set_sysctls(config):
        return orig(replace(config, conntrack_tcp_timeout_close_wait=0))
    runner.set_sysctls = set_sysctls


def _watch_not_resumed() -> None:
    # Once a watch fails (the connection is cut or refused), the informer never watches or
    # lists again: the proxier keeps its last state for good.
    orig = apiwatch.ApiSource._watch

    async def watch(self, client, res, namespace, params, rv):
        try:
            return await orig(self, client, res, namespace, params, rv)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the fault: any failure ends the informer
            logging.getLogger("refproxier.apiwatch").warning(
                "%s watch failed (%s); not watching again", res.__name__, e)
            await asyncio.Event().wait()
            raise
    apiwatch.ApiSource._watch = watch


FAULTS_LIST: list[Fault] = [
    Fault("close-wait-timeout-not-set", "the conntrack TCP CLOSE_WAIT timeout is not set in the "
          "node's namespace (the kernel's 60 s stays)", _close_wait_timeout_not_set,
          ("service/conntrack/tcp-close-wait-timeout",), capabilities=_IPT_CAPS),
    Fault("watch-not-resumed", "an API watch that fails (the API server went away) is never "
          "re-established", _watch_not_resumed, ("service/restart/control-plane-restart",),
          proxier_args=("--kubeconfig={kubeconfig}",), capabilities=_IPT_CAPS,
          pytest_args=("--control-plane=api",)),
]
