"""Probes: real packets from a host (client, node or pod), each reported as an Observation.

``probe(host, dst, dport, proto)`` sends ``count`` probes, each from its own socket (so a
distinct source port, kernel-chosen unless ``sport=``), up to ``parallel`` at a time, with
nonblocking sockets and one selector, on a thread living in the host's namespace (no
per-socket hand-off between threads, so the engine runs as fast as a bare connect loop).

Outcomes, and how each is established (never guessed):

* REPLY   -- the echo server's JSON arrived: ``pod``, ``seen_src``, ``seen_sport`` filled.
* RESET   -- TCP connect refused and *no* ICMP error quoting this probe arrived.
* ICMP    -- an ICMP error quoting this probe's 5-tuple: ``icmp_type``/``icmp_code``. UDP
  reads it from the socket's error queue (IP_RECVERR); TCP cannot tell an RST from an
  ICMP port-unreachable by errno (both ECONNREFUSED), so a raw ICMP (or ICMPv6) socket in
  the host's namespace captures the error and the quoted header (parsed with scapy) is
  matched.
* TIMEOUT -- nothing within ``timeout`` (default: ``timing.positive_s``; pass
  ``timing.silence_s`` when silence is the expected answer).
* ERROR   -- a local failure (no route, address not available, a garbled reply): ``error``.

Example::

    obs = probe(topo.clients["client"], "10.96.0.10", 80, count=200, parallel=32)
    Counter(o.pod for o in obs if o.outcome is Outcome.REPLY)

Recording: inside ``with recording() as log:`` every ``probe`` call made from this thread
(or its context) appends a ``ProbeRecord`` to ``log`` (``--save-scenario`` uses it).
"""

from __future__ import annotations

import _socket  # noqa: PLC2701 - the C socket type, for the engine's speed (see below)
import enum
import errno
import gc
import json
import select
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from harness.timing import Timing

T = TypeVar("T")


class Host(Protocol):
    """What probing needs of a host (``harness.topology.netns.Host`` is one, and so would
    be a handle on a kind node's namespace): its name, its timing, and a way to run a
    callable on a thread inside its network namespace."""

    @property
    def name(self) -> str: ...
    @property
    def timing(self) -> Timing: ...
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

# Linux constants Python 3.11's socket module lacks
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
SOL_RAW = 255
ICMP_FILTER = 1
# ICMP errors that end a connection attempt and quote the offending header: destination
# unreachable, time exceeded, parameter problem. (Redirects and source quench are advice,
# not an answer; TCP ignores them, so do we.)
_ICMP_ERROR_TYPES = (3, 11, 12)
# ICMPv6: destination unreachable, packet too big is advice (PMTU), time exceeded,
# parameter problem
_ICMP6_ERROR_TYPES = (1, 3, 4)
ICMP6_FILTER = 1
_RECVERR = struct.Struct("=IBBBBII")
_LINGER0 = struct.pack("ii", 1, 0)


class Outcome(enum.Enum):
    REPLY = "reply"
    RESET = "reset"
    ICMP = "icmp"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class Observation:
    """What one probe saw. ``src``/``sport`` are the probe's own address and port."""

    outcome: Outcome
    src: str
    sport: int
    dst: str
    dport: int
    proto: str
    pod: str | None = None
    seen_src: str | None = None
    seen_sport: int | None = None
    #: the pod's own port the probe reached (the echo server's ``port``: the target port)
    pod_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    #: who sent the ICMP error
    icmp_from: str | None = None
    rtt: float = 0.0
    error: str | None = None

    def __str__(self) -> str:
        head = f"{self.proto} {self.src}:{self.sport} -> {self.dst}:{self.dport}: "
        if self.outcome is Outcome.REPLY:
            port = f" port {self.pod_port}" if self.pod_port is not None else ""
            return head + f"reply from pod {self.pod}{port} (saw {self.seen_src}:{self.seen_sport})"
        if self.outcome is Outcome.ICMP:
            return head + f"ICMP type {self.icmp_type} code {self.icmp_code} from " \
                          f"{self.icmp_from}"
        return head + self.outcome.value + (f" ({self.error})" if self.error else "")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


@dataclass(frozen=True)
class ProbeRecord:
    """One ``probe`` call as ``recording`` logs it: from which host, to what, what came back."""

    host: str
    dst: str
    dport: int
    proto: str
    source: str | None
    sport: int | None
    observations: list[Observation] = field(default_factory=list)


