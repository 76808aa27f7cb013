"""Shared-memory latest-value channel for numpy arrays between processes.

One process creates the channel (and owns the POSIX shared-memory segment); others attach
from its picklable :attr:`SharedArrayChannel.spec`. A publish copies the array once into one
of ``slots`` rotating slots; readers copy it out (or take a read-only view in place).

Why a reader never sees a torn frame: every slot carries a version word, set odd
(``2*seq+1``) while the writer copies and even (``2*seq``) once the copy is complete. A
reader checks the version before and after its copy and retries on a mismatch (a seqlock),
and slot rotation makes retries rare: the writer must lap all other slots during one copy
before it touches the slot being read.

Why this holds on every CPU: the version and sequence words are read and written with the
ordering the protocol needs, through :mod:`rtvla.channels.shm_sync`: plain stores and loads
on x86 (TSO gives them release/acquire order), libatomic's acquire/release atomics and
fences on weakly ordered CPUs (aarch64, armv7 and the others). ``ordering="atomic"`` runs the
fenced variant on x86 too.

Why waiting does not poll: a 32-bit wake word in the segment is a Linux futex. A publish
bumps the word and calls ``FUTEX_WAKE``; ``wait_newer`` sleeps in ``FUTEX_WAIT`` on the value
it saw, so the kernel wakes every waiting reader, in any process, and a publish that lands
between the check and the sleep makes the wait return at once. Nothing is registered per
reader, so any number of readers works, with the ``spawn`` start method too: the segment
name in the spec is all a child needs.

Why a dead writer never blocks a reader: nothing a reader waits on can be held. A writer
killed mid-copy leaves its slot odd, but the header still names the previous, complete slot
(the sequence number is published after the copy), so ``latest`` keeps returning that one
and the next writer simply rewrites the odd slot. The header records the creator's and the
last publisher's process; a ``wait_newer`` that has waited longer than a quarter second checks
them (``kill(pid, 0)``, zombies count as dead) and returns None once either is gone, even
with ``timeout=None``. Processes in another PID namespace cannot be checked; they are
trusted to be alive.

Usage::

    ch = SharedArrayChannel.create("camera", (480, 640, 3), np.uint8)   # owner
    proc = mp.get_context("spawn").Process(target=consume, args=(ch.spec,))
    ...
    def consume(spec):
        with SharedArrayChannel.attach(spec) as cam:
            seq = 0
            while (s := cam.wait_newer(seq, timeout=1.0)) is not None:
                seq = s.seq
                process(s.value)
    ...
    ch.publish(frame)          # one copy in; returns the sequence number
    ch.close(); ch.unlink()    # or ``with ch:`` which does both for the creator

One writer at a time: concurrent publishers in one process are serialized by a lock;
publishers in different processes must take turns themselves.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.channels.base import Sample
from rtvla.channels.shm_sync import SeqlockWords, check_ordering, get_futex, make_words
from rtvla.errors import ChannelClosed, ChannelError
from rtvla.timing import MONOTONIC, Clock

__all__ = ["SharedArrayChannel", "ShmSpec"]

logger = logging.getLogger(__name__)

_MAGIC = 0x72_74_76_6C_61_73_68_6D  # "rtvlashm"
_LAYOUT_VERSION = 2  # 2: creator and writer process words
_ALIGN = 64  # cache line: keeps header words, slot table and frames on separate lines

# Header words (uint64 indices). CREATOR and WRITER hold a process tag: pid | pidns << 32.
_H_MAGIC, _H_VERSION, _H_SLOTS, _H_NBYTES, _H_SEQ, _H_CLOSED, _H_CREATOR, _H_WRITER = range(8)
_HEADER_WORDS = 8
_WAKE_OFFSET = 64  # byte offset of the 32-bit futex wake word
_TABLE_OFFSET = 128  # slot table: (version, stamp_ns) pairs of uint64

_MAX_READ_RETRIES = 1000  # a reader lapped this often means slots are far too few
_LIVENESS_NS = 250_000_000  # a waiting reader checks its peers' processes this often


# --- peer processes ------------------------------------------------------------------------


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino & 0xFFFFFFFF
    except OSError:
        return 0


_PIDNS = _pid_namespace()


def _process_tag() -> int:
    return (_PIDNS << 32) | os.getpid()


def _tag_dead(tag: int) -> bool:
    """Whether the process a header tag names is gone (False when it cannot be judged)."""
    pid, ns = tag & 0xFFFFFFFF, tag >> 32
    if pid == 0 or ns != _PIDNS or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    try:  # an exited child its parent has not reaped yet still answers kill(0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


# --- segment -------------------------------------------------------------------------------


def _round_up(n: int, align: int = _ALIGN) -> int:
    return (n + align - 1) // align * align


def _shm_module() -> Any:
    try:
        import _posixshmem  # the C module behind multiprocessing.shared_memory on POSIX
    except ImportError as exc:  # pragma: no cover - every CPython on Linux has it
        raise ChannelError("POSIX shared memory (_posixshmem) is unavailable") from exc
    return _posixshmem


def _open_segment(segment: str, size: int | None) -> mmap.mmap:
    """Create (``size`` given) or open an existing POSIX shm segment and map it.

    This does what ``multiprocessing.shared_memory.SharedMemory`` does, minus its habit of
    registering *attached* segments with the resource tracker (before Python 3.13 there is no
    ``track=False``): an attacher that registers makes the tracker unlink the segment, or warn
    about a "leak", when the attacher exits while the creator is still using it. The creator
    registers, so a crashed creator's segment is still cleaned up.
    """
    posixshmem = _shm_module()
    path = "/" + segment
    if size is None:
        try:
            fd = posixshmem.shm_open(path, os.O_RDWR, mode=0o600)
        except FileNotFoundError as exc:
            raise ChannelError(f"shared-memory segment {segment!r} does not exist "
                               "(creator closed and unlinked it, or never created it)") from exc
    else:
        try:
            fd = posixshmem.shm_open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError as exc:
            raise ChannelError(f"shared-memory segment {segment!r} already exists") from exc
    try:
        if size is not None:
            os.ftruncate(fd, size)
        else:
            size = os.fstat(fd).st_size
            if size < _TABLE_OFFSET:
                raise ChannelError(f"shared-memory segment {segment!r} is too small ({size} B) "
                                   "to be an rtvla channel")
        mm = mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        if size is not None:  # we created it: do not leave a half-made segment behind
            posixshmem.shm_unlink(path)
        raise
    os.close(fd)
    if size is not None:
        from multiprocessing import resource_tracker

        resource_tracker.register(path, "shared_memory")
    return mm


def _unlink_segment(segment: str) -> None:
    from multiprocessing import resource_tracker

    path = "/" + segment
    try:
        _shm_module().shm_unlink(path)
    except FileNotFoundError:
        logger.warning("shared-memory segment %s was already unlinked by someone else", segment)
    resource_tracker.unregister(path, "shared_memory")


def _segment_name(name: str) -> str:
    # Unique per creation, so a stale segment from a crashed run or a parallel test never
    # collides; the channel name stays readable in /dev/shm for debugging.
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]
    return f"rtvla-{safe}-{os.getpid()}-{secrets.token_hex(4)}"


# --- channel -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShmSpec:
    """Everything another process needs to attach: picklable, pass it to a child process."""

    name: str  # the channel's name
    segment: str  # the POSIX shared-memory segment name (without the leading slash)
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    slots: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _check_layout(name: str, shape: Any, dtype: Any, slots: Any) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    if not isinstance(name, str) or not name:
        raise ChannelError(f"channel name must be a non-empty string, got {name!r}")
    try:
        shape_t = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    except (TypeError, ValueError) as exc:
        raise ChannelError(f"channel {name!r}: shape must be a tuple of ints, got {shape!r}") from exc
    if any(d <= 0 for d in shape_t):
        raise ChannelError(f"channel {name!r}: every shape dimension must be > 0, got {shape_t}")
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ChannelError(f"channel {name!r}: dtype {dtype!r} is not a numpy dtype") from exc
    if dt.hasobject or dt.itemsize == 0:
        raise ChannelError(f"channel {name!r}: dtype {dt} holds Python objects or has no size; "
                           "only fixed-size plain-data dtypes fit in shared memory")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 2:
        raise ChannelError(f"channel {name!r}: slots must be an int >= 2, got {slots!r}")
    return shape_t, dt, slots

class SharedArrayChannel:
    """A latest-value channel carrying one numpy array shape/dtype across processes.

    Build with :meth:`create` (the owner) or :meth:`attach` (anyone else, from ``spec``).
    Implements the :class:`~rtvla.channels.base.Channel` contract; ``latest``/``wait_newer``
    also take ``copy`` and ``out`` to read in place or into a preallocated array.
    ``ordering`` picks how the seqlock's words are ordered (``"auto"``: plain on x86,
    libatomic fences elsewhere; ``"atomic"``: fences everywhere; see ``shm_sync``).
    """

    def __init__(self, spec: ShmSpec, mm: mmap.mmap, *, creator: bool, clock: Clock,
                 ordering: str = "auto") -> None:
        self._spec = spec
        self.name = spec.name
        self.clock = clock
        # A forked child inherits this object as is; only the creating process owns it.
        self._owner_pid = os.getpid() if creator else -1
        self._closed = False
        self._unlinked = False
        self._gone_logged = False
        self._publish_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._futex = get_futex()
        self._mm: mmap.mmap | None = mm

        slots, nbytes = spec.slots, spec.nbytes
        stride = _round_up(nbytes)
        data_offset = _round_up(_TABLE_OFFSET + 16 * slots)
        hdr = np.frombuffer(mm, np.uint64, _HEADER_WORDS, 0)
        wake = ctypes.c_uint32.from_buffer(mm, _WAKE_OFFSET)
        table = np.frombuffer(mm, np.uint64, 2 * slots, _TABLE_OFFSET).reshape(slots, 2)
        self._hdr: np.ndarray | None = hdr
        self._stamps: np.ndarray | None = table[:, 1]
        self._words: SeqlockWords | None = make_words(ordering, hdr, _H_SEQ, table[:, 0], wake)
        # Touch every page now so the first publish/read does not pay the page faults
        # (about 1.5 ms for a 921,600 B frame): creating and attaching is setup time.
        page = mmap.PAGESIZE
        if creator:
            np.frombuffer(mm, np.uint8)[data_offset::page] = 0
        else:
            int(np.frombuffer(mm, np.uint8)[::page].sum())
        self._frames: list[np.ndarray] = []
        self._ro_frames: list[np.ndarray] = []
        for i in range(slots):
            v = np.frombuffer(mm, spec.dtype, nbytes // spec.dtype.itemsize,
                              data_offset + i * stride).reshape(spec.shape)
            self._frames.append(v)
            ro = v.view()
            ro.flags.writeable = False
            self._ro_frames.append(ro)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, shape: tuple[int, ...] | list[int] | int, dtype: Any, *,
               slots: int = 3, clock: Clock = MONOTONIC, ordering: str = "auto") -> SharedArrayChannel:
        """Create a channel and its shared-memory segment; this handle owns (unlinks) it."""
        shape_t, dt, slots = _check_layout(name, shape, dtype, slots)
        get_futex()  # fails on a platform without futexes before anything is created
        check_ordering(ordering)  # and on a CPU whose ordering cannot be provided
        spec = ShmSpec(name, _segment_name(name), shape_t, dt, slots)
        size = _round_up(_TABLE_OFFSET + 16 * slots) + slots * _round_up(spec.nbytes)
        mm = _open_segment(spec.segment, size)
        hdr = np.frombuffer(mm, np.uint64, _HEADER_WORDS, 0)
        hdr[_H_VERSION] = _LAYOUT_VERSION
        hdr[_H_SLOTS] = slots
        hdr[_H_NBYTES] = spec.nbytes
        hdr[_H_CREATOR] = _process_tag()
        # Last: an attacher that sees the magic sees a complete header. (Attachers get the
        # spec through a pipe or a process start, kernel paths that order memory fully.)
        hdr[_H_MAGIC] = _MAGIC
        del hdr
        logger.debug("created shm channel %s (%s, %s x %d slots, segment %s)",
                     name, shape_t, dt, slots, spec.segment)
        return cls(spec, mm, creator=True, clock=clock, ordering=ordering)

    @classmethod
    def attach(cls, spec: ShmSpec, *, clock: Clock = MONOTONIC, ordering: str = "auto") -> SharedArrayChannel:
        """Attach to a channel created elsewhere (any process) from its ``spec``."""
        if not isinstance(spec, ShmSpec):
            raise ChannelError(f"attach needs a ShmSpec, got {type(spec).__name__}")
        _check_layout(spec.name, spec.shape, spec.dtype, spec.slots)
        get_futex()
        check_ordering(ordering)
        mm = _open_segment(spec.segment, None)
        hdr = np.frombuffer(mm, np.uint64, _HEADER_WORDS, 0)
        found = (int(hdr[_H_MAGIC]), int(hdr[_H_VERSION]), int(hdr[_H_SLOTS]), int(hdr[_H_NBYTES]))
        del hdr
        want = (_MAGIC, _LAYOUT_VERSION, spec.slots, spec.nbytes)
        if found != want:
            mm.close()
            raise ChannelError(
                f"segment {spec.segment!r} does not match spec of channel {spec.name!r}: "
                f"(magic, layout, slots, frame bytes) found {found[:1] and hex(found[0])}, "
                f"{found[1:]}, expected {hex(want[0])}, {want[1:]}")
        return cls(spec, mm, creator=False, clock=clock, ordering=ordering)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling a channel (e.g. as a Process argument) attaches in the receiving process.
        return (SharedArrayChannel.attach, (self._spec,))

    # -- properties -----------------------------------------------------------------------

    @property
    def spec(self) -> ShmSpec:
        return self._spec

    @property
    def shape(self) -> tuple[int, ...]:
        return self._spec.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._spec.dtype

    @property
    def slots(self) -> int:
        return self._spec.slots

    @property
    def ordering(self) -> str:
        """How this handle orders the seqlock's words: ``tso`` (x86 plain) or ``atomic``."""
        words = self._words
        return words.kind if words is not None else "closed"

    @property
    def is_creator(self) -> bool:
        """True in the process that created the segment (not in a forked child)."""
        return self._owner_pid == os.getpid()

    @property
    def seq(self) -> int:
        """Sequence number of the newest complete sample (0 before the first publish)."""
        words = self._words
        if words is None:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        return words.seq()

    @property
    def closed(self) -> bool:
        """True once this handle is closed, or the creator closed the channel for everyone."""
        hdr = self._hdr
        return self._closed or hdr is None or bool(hdr[_H_CLOSED])

    def writer_gone(self) -> str | None:
        """Why no new sample can come (the creator's or last publisher's process is dead), or None."""
        hdr = self._hdr
        if hdr is None:
            return None
        for role, index in (("creator", _H_CREATOR), ("last publisher", _H_WRITER)):
            tag = int(hdr[index])
            if _tag_dead(tag):
                return f"the channel's {role} (pid {tag & 0xFFFFFFFF}) is gone"
        return None

    # -- writing --------------------------------------------------------------------------

    def publish(self, value: np.ndarray) -> int:
        """Copy ``value`` into the next slot and wake every waiting reader; returns its seq."""
        stamp = self.clock.now_ns()
        if not isinstance(value, np.ndarray):
            raise ChannelError(f"channel {self.name!r} publishes numpy arrays, got {type(value).__name__}")
        if value.shape != self._spec.shape or value.dtype != self._spec.dtype:
            raise ChannelError(f"channel {self.name!r} expects shape {self._spec.shape} dtype "
                               f"{self._spec.dtype}, got shape {value.shape} dtype {value.dtype}")
        with self._publish_lock:
            hdr, words, stamps = self._hdr, self._words, self._stamps
            if self._closed or hdr is None or words is None or stamps is None:
                raise ChannelClosed(f"channel {self.name!r} is closed")
            if hdr[_H_CLOSED]:
                raise ChannelClosed(f"channel {self.name!r} was closed by its creator")
            hdr[_H_WRITER] = _process_tag()
            seq = words.seq() + 1
            slot = seq % self._spec.slots
            words.begin_write(slot, 2 * seq + 1)  # odd: being written
            np.copyto(self._frames[slot], value, casting="no")
            stamps[slot] = stamp
            words.end_write(slot, 2 * seq, seq)  # even: complete; then the header names it
            words.bump_wake()
            self._futex.wake_all(words.wake_addr)
            return seq

    # -- reading --------------------------------------------------------------------------

    def latest(self, copy: bool = True, out: np.ndarray | None = None) -> Sample[np.ndarray] | None:
        """The newest complete sample, or None before the first publish.

        ``copy=True`` (default) returns a private copy (into ``out`` when given, which must
        match shape and dtype). ``copy=False`` returns a read-only view of the slot, valid
        until the writer reuses that slot (``slots - 1`` publishes later at the earliest);
        :meth:`still_valid` tells whether it still holds that sample.
        """
        words, stamps = self._words, self._stamps  # local refs keep the mapping alive
        if words is None or stamps is None:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        if out is not None and (out.shape != self._spec.shape or out.dtype != self._spec.dtype):
            raise ChannelError(f"channel {self.name!r}: out must have shape {self._spec.shape} "
                               f"dtype {self._spec.dtype}, got {out.shape} {out.dtype}")
        slots = self._spec.slots
        for _ in range(_MAX_READ_RETRIES):
            seq = words.seq()
            if seq == 0:
                return None
            slot = seq % slots
            v1 = words.version(slot)
            if v1 != 2 * seq:
                continue  # the writer already moved on into this slot: re-read the newest
            if not copy:
                data = self._ro_frames[slot]
            elif out is None:
                data = self._frames[slot].copy()
            else:
                np.copyto(out, self._frames[slot])
                data = out
            stamp = int(stamps[slot])
            words.read_fence()
            if words.version(slot) == v1:
                return Sample(data, stamp, seq)
        raise ChannelError(f"channel {self.name!r}: reader lapped {_MAX_READ_RETRIES} times in a row; "
                           f"the writer outruns the copy, raise slots (now {slots})")

    def still_valid(self, sample: Sample[np.ndarray]) -> bool:
        """Whether the slot a ``copy=False`` sample points at still holds that sample.

        Call it after reading the view: True means what was read was that sample, whole.
        """
        words = self._words
        if words is None:
            return False
        words.read_fence()
        return words.version(sample.seq % self._spec.slots) == 2 * sample.seq

    def wait_newer(self, seq: int, timeout: float | None = None, *, copy: bool = True,
                   out: np.ndarray | None = None) -> Sample[np.ndarray] | None:
        """Block (in the kernel, no polling) until a sample newer than ``seq`` exists.

        Returns the newest sample (skipping any the reader missed), or None on timeout, when
        the channel is closed (by this handle, or by the creator for everyone), or when the
        creator's or the last publisher's process has died (checked every quarter second
        of waiting, so a dead writer never blocks a reader, even with ``timeout=None``).
        """
        start = time.monotonic_ns()
        deadline = None if timeout is None else start + max(0, int(timeout * 1e9))
        next_check = start + _LIVENESS_NS
        while True:
            hdr, words = self._hdr, self._words  # local refs keep the mapping alive
            if self._closed or hdr is None or words is None:
                return None
            expected = words.wake()  # read before the check: a publish after it changes it
            if words.seq() > seq:
                try:
                    sample = self.latest(copy=copy, out=out)
                except ChannelClosed:  # closed by another thread of this process meanwhile
                    return None
                if sample is not None and sample.seq > seq:
                    return sample
            if hdr[_H_CLOSED]:
                return None
            now = time.monotonic_ns()
            if now >= next_check:
                why = self.writer_gone()
                if why is not None:
                    if not self._gone_logged:
                        self._gone_logged = True
                        logger.warning("channel %s: %s; wait_newer returns None", self.name, why)
                    return None
                next_check = now + _LIVENESS_NS
            sleep = next_check - now
            if deadline is not None:
                if deadline <= now:
                    return None
                sleep = min(sleep, deadline - now)
            self._futex.wait(words.wake_addr, expected, sleep)

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Detach this handle and wake its waiters; idempotent.

        Closing the creator's handle also marks the channel closed for every process:
        their ``wait_newer`` returns None and ``publish`` raises :class:`ChannelClosed`.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            hdr, mm, words = self._hdr, self._mm, self._words
            if hdr is None or mm is None or words is None:
                return
            if self.is_creator:
                hdr[_H_CLOSED] = 1
            # Change the wake word so a waiter between its check and its sleep returns at once.
            words.bump_wake()
            self._futex.wake_all(words.wake_addr)
            with self._publish_lock:
                self._hdr = self._stamps = None
                self._words = None
                self._frames = []
                self._ro_frames = []
                self._mm = None
            del hdr, words
            try:
                mm.close()
            except BufferError:
                # A thread mid-read or a caller holding a copy=False view still uses the
                # mapping; it is unmapped when the last such view is garbage-collected.
                logger.debug("channel %s: mapping still referenced, released on last use", self.name)

    def unlink(self) -> None:
        """Remove the segment (creator only; idempotent). Attached handles keep their mapping."""
        if not self.is_creator:
            raise ChannelError(f"channel {self.name!r}: only the creating handle, in the creating "
                               "process, may unlink its segment")
        with self._close_lock:
            if self._unlinked:
                return
            self._unlinked = True
        _unlink_segment(self._spec.segment)

    def __enter__(self) -> SharedArrayChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.is_creator:
            self.unlink()

    def __repr__(self) -> str:
        role = "creator" if self.is_creator else "attached"
        state = "closed" if self._closed else "open"
        return (f"SharedArrayChannel({self.name!r}, shape={self._spec.shape}, dtype={self._spec.dtype}, "
                f"slots={self._spec.slots}, {role}, {state})")
