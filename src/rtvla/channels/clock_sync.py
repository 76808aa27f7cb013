"""Clock offset between hosts by an NTP-style ping exchange over Zenoh, without wall clocks.

Each host's monotonic clock has its own origin, so a stamp from another host means nothing
here until the offset between the two clocks is known. :class:`ClockSyncServer` answers pings
on ``rtvla/<robot>/clock/<host>`` with the times its own clock read when the ping arrived
(``t1``) and when the answer left (``t2``); :class:`ClockSync` stamps each ping's departure
(``t0``) and the answer's arrival (``t3``) on the local clock. For one exchange::

    offset      = ((t1 - t0) + (t2 - t3)) / 2       remote clock minus local clock
    round trip  = (t3 - t0) - (t2 - t1)             time on the wire, both ways

If the two legs took equally long the offset is exact; however they split, the true offset
lies within ``round trip / 2`` of the estimate. So the estimator keeps the exchange with the
smallest round trip (queueing only ever adds delay) and reports its half round trip as the
uncertainty. Wall clocks are never read.

Usage::

    server = ClockSyncServer(session, clock_key("arm", "gpu-host"))      # on the remote host
    off = ClockSync(session, clock_key("arm", "gpu-host")).estimate(n=20)  # here
    local_ns = off.to_local(remote_stamp_ns)     # off.uncertainty_ns bounds the error
"""

from __future__ import annotations

import logging
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtvla.errors import ChannelError
from rtvla.timing import MONOTONIC, Clock

__all__ = ["ClockOffset", "ClockSync", "ClockSyncServer", "clock_key"]

logger = logging.getLogger(__name__)

_PING = struct.Struct("<4sq")  # magic, t0 (echoed so a late answer cannot pass for a newer ping)
_PONG = struct.Struct("<4sqqq")  # magic, t0, t1, t2
_MAGIC = b"RTCK"
_CHUNK = re.compile(r"^[A-Za-z0-9_.-]+$")


def clock_key(robot: str, host: str) -> str:
    """``rtvla/<robot>/clock/<host>``, the key a host's clock answers on (an ``rtvla node``
    answers on ``clock/<part>``: the clock of the host its part runs on, wherever that is)."""
    for what, v in (("robot", robot), ("host", host)):
        if not isinstance(v, str) or not _CHUNK.match(v):
            raise ChannelError(f"clock sync {what} name must be letters, digits, '_', '.', '-'; got {v!r}")
    return f"rtvla/{robot}/clock/{host}"


def _zenoh() -> Any:
    try:
        import zenoh
    except ImportError as exc:
        raise ChannelError("clock sync needs eclipse-zenoh: pip install 'rtvla[zenoh]'") from exc
    return zenoh


@dataclass(frozen=True)
class ClockOffset:
    """``offset_ns`` = remote clock - local clock; the true offset is within ``uncertainty_ns``."""

    offset_ns: int
    uncertainty_ns: int
    rtt_ns: int
    samples: int

    def to_local(self, remote_ns: int) -> int:
        """A remote monotonic stamp on the local clock."""
        return int(remote_ns) - self.offset_ns

    def to_remote(self, local_ns: int) -> int:
        return int(local_ns) + self.offset_ns

    def to_dict(self) -> dict[str, int]:
        return {"offset_ns": self.offset_ns, "uncertainty_ns": self.uncertainty_ns, "rtt_ns": self.rtt_ns,
                "samples": self.samples}