_recording: ContextVar[list[ProbeRecord] | None] = ContextVar("probe_recording", default=None)


@contextmanager
def recording() -> Iterator[list[ProbeRecord]]:
    """Log every ``probe`` call made in this context (threads started inside it do not
    inherit it); yields the list the records are appended to."""
    log: list[ProbeRecord] = []
    token = _recording.set(log)
    try:
        yield log
    finally:
        _recording.reset(token)


# ------------------------------------------------------------------------------- engine


@dataclass(slots=True)
class _Probe:
    i: int
    sock: socket.socket
    fd: int
    t0: float
    deadline: float
    src: str = ""
    sport: int = 0
    buf: bytes = b""
    t_end: float = 0.0
    note: str | None = None
    refused: int = 0  # errno awaiting the ICMP-or-RST decision


class _Engine:
    def __init__(self, dst: str, dport: int, proto: str, count: int, source: str | None,
                 sport: int | None, timeout: float, parallel: int, payload: bytes,
                 icmp_capture: bool, reset_close: bool) -> None:
        self.reset_close = reset_close or bool(sport)
        self.dst, self.dport, self.proto = dst, dport, proto
        self.family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        self.count, self.source, self.sport = count, source, sport
        self.timeout, self.parallel, self.payload = timeout, parallel, payload
        self.icmp_capture = icmp_capture and proto != "udp"
        self.results: list[Observation | None] = [None] * count
        self.refused: list[_Probe] = []
        self.replied: list[_Probe] = []
        self.active: dict[int, _Probe] = {}
        self.by_tuple: dict[tuple[str, int], _Probe] = {}
        self.icmp: list[tuple[bytes, str]] = []
        # raw epoll rather than selectors: the per-probe bookkeeping is most of the engine's
        # cost over a bare blocking loop (benchmarks/probe_rate.py)
        self.ep = select.epoll()
        self.raw_fd = -1

    def obs(self, p: _Probe, outcome: Outcome, **kw: Any) -> None:
        kw.setdefault("rtt", time.perf_counter() - p.t0)
        self.results[p.i] = Observation(outcome, p.src, p.sport, self.dst, self.dport,
                                        self.proto, **kw)

    def run(self) -> list[Observation]:
        # Thousands of Observations would trigger cyclic-GC passes that rescan all of them
        # (measured: ~15% of the probe rate); the loop creates no reference cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> list[Observation]:
        raw = self._open_icmp() if self.icmp_capture else None
        active = self.active
        nxt = 0
        try:
            while nxt < self.count or active:
                while nxt < self.count and len(active) < self.parallel:
                    p = self._launch(nxt)
                    nxt += 1
                    if p is not None:
                        active[p.fd] = p
                now = time.perf_counter()
                if len(active) == 1:
                    first = next(iter(active.values())).deadline
                else:
                    first = min((p.deadline for p in active.values()), default=now)
                for fd, _ev in self.ep.poll(max(first - now, 0)):
                    if fd == self.raw_fd:
                        self._drain_icmp(raw)
                        continue
                    p = active.get(fd)  # type: ignore[assignment]
                    if p is not None and self._step(p):
                        self._finish(p, active)
                now = time.perf_counter()
                if now < first:
                    continue
                for p in [p for p in active.values() if p.deadline <= now]:
                    # a last look: the answer may be queued while we were busy (GC, import)
                    if self._step(p):
                        self._finish(p, active)
                        continue
                    self.obs(p, Outcome.TIMEOUT, rtt=self.timeout,
                             error="connected, no greeting" if p.buf else p.note)
                    self._finish(p, active)
            if raw is not None:
                # the raw copy of an ICMP error is queued before TCP sees the error, so
                # everything relevant is already in the queue now
                self._drain_icmp(raw)
            self._resolve_refused()
            self._parse_replies()
        finally:
            for p in active.values():
                p.sock.close()
            if raw is not None:
                raw.close()
            self.ep.close()
        return [o for o in self.results if o is not None]

    def _finish(self, p: _Probe, active: dict[int, _Probe]) -> None:
        active.pop(p.fd, None)
        self.by_tuple.pop((p.src, p.sport), None)
        # no epoll unregister: closing the (never duplicated) fd removes it from the set
        if self.reset_close and self.proto != "udp":
            # RST instead of FIN: no TIME_WAIT left behind, so thousands of probes to one
            # destination never run out of source ports (FIN: ~28k per minute at most)
            p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        p.sock.close()

    def _open_icmp(self) -> socket.socket | None:
        if self.family == socket.AF_INET:
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            # let only error messages through (a bitmask of types to *drop*)
            mask = 0xFFFFFFFF
            for t in _ICMP_ERROR_TYPES:
                mask &= ~(1 << t)
            raw.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", mask))
        else:
            raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            # struct icmp6_filter: 256 bits, a set bit blocks that type
            bits = [0xFFFFFFFF] * 8
            for t in _ICMP6_ERROR_TYPES:
                bits[t >> 5] &= ~(1 << (t & 31))
            raw.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *bits))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        raw.setblocking(False)
        self.raw_fd = raw.fileno()
        self.ep.register(self.raw_fd, select.EPOLLIN)
        return raw

    def _drain_icmp(self, raw: socket.socket | None) -> None:
        fresh = []
        while raw is not None:
            try:
                data, addr = raw.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            fresh.append((data, addr[0]))
        if not fresh:
            return
        self.icmp += fresh
        # An ICMP error can reach TCP while connect() still holds the socket lock (the
        # whole veth round trip runs in softirq inside the syscall); TCP then drops it
        # (TcpExtLockDroppedIcmps) and would only notice on the SYN retransmit a second
        # later. The raw copy is the packet itself, so it decides the probe now.
        for key, (itype, icode, sender) in _parse_icmp(fresh).items():
            p = self.by_tuple.get(key)
            if p is not None and not p.buf:
                self.obs(p, Outcome.ICMP, icmp_type=itype, icmp_code=icode, icmp_from=sender)
                self._finish(p, self.active)

    def _launch(self, i: int) -> _Probe | None:
        udp = self.proto == "udp"
        stype = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        ipproto = socket.IPPROTO_SCTP if self.proto == "sctp" else 0
        # the C-level socket type: the Python wrapper class costs a few microseconds per
        # probe in __init__/close, which is measurable against a bare connect loop
        s = _socket.socket(self.family, stype | socket.SOCK_NONBLOCK, ipproto)
        t0 = time.perf_counter()
        p = _Probe(i, s, s.fileno(), t0, t0 + self.timeout)
        try:
            if self.sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.source or self.sport:
                wildcard = "::" if self.family == socket.AF_INET6 else "0.0.0.0"
                s.bind((self.source or wildcard, self.sport or 0))
            if udp:
                if self.family == socket.AF_INET:
                    s.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                s.connect((self.dst, self.dport))
                p.src, p.sport = s.getsockname()[:2]
                try:
                    s.send(self.payload or b"probe\n")
                except PermissionError:
                    # this host's own netfilter stopped it (OUTPUT DROP or REJECT); a
                    # REJECT's ICMP still arrives on the error queue, so keep listening
                    p.note = "send: EPERM (dropped by this host's netfilter)"
            else:
                err = s.connect_ex((self.dst, self.dport))
                p.src, p.sport = s.getsockname()[:2]
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, errno.errorcode.get(err, str(err)))
        except OSError as e:
            if not p.src:
                try:
                    p.src, p.sport = s.getsockname()[:2]
                except OSError:
                    pass
            self.obs(p, Outcome.ERROR, error=f"{errno.errorcode.get(e.errno or 0, '')} {e}")
            s.close()
            return None
        # readable covers all three: greeting, datagram, and error (EPOLLERR/HUP)
        self.ep.register(p.fd, select.EPOLLIN)
        if self.icmp_capture:
            self.by_tuple[(p.src, p.sport)] = p
        return p

    def _step(self, p: _Probe) -> bool:
        """Handle readiness of probe ``p``; True when it is finished."""
        if self.proto == "udp":
            return self._step_udp(p)
        try:
            data = p.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionRefusedError:
            p.refused = errno.ECONNREFUSED
            self.refused.append(p)
            return True
        except ConnectionResetError:
            self.obs(p, Outcome.RESET, error="reset after connect")
            return True
        except OSError as e:
            if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                           errno.ENONET, errno.EPROTO, errno.EACCES, errno.EPERM):
                p.refused = e.errno or 0
                self.refused.append(p)
            else:
                self.obs(p, Outcome.ERROR, error=str(e))
            return True
        if not data:
            self.obs(p, Outcome.ERROR, error="connection closed before the greeting")
            return True
        p.buf += data
        if b"\n" not in p.buf:
            return False
        self._reply(p, p.buf)
        return True

    def _reply(self, p: _Probe, data: bytes) -> None:
        # Only note the time here; parsing waits until the batch is done. Any work between
        # a reply and the next connect is on the critical path of a sequential run, and
        # costs about three times its own CPU time in probe rate (benchmarks/probe_rate.py).
        p.buf, p.t_end = data, time.perf_counter()
        self.replied.append(p)

    def _parse_replies(self) -> None:
        for p in self.replied:
            line = p.buf.split(b"\n", 1)[0]
            rtt = p.t_end - p.t0
            try:
                msg = json.loads(line)
                self.obs(p, Outcome.REPLY, pod=msg["pod"], seen_src=msg["src"],
                         seen_sport=int(msg["sport"]), rtt=rtt,
                         pod_port=int(msg["port"]) if msg.get("port") is not None else None)
            except (ValueError, KeyError, TypeError):
                self.obs(p, Outcome.ERROR, error=f"not an echo greeting: {line[:80]!r}",
                         rtt=rtt)

    def _step_udp(self, p: _Probe) -> bool:
        try:
            _, anc, _, _ = p.sock.recvmsg(512, 512, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            anc = None
        if anc:
            for level, typ, data in anc:
                if (level, typ) in ((socket.SOL_IP, IP_RECVERR),
                                    (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                    ee_errno, origin, itype, icode, _, _, _ = _RECVERR.unpack_from(data)
                    if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                        self.obs(p, Outcome.ICMP, icmp_type=itype, icmp_code=icode,
                                 icmp_from=_offender(data[_RECVERR.size:]),
                                 error=errno.errorcode.get(ee_errno))
                    else:
                        self.obs(p, Outcome.ERROR, error=f"local error {ee_errno}")
                    return True
        try:
            data = p.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            self.obs(p, Outcome.ERROR, error=str(e))
            return True
        self._reply(p, data)
        return True

    def _resolve_refused(self) -> None:
        if not self.refused:
            return
        quoted = _parse_icmp(self.icmp) if self.icmp else {}
        for p in self.refused:
            hit = quoted.get((p.src, p.sport))
            if hit is not None:
                itype, icode, sender = hit
                self.obs(p, Outcome.ICMP, icmp_type=itype, icmp_code=icode, icmp_from=sender,
                         error=errno.errorcode.get(p.refused))
            elif p.refused == errno.ECONNREFUSED:
                self.obs(p, Outcome.RESET)
            else:
                # e.g. EHOSTUNREACH after failed ARP: a local verdict, not a packet we saw
                self.obs(p, Outcome.ERROR, error=errno.errorcode.get(p.refused))


def _offender(sa: bytes) -> str | None:
    if len(sa) >= 8 and struct.unpack_from("=H", sa)[0] == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, sa[4:8])
    if len(sa) >= 24 and struct.unpack_from("=H", sa)[0] == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, sa[8:24])
    return None


def _parse_icmp(packets: Iterable[tuple[bytes, str]]) -> dict[tuple[str, int], tuple[int, int, str]]:
    """ICMP errors -> {(quoted src, quoted sport): (type, code, sender)}.

    IPv4 raw sockets deliver the whole IP packet, ICMPv6 raw sockets the ICMPv6 message
    only; the sender's address tells which.
    """
    from scapy.layers.inet import ICMP, IP, IPerror, TCPerror, UDPerror  # slow import: lazy
    from scapy.layers.inet6 import IPerror6, icmp6typescls

    out: dict[tuple[str, int], tuple[int, int, str]] = {}
    for data, sender in packets:
        if ":" in sender:
            cls = icmp6typescls.get(data[0]) if data else None
            if cls is None:
                continue
            pkt = cls(data)
            inner, itype, icode = pkt.getlayer(IPerror6), data[0], data[1]
        else:
            pkt = IP(data)
            if ICMP not in pkt:
                continue
            inner, itype, icode = pkt.getlayer(IPerror), pkt[ICMP].type, pkt[ICMP].code
        if inner is None:
            continue
        l4 = inner.getlayer(TCPerror) or inner.getlayer(UDPerror)
        sport = getattr(l4, "sport", None) if l4 is not None else None
        if sport is None:
            continue
        out[(inner.src, int(sport))] = (int(itype), int(icode), sender)
    return out


def probe(
    host: Host,
    dst: str,
    dport: int,
    proto: str = "tcp",
    *,
    count: int = 1,
    source: str | None = None,
    sport: int | None = None,
    timeout: float | None = None,
    parallel: int | None = None,
    timing: Timing | None = None,
    payload: bytes = b"",
    icmp_capture: bool = True,
    close: str = "reset",
) -> list[Observation]:
    """Send ``count`` probes from ``host`` to ``dst:dport``; one Observation each, in order.

    ``source``: source address (one of ``host.addresses``); ``sport``: fixed source port
    (forces sequential probes, closed with RST so the 4-tuple is free again);
    ``timeout``: per probe, default ``timing.positive_s``; ``parallel``: probes in flight
    (default min(count, 32)); ``close``: how a TCP probe ends after the greeting, "reset"
    (default: no TIME_WAIT, so no source-port exhaustion in long statistical runs; the
    kernel may hand a finished probe's port to a later one, and conntrack then starts a
    fresh entry) or "fin" (an orderly close: no port repeats for a minute, at most ~28k
    probes per destination per minute).
    """
    if close not in ("reset", "fin"):
        raise ValueError(f"close {close!r}: use 'reset' or 'fin'")
    proto = proto.lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"proto {proto!r}: use tcp, udp or sctp")
    if count < 1:
        raise ValueError("count must be >= 1")
    timing = timing or host.timing
    t = timing.positive_s if timeout is None else timeout
    par = 1 if sport else max(1, parallel if parallel is not None else min(count, 32))
    if proto != "udp" and icmp_capture:
        import scapy.layers.inet  # noqa: F401 - once per process, not inside a timed probe
        import scapy.layers.inet6  # noqa: F401
    engine = _Engine(str(dst), int(dport), proto, count, source, sport, t, par, payload,
                     icmp_capture, close == "reset")
    observations = host.call(engine.run)
    log = _recording.get()
    if log is not None:
        log.append(ProbeRecord(host.name, str(dst), int(dport), proto, source, sport,
                               observations))
    return observations


