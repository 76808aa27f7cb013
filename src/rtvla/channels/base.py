"""The latest-value channel contract shared by every transport.

A channel holds one value: the newest. ``publish`` replaces it and returns its sequence
number; ``latest`` returns the newest :class:`Sample` (or None before the first publish);
``wait_newer(seq, timeout)`` blocks until a sample newer than ``seq`` exists. A reader that
falls behind gets the newest sample, never a backlog.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

__all__ = ["Channel", "Sample"]

T = TypeVar("T")


class Sample(NamedTuple, Generic[T]):
    """One published value with its publish stamp (monotonic ns) and sequence number (1..)."""

    value: T
    stamp_ns: int
    seq: int

    def age_s(self, now_ns: int) -> float:
        return (now_ns - self.stamp_ns) / 1e9


@runtime_checkable
class Channel(Protocol):
    """What every latest-value channel offers, whatever the transport."""

    name: str

    def publish(self, value: Any) -> int:
        """Replace the value; returns the new sequence number."""
        ...

    def latest(self) -> Sample[Any] | None:
        """The newest sample, or None if nothing was published yet."""
        ...

    def wait_newer(self, seq: int, timeout: float | None = None) -> Sample[Any] | None:
        """Block until a sample with ``seq`` greater than the given one exists; None on timeout."""
        ...

    def close(self) -> None:
        """Release the transport; wakes any waiter."""
        ...
