"""The synchronisation under :class:`~rtvla.channels.shm.SharedArrayChannel`: futex and ordering.

Two things make a seqlock in shared memory work between processes, and both are CPU and
kernel facts rather than Python ones, so they live here:

- **Waking.** :class:`Futex` calls ``FUTEX_WAIT``/``FUTEX_WAKE`` on a 32-bit word in the
  segment through libc's ``syscall``. Nothing is registered per waiter, and a waiter whose
  peer died is never stuck on anything the peer holds: the kernel checks the word's value.
- **Ordering.** A seqlock is correct only if the writer's "slot is being written" mark is
  visible before the frame bytes change, the frame bytes before the "slot is complete"
  mark, and a reader's frame loads happen between its two reads of the mark. The control
  words are therefore read and written through a :class:`SeqlockWords` object:

  * :class:`TsoWords` (x86-64, i386): plain numpy loads and stores. x86 keeps stores in
    program order and loads in program order (TSO), which is exactly what C11 acquire
    loads, release stores and acquire/release fences compile to on x86 (plain ``mov``, no
    fence instruction); and no compiler can move the frame copy across them, because each
    is a separate opaque C call (numpy, ctypes) made from the interpreter.
  * :class:`AtomicWords` (every other CPU: aarch64, armv7, ppc64le, riscv64, s390x):
    the same protocol with real atomics from GCC's ``libatomic`` (``__atomic_load_8``,
    ``__atomic_store_8``, ``__atomic_fetch_add_4``, ``atomic_thread_fence``), which emit
    ``ldar``/``stlr``/``dmb ish`` on ARM. It follows Boehm's seqlock ("Can seqlocks get
    along with programming language memory models?", MSPC 2012): the writer stores the odd
    mark relaxed, then a release fence (the frame stores cannot become visible before the
    mark), copies, then stores the even mark with release (the frame is visible before the
    mark); the reader loads the mark with acquire (frame loads cannot move before it),
    copies, then an acquire fence (frame loads cannot move after it) and loads the mark
    again. 64-bit atomics must be lock-free: libatomic's fallback for wider-than-native
    words is a lock table private to each process, which would order nothing between
    processes, so :func:`make_words` refuses it with a clear error.

``make_words(ordering=...)`` picks the variant for this CPU (``"auto"``), or the one asked
for: ``"atomic"`` runs the fenced protocol anywhere (tests do, on x86), ``"tso"`` is
refused on CPUs that do not guarantee TSO.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import platform
import sys
import threading
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from rtvla.errors import ChannelError

__all__ = ["ORDERINGS", "AtomicWords", "Futex", "SeqlockWords", "TsoWords", "check_ordering", "get_futex",
           "make_words", "tso_cpu"]

logger = logging.getLogger(__name__)

ORDERINGS = ("auto", "tso", "atomic")
_TSO_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})

# --- futex --------------------------------------------------------------------------------

_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF
_SYS_FUTEX = {
    "x86_64": 202,
    "amd64": 202,
    "aarch64": 98,
    "arm64": 98,
    "riscv64": 98,
    "i386": 240,
    "i686": 240,
    "armv7l": 240,
    "armv6l": 240,
    "ppc64le": 221,
    "ppc64": 221,
    "s390x": 238,
}


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class Futex:
    """``FUTEX_WAIT``/``FUTEX_WAKE`` on a word in shared memory, through libc's ``syscall``."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise ChannelError(f"SharedArrayChannel needs Linux futexes; platform is {sys.platform!r}")
        machine = platform.machine().lower()
        nr = _SYS_FUTEX.get(machine)
        if nr is None:
            raise ChannelError(f"SharedArrayChannel: no futex syscall number known for CPU {machine!r}")
        libc = ctypes.CDLL(None, use_errno=True)  # CDLL: the GIL is released while we sleep
        fn = libc.syscall
        fn.restype = ctypes.c_long
        fn.argtypes = (ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
        self._nr = nr
        self._fn = fn

    def wake_all(self, addr: int) -> None:
        self._fn(self._nr, addr, _FUTEX_WAKE, _WAKE_ALL, None, None, 0)

    def wait(self, addr: int, expected: int, timeout_ns: int | None) -> None:
        """Sleep while the word at ``addr`` equals ``expected``; returns on wake, change,
        signal or timeout (the caller rechecks its condition in every case)."""
        if timeout_ns is None:
            ts = None
        else:
            spec = _Timespec(timeout_ns // 1_000_000_000, timeout_ns % 1_000_000_000)
            ts = ctypes.byref(spec)
        rc = self._fn(self._nr, addr, _FUTEX_WAIT, expected, ts, None, 0)
        if rc == -1:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT):
                raise ChannelError(f"futex wait failed: {os.strerror(err)} (errno {err})")


_futex: Futex | None = None
_init_lock = threading.Lock()


def get_futex() -> Futex:
    """The process's futex caller (built once; raises ChannelError off Linux)."""
    global _futex
    with _init_lock:
        if _futex is None:
            _futex = Futex()
        return _futex


# --- ordering ------------------------------------------------------------------------------


def tso_cpu(machine: str | None = None) -> bool:
    """Whether this CPU (or ``machine``, as ``platform.machine()`` names it) is x86 (TSO)."""
    return (machine if machine is not None else platform.machine()).lower() in _TSO_MACHINES


class SeqlockWords(ABC):
    """Reads and writes of the seqlock's control words with the ordering the protocol needs.

    ``seq`` is the header's newest complete sequence number, ``version(slot)`` a slot's mark
    (odd: being written, even: complete), ``wake`` the futex word. Subclasses decide how.
    """

    kind = ""

    def __init__(self, hdr: np.ndarray, seq_index: int, versions: np.ndarray,
                 wake: ctypes.c_uint32) -> None:
        # Holding these arrays keeps the mapping alive while any method can still run.
        self._hdr = hdr
        self._seq_index = seq_index
        self._versions = versions
        self._wake = wake
        self.wake_addr = ctypes.addressof(wake)

    @abstractmethod
    def seq(self) -> int:
        """The newest complete sequence number (acquire)."""

    @abstractmethod
    def version(self, slot: int) -> int:
        """The slot's mark (acquire): frame loads after it cannot move before it."""

    @abstractmethod
    def begin_write(self, slot: int, odd: int) -> None:
        """Mark ``slot`` as being written; nothing written after this is visible before it."""

    @abstractmethod
    def end_write(self, slot: int, even: int, seq: int) -> None:
        """Mark ``slot`` complete, then publish ``seq``; everything before is visible first."""

    @abstractmethod
    def read_fence(self) -> None:
        """Between a reader's frame loads and its second ``version`` load."""

    @abstractmethod
    def wake(self) -> int:
        """The futex word's value (acquire), read before a waiter checks ``seq``."""

    @abstractmethod
    def bump_wake(self) -> None:
        """Change the futex word after ``end_write`` (a waiter that saw the old word wakes)."""


class TsoWords(SeqlockWords):
    """x86: plain loads and stores already have acquire/release order (see the module doc)."""

    kind = "tso"

    def seq(self) -> int:
        return int(self._hdr[self._seq_index])

    def version(self, slot: int) -> int:
        return int(self._versions[slot])

    def begin_write(self, slot: int, odd: int) -> None:
        self._versions[slot] = odd

    def end_write(self, slot: int, even: int, seq: int) -> None:
        self._versions[slot] = even
        self._hdr[self._seq_index] = seq

    def read_fence(self) -> None:
        return None  # loads are not reordered with loads on x86; the C calls stop the compiler

    def wake(self) -> int:
        return int(self._wake.value)

    def bump_wake(self) -> None:
        self._wake.value = (self._wake.value + 1) & 0xFFFFFFFF


# C11 memory orders as GCC's libatomic takes them (__ATOMIC_RELAXED ... __ATOMIC_SEQ_CST).
_RELAXED, _ACQUIRE, _RELEASE, _SEQ_CST = 0, 2, 3, 5


class _LibAtomic:
    """The handful of libatomic entry points the fenced protocol calls."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("atomic") or "libatomic.so.1"
        try:
            # PyDLL: these calls take nanoseconds; releasing and retaking the GIL would not.
            lib = ctypes.PyDLL(path)
            # getattr: a "__name" written inside a class body would be name-mangled.
            self.load8 = getattr(lib, "__atomic_load_8")
            self.store8 = getattr(lib, "__atomic_store_8")
            self.load4 = getattr(lib, "__atomic_load_4")
            self.fetch_add4 = getattr(lib, "__atomic_fetch_add_4")
            self.fence = lib.atomic_thread_fence
            self.is_lock_free = getattr(lib, "__atomic_is_lock_free")
        except (OSError, AttributeError) as exc:
            raise ChannelError(
                f"SharedArrayChannel on a {platform.machine()} CPU orders its shared-memory words "
                f"(ordering 'atomic') with GCC's libatomic (libatomic.so.1, with atomic_thread_fence: GCC >= 7), "
                f"which could not be loaded ({exc}); install it (Debian/Ubuntu: "
                "apt install libatomic1)") from exc
        self.load8.restype, self.load8.argtypes = ctypes.c_uint64, (ctypes.c_void_p, ctypes.c_int)
        self.store8.restype = None
        self.store8.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int)
        self.load4.restype, self.load4.argtypes = ctypes.c_uint32, (ctypes.c_void_p, ctypes.c_int)
        self.fetch_add4.restype = ctypes.c_uint32
        self.fetch_add4.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int)
        self.fence.restype, self.fence.argtypes = None, (ctypes.c_int,)
        self.is_lock_free.restype = ctypes.c_bool
        self.is_lock_free.argtypes = (ctypes.c_size_t, ctypes.c_void_p)


_libatomic: _LibAtomic | None = None


def _get_libatomic() -> _LibAtomic:
    global _libatomic
    with _init_lock:
        if _libatomic is None:
            _libatomic = _LibAtomic()
        return _libatomic


class AtomicWords(SeqlockWords):
    """Any CPU: libatomic acquire/release atomics and fences (Boehm's seqlock, module doc)."""

    kind = "atomic"

    def __init__(self, hdr: np.ndarray, seq_index: int, versions: np.ndarray,
                 wake: ctypes.c_uint32) -> None:
        super().__init__(hdr, seq_index, versions, wake)
        lib = _get_libatomic()
        self._seq_addr = hdr.ctypes.data + seq_index * hdr.itemsize
        self._ver_addrs = [versions.ctypes.data + i * versions.strides[0] for i in range(versions.size)]
        for what, size, addr in (("64-bit sequence word", 8, self._seq_addr),
                                 ("32-bit futex word", 4, self.wake_addr)):
            if not lib.is_lock_free(size, addr):
                raise ChannelError(
                    f"SharedArrayChannel: libatomic has no lock-free {what} on this "
                    f"{platform.machine()} CPU; its fallback lock is private to one process and "
                    "would not order memory between processes")
        self._load8, self._store8, self._fence = lib.load8, lib.store8, lib.fence
        self._load4, self._fetch_add4 = lib.load4, lib.fetch_add4

    def seq(self) -> int:
        return int(self._load8(self._seq_addr, _ACQUIRE))

    def version(self, slot: int) -> int:
        return int(self._load8(self._ver_addrs[slot], _ACQUIRE))

    def begin_write(self, slot: int, odd: int) -> None:
        self._store8(self._ver_addrs[slot], odd, _RELAXED)
        self._fence(_RELEASE)  # the odd mark is visible before any frame store after it

    def end_write(self, slot: int, even: int, seq: int) -> None:
        self._store8(self._ver_addrs[slot], even, _RELEASE)  # frame and stamp visible first
        self._store8(self._seq_addr, seq, _RELEASE)  # the slot is complete before it is named

    def read_fence(self) -> None:
        self._fence(_ACQUIRE)  # the frame loads before it complete before the mark is reread

    def wake(self) -> int:
        # Acquire: the reader's check of ``seq`` that follows cannot be satisfied earlier.
        return int(self._load4(self.wake_addr, _ACQUIRE))

    def bump_wake(self) -> None:
        self._fetch_add4(self.wake_addr, 1, _SEQ_CST)


def check_ordering(ordering: Any) -> str:
    """Validate an ``ordering`` argument (and load libatomic if it needs it) before anything
    is created; returns the variant it resolves to on this CPU (``tso`` or ``atomic``)."""
    if ordering not in ORDERINGS:
        raise ChannelError(f"shared-memory ordering must be one of {ORDERINGS}, got {ordering!r}")
    tso = tso_cpu()
    if ordering == "tso" and not tso:
        raise ChannelError(f"shared-memory ordering 'tso' relies on x86 store ordering; this CPU "
                           f"is {platform.machine()!r}: use ordering='auto' or 'atomic'")
    if ordering == "tso" or (ordering == "auto" and tso):
        return "tso"
    _get_libatomic()
    return "atomic"


def make_words(ordering: str, hdr: np.ndarray, seq_index: int, versions: np.ndarray,
               wake: ctypes.c_uint32) -> SeqlockWords:
    """The control-word access for ``ordering`` (``auto``, ``tso`` or ``atomic``) on this CPU."""
    if check_ordering(ordering) == "tso":
        return TsoWords(hdr, seq_index, versions, wake)
    return AtomicWords(hdr, seq_index, versions, wake)