# ----------------------------------------------------------------------- scapy helpers


def send_crafted(host: Host, packet: Any) -> None:
    """Send a scapy IP packet (any source address) from inside ``host``'s namespace.

    Sent through a raw socket created in the namespace: the kernel routes it with the
    namespace's tables (scapy's own routing would read the root namespace's).

    Example: ``send_crafted(client, IP(src="192.0.2.150", dst=ip)/UDP(dport=53))``
    """
    data = bytes(packet)
    dst = packet.dst
    # an AF_INET6 IPPROTO_RAW socket takes the whole IPv6 header too (IPV6_HDRINCL implied)
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET

    def _send() -> None:
        with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
            s.sendto(data, (dst, 0))

    host.call(_send)


def ip_header(src: str, dst: str) -> Any:
    """A scapy IP or IPv6 header for ``src`` -> ``dst`` (the family of the addresses), to
    build crafted packets that work on either cluster family."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    return IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)


def ip_layer(packet: Any) -> Any:
    """The IP or IPv6 layer of a captured scapy packet, or None."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    for layer in (IP, IPv6):
        if layer in packet:
            return packet[layer]
    return None


class Capture:
    """Packets seen on one interface of a host's namespace since it was opened."""

    def __init__(self, host: Host, ifname: str = "eth0") -> None:
        def _open() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((ifname, 0))
            s.setblocking(False)
            return s

        self.host, self.ifname = host, ifname
        self.sock: socket.socket = host.call(_open)

    def packets(self, wait: float = 0.0) -> list[Any]:
        """Everything captured so far (waiting up to ``wait`` for the first), as scapy Ether."""
        import scapy.layers.inet  # noqa: F401 - binds IP & co. so Ether() dissects them
        from scapy.layers.l2 import Ether

        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        if wait:
            sel.select(wait)
        sel.close()
        out = []
        while True:
            try:
                out.append(Ether(self.sock.recv(65535)))
            except (BlockingIOError, InterruptedError):
                return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sniff_in(host: Host, ifname: str = "eth0") -> Capture:
    """Start capturing on ``ifname`` inside ``host``'s namespace (use as a context manager).

    Example::

        with sniff_in(node, "eth0") as cap:
            probe(client, svc_ip, 80)
            pkts = cap.packets()
    """
    return Capture(host, ifname)


def by_pod(observations: Sequence[Observation]) -> dict[str | None, int]:
    """Count replies per pod (``None`` counts probes without a reply)."""
    out: dict[str | None, int] = {}
    for o in observations:
        key = o.pod if o.outcome is Outcome.REPLY else None
        out[key] = out.get(key, 0) + 1
    return out