class ClockSyncServer:
    """Answers clock pings on ``key`` with its clock's receive and send times.

    ``clock_ns`` is the clock to expose (monotonic by default; tests inject an offset).
    """

    def __init__(self, session: Any, key: str, *, clock_ns: Callable[[], int] = MONOTONIC.now_ns) -> None:
        zenoh = _zenoh()
        self.key = key
        self.clock_ns = clock_ns
        self.answered = 0
        self.malformed = 0
        self._queryable = session.declare_queryable(zenoh.KeyExpr(key), self._on_query, complete=True)

    def _on_query(self, query: Any) -> None:
        t1 = self.clock_ns()
        payload = query.payload
        raw = payload.to_bytes() if payload is not None else b""
        if len(raw) != _PING.size or raw[:4] != _MAGIC:
            self.malformed += 1
            if self.malformed % 1000 == 1:
                logger.warning("clock sync %s: ignored a malformed ping of %d B", self.key, len(raw))
            return
        _, t0 = _PING.unpack(raw)
        t2 = self.clock_ns()  # as late as possible: the reply leaves right after
        query.reply(self.key, _PONG.pack(_MAGIC, t0, t1, t2))
        self.answered += 1

    def close(self) -> None:
        try:
            self._queryable.undeclare()
        except Exception as exc:  # the session may be closed already
            logger.debug("clock sync %s: undeclare failed: %s", self.key, exc)

    def __enter__(self) -> ClockSyncServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClockSync:
    """Estimates the offset of the clock answering on ``key`` relative to ``clock``."""

    def __init__(self, session: Any, key: str, *, clock: Clock = MONOTONIC, timeout_s: float = 1.0) -> None:
        if not timeout_s > 0:
            raise ChannelError(f"clock sync timeout_s must be > 0, got {timeout_s}")
        self.session = session
        self.key = key
        self.clock = clock
        self.timeout_s = float(timeout_s)
        self.last: ClockOffset | None = None

    def ping(self) -> tuple[int, int, int, int] | None:
        """One exchange: (t0, t1, t2, t3), or None if no answer came within the timeout."""
        done = threading.Event()
        result: list[tuple[int, int, int, int]] = []
        t0_box: list[int] = []

        def on_reply(reply: Any) -> None:
            t3 = self.clock.now_ns()  # first thing: the answer's arrival
            ok = getattr(reply, "ok", None)
            if ok is None or result:
                return
            raw = ok.payload.to_bytes()
            if len(raw) != _PONG.size or raw[:4] != _MAGIC:
                return
            _, t0, t1, t2 = _PONG.unpack(raw)
            if t0_box and t0 == t0_box[0]:
                result.append((t0, t1, t2, t3))
                done.set()

        t0 = self.clock.now_ns()
        t0_box.append(t0)
        self.session.get(self.key, on_reply, payload=_PING.pack(_MAGIC, t0), timeout=self.timeout_s)
        done.wait(self.timeout_s)
        return result[0] if result else None

    def wait_ready(self, timeout: float) -> bool:
        """Ping until one answer comes back (the answering host is reachable); False on timeout."""
        end = self.clock.now_ns() + int(timeout * 1e9)
        while self.clock.now_ns() < end:
            if self.ping() is not None:
                return True
        return False

    def estimate(self, n: int = 20) -> ClockOffset:
        """Send ``n`` pings; the answer with the smallest round trip gives offset and uncertainty."""
        if not isinstance(n, int) or n < 1:
            raise ChannelError(f"clock sync needs n >= 1 pings, got {n!r}")
        best: tuple[int, int, int, int] | None = None
        best_rtt = 0
        answered = 0
        for _ in range(n):
            s = self.ping()
            if s is None:
                continue
            t0, t1, t2, t3 = s
            rtt = (t3 - t0) - (t2 - t1)
            if rtt < 0:  # cannot happen with two monotonic clocks; a broken answer
                logger.warning("clock sync %s: dropped an exchange with negative round trip %d ns", self.key, rtt)
                continue
            answered += 1
            if best is None or rtt < best_rtt:
                best, best_rtt = s, rtt
        if best is None:
            raise ChannelError(f"clock sync {self.key}: none of {n} pings was answered within "
                               f"{self.timeout_s} s (is the remote ClockSyncServer running and reachable?)")
        t0, t1, t2, t3 = best
        # Integer halves: rounding to the ns is far below any achievable uncertainty.
        offset = ((t1 - t0) + (t2 - t3)) // 2
        self.last = ClockOffset(offset_ns=offset, uncertainty_ns=(best_rtt + 1) // 2, rtt_ns=best_rtt,
                                samples=answered)
        return self.last
