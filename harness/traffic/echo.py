"""The echo server: ONE process serving every pod of a topology.

Each pod's listening sockets are created inside the pod's namespace (setns, bind, setns
back) and all of them are served by one selectors loop:

* TCP (and SCTP where the kernel has it): on accept, one JSON line
  ``{"pod": name, "src": ip, "sport": port, "proto": "tcp", "port": the pod's port}``, then it echoes whatever the
  client sends until the client closes, so long-lived connections can be tested.
* UDP: every datagram is answered with the same JSON (``"proto": "udp"``).

Why one process (measured by benchmarks/probe_rate.py, 20 pods, 2-CPU VM, loaded):

* vs one interpreter per pod: 0.15 s to serve all 20 pods instead of 2.4 s, and 9 MB PSS
  (15 MB RSS) instead of 167 MB PSS (298 MB RSS); adding a pod to the running server
  takes 0.4 ms.
* vs a thread in the pytest process (``EchoServer(thread=True)``, kept for that
  comparison): the thread starts in 3 ms and costs nothing in memory, but it shares the
  GIL with the probe engine. In 3 of 4 runs it was slower (e.g. 8 rounds: 2.0k vs 3.0k
  probes/s sequential, 4.8k vs 6.3k/s with 32 in parallel; one run under heavy load
  showed no difference), and the replies' timing would depend on what pytest is doing.

The parent controls the server with JSON lines on its stdin/stdout. When the parent dies,
stdin reaches EOF and the server exits; its pid is also in the run registry, so a reaper
kills it after a SIGKILL too.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from harness.timing import Timing


class EchoPod(Protocol):
    """What the echo server needs of a pod (``harness.topology.netns.Pod`` is one)."""

    name: str
    netns: str
    addresses: list[str]
    ports: list[tuple[int, str]]


class PidRegistry(Protocol):
    """Where the server's pid is recorded for the next run's reaper
    (``harness.topology.registry.Registration`` is one)."""

    def add_pid(self, pid: int) -> None: ...
    def remove_pid(self, pid: int) -> None: ...

# ----------------------------------------------------------------------------- server side

_PROTO = {
    "tcp": (socket.SOCK_STREAM, 0),
    "udp": (socket.SOCK_DGRAM, 0),
    "sctp": (socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132)),
}


@dataclass
class _Conn:
    sock: socket.socket
    pod: str
    out: bytearray = field(default_factory=bytearray)


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    # a local copy of harness.topology.nsutil.setns_fd: importing that module here would
    # pull concurrent.futures and subprocess into every start-up of the server
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class _Server:
    """The selectors loop; control lines arrive on ``ctl_in``, answers go to ``ctl_out``."""

    def __init__(self, ctl_in: int, ctl_out: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[str, list[socket.socket]] = {}
        self.conns: dict[str, list[_Conn]] = {}
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.ctl_in, self.ctl_out = ctl_in, ctl_out
        self.ctl_buf = b""

    def reply(self, obj: dict[str, Any]) -> None:
        os.write(self.ctl_out, json.dumps(obj).encode() + b"\n")

    # -- control ----------------------------------------------------------------------

    def add(self, name: str, netns: str, family: str, ports: Iterable[list[Any]],
            bind: Iterable[str] = ()) -> None:
        # "4", "6", or "4,6" for a dual-stack pod (then the IPv6 sockets are IPv6-only, so
        # IPv4 peers are seen as plain IPv4 addresses, not v4-mapped ones). ``bind``: the
        # addresses to listen on (one per family) instead of the wildcard, for a namespace
        # with several addresses (a node's): a wildcard UDP socket answers from the address
        # of the route back, which conntrack cannot match to the translated flow.
        fams = [socket.AF_INET6 if f == "6" else socket.AF_INET for f in family.split(",")]
        bound = {socket.AF_INET6 if ":" in a else socket.AF_INET: a for a in bind}
        socks: list[tuple[socket.socket, str]] = []
        nsfd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(nsfd)
        finally:
            os.close(nsfd)
        try:
            for (port, proto), fam in ((pp, f) for pp in ports for f in fams):
                stype, ipproto = _PROTO[proto]
                s = socket.socket(fam, stype, ipproto)
                socks.append((s, proto))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6 and len(fams) > 1:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((bound.get(fam, "::" if fam == socket.AF_INET6 else "0.0.0.0"), int(port)))
                if stype == socket.SOCK_STREAM:
                    s.listen(1024)
                s.setblocking(False)
        except BaseException:
            for s, _ in socks:
                s.close()
            raise
        finally:
            _setns(self.home)  # the loop itself never stays in a pod's namespace
        self.listeners[name] = [s for s, _ in socks]
        self.conns.setdefault(name, [])
        for s, proto in socks:
            kind = "accept" if s.type == socket.SOCK_STREAM else "udp"
            self.sel.register(s, selectors.EVENT_READ, (kind, name, proto))

    def remove(self, name: str) -> None:
        for s in self.listeners.pop(name, []):
            self.sel.unregister(s)
            s.close()
        for c in self.conns.pop(name, []):
            self._drop(c)

    def control(self, line: bytes) -> bool:
        msg = json.loads(line)
        op = msg.get("op")
        try:
            if op == "add":
                self.add(msg["name"], msg["netns"], msg.get("family", "4"), msg["ports"],
                         msg.get("bind", ()))
            elif op == "remove":
                self.remove(msg["name"])
            elif op == "stats":
                self.reply({"ok": True, "pods": len(self.listeners),
                            "conns": sum(map(len, self.conns.values()))})
                return True
            elif op == "quit":
                self.reply({"ok": True})
                return False
            elif op != "ping":
                raise ValueError(f"unknown op {op!r}")
            self.reply({"ok": True})
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
            self.reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return True

    # -- data ----------------------------------------------------------------------------

    @staticmethod
    def hello(pod: str, peer: tuple[Any, ...], proto: str, port: int | None = None) -> bytes:
        # port: the pod's own port the packet reached (after any DNAT), so a check can
        # tell a right pod on a wrong target port
        return json.dumps({"pod": pod, "src": peer[0], "sport": peer[1], "proto": proto,
                           "port": port}, separators=(",", ":")).encode() + b"\n"

    def _drop(self, c: _Conn) -> None:
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        lst = self.conns.get(c.pod)
        if lst and c in lst:
            lst.remove(c)

    def _flush(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.out)
            del c.out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self._drop(c)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        self.sel.modify(c.sock, events, ("conn", c.pod, c))

    def on_accept(self, s: socket.socket, pod: str, proto: str) -> None:
        port = s.getsockname()[1]
        while True:
            try:
                cs, peer = s.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ECONNABORTED etc.: that client is gone, keep serving
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    return
                continue
            cs.setblocking(False)
            c = _Conn(cs, pod, bytearray(self.hello(pod, peer, proto, port)))
            self.conns.setdefault(pod, []).append(c)
            self.sel.register(cs, selectors.EVENT_READ, ("conn", pod, c))
            self._flush(c)

    def on_conn(self, c: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(c)
                return
            if data == b"":
                self._drop(c)
                return
            if data:
                c.out += data
        if c.sock.fileno() >= 0:
            self._flush(c)

    def on_udp(self, s: socket.socket, pod: str) -> None:
        port = s.getsockname()[1]
        for _ in range(256):  # drain a burst, but let other sockets have a turn
            try:
                _, peer = s.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. a queued ICMP error for an earlier reply
            try:
                s.sendto(self.hello(pod, peer, "udp", port), peer)
            except OSError:
                pass

    def loop(self) -> None:
        try:
            self._loop()
        finally:  # matters in thread mode, where nothing else would close the sockets
            for name in list(self.listeners):
                self.remove(name)
            self.sel.close()
            os.close(self.home)

    def _loop(self) -> None:
        os.set_blocking(self.ctl_in, False)
        self.sel.register(self.ctl_in, selectors.EVENT_READ, ("ctl", "", None))
        self.reply({"ok": True, "ready": True, "pid": os.getpid()})
        while True:
            for key, mask in self.sel.select():
                kind, pod, extra = key.data
                if kind == "conn":
                    self.on_conn(extra, mask)
                elif kind == "udp":
                    self.on_udp(key.fileobj, pod)  # type: ignore[arg-type]
                elif kind == "accept":
                    self.on_accept(key.fileobj, pod, extra)  # type: ignore[arg-type]
                else:
                    try:
                        chunk = os.read(self.ctl_in, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:  # parent gone or closed us: exit
                        return
                    self.ctl_buf += chunk
                    while b"\n" in self.ctl_buf:
                        line, self.ctl_buf = self.ctl_buf.split(b"\n", 1)
                        if line.strip() and not self.control(line):
                            return


def main() -> None:
    _Server(sys.stdin.fileno(), sys.stdout.fileno()).loop()


# ----------------------------------------------------------------------------- client side


class EchoError(RuntimeError):
    """The echo server refused a command or did not answer in time."""


class EchoServer:
    """Handle on the echo server: a process (default) or, for comparison, a thread here.

    Example::

        echo = EchoServer()
        echo.add_pod(pod)          # returns once the pod's sockets are listening
        echo.remove_pod(pod.name)
        echo.close()
    """

    def __init__(self, *, timing: Timing | None = None,
                 registration: PidRegistry | None = None, thread: bool = False) -> None:
        from harness.timing import default_timing

        self.timing = timing or default_timing()
        self._registration = registration
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        if thread:
            srv_in, self._ctl = os.pipe()
            self._ans, srv_out = os.pipe()
            server = _Server(srv_in, srv_out)

            def run() -> None:
                try:
                    server.loop()
                finally:
                    os.close(srv_in)
                    os.close(srv_out)

            self.thread = threading.Thread(target=run, name="echo-server", daemon=True)
            self.thread.start()
            self.pid = os.getpid()
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.traffic.echo"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                # its own session: a Ctrl-C at the terminal reaches pytest, which then
                # closes us in order, instead of killing the server under a running test
                start_new_session=True,
            )
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self._ctl, self._ans = self.proc.stdin.fileno(), self.proc.stdout.fileno()
            self.pid = self.proc.pid
            if registration is not None:
                registration.add_pid(self.pid)
        self._buf = b""
        self._pods: set[str] = set()
        self._closed = False
        try:
            hello = self._read(self.timing.positive_s * 5)  # interpreter start-up, slow box
            if not hello.get("ready"):
                raise EchoError(f"echo server did not start: {hello}")
        except EchoError:
            self.close()
            raise

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.thread is not None and self.thread.is_alive()

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._ans], [], [], left)[0]:
                raise EchoError(f"echo server (pid {self.pid}) silent for {timeout:.1f}s")
            chunk = os.read(self._ans, 65536)
            if not chunk:
                raise EchoError(f"echo server (pid {self.pid}) exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def command(self, **msg: Any) -> dict[str, Any]:
        """Send one control command and return the server's answer (raises on error)."""
        try:
            os.write(self._ctl, json.dumps(msg).encode() + b"\n")
        except (BrokenPipeError, OSError):
            raise EchoError(f"echo server (pid {self.pid}) is gone") from None
        answer = self._read(self.timing.positive_s)
        if not answer.get("ok"):
            raise EchoError(f"echo server: {msg.get('op')} failed: {answer.get('error')}")
        return answer

    def add_pod(self, pod: EchoPod) -> None:
        """Listen on all of ``pod.ports`` inside the pod's namespace; returns when ready."""
        self.command(op="add", name=pod.name, netns=pod.netns,
                     family=",".join(sorted({"6" if ":" in a else "4" for a in pod.addresses})),
                     ports=[[p, proto] for p, proto in pod.ports],
                     bind=list(getattr(pod, "bind_addresses", ())))
        self._pods.add(pod.name)

    def remove_pod(self, name: str) -> None:
        """Close the pod's listeners and its open connections."""
        if name in self._pods and self._alive():
            self.command(op="remove", name=name)
        self._pods.discard(name)

    def stats(self) -> dict[str, Any]:
        return self.command(op="stats")

    def close(self) -> None:
        """Stop the server (EOF on its control pipe; a process that lingers is killed)."""
        if self._closed:
            return
        self._closed = True
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(self.timing.positive_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            if self._registration is not None:
                self._registration.remove_pid(self.pid)
        else:
            os.close(self._ctl)
            if self.thread is not None:
                self.thread.join(self.timing.positive_s)
            os.close(self._ans)


if __name__ == "__main__":
    main()


# --- the client side of the echo protocol (for tests that hold a connection open) ----------


def read_line(sock: socket.socket, timeout: float) -> bytes:
    """Bytes from ``sock`` up to and including a newline: an echoed line, or the greeting."""
    sock.settimeout(timeout)
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed by the peer after {buf!r}")
        buf += chunk
    return buf


def read_greeting(sock: socket.socket, timeout: float) -> dict[str, Any]:
    """The JSON greeting a TCP echo server sends on accept (pod, src, sport, proto)."""
    return json.loads(read_line(sock, timeout).split(b"\n")[0])
