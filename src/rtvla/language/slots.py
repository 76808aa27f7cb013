"""An asyncio concurrency limit whose waiters are served by priority (lower first), FIFO
within a priority. A cancelled waiter leaves the queue; a slot handed to a waiter that was
cancelled at the same moment is passed on, never lost."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from rtvla.errors import ConfigError

__all__ = ["PrioritySlots"]


class PrioritySlots:
    """``await slots.acquire(priority)`` ... ``slots.release()``; at most ``limit`` holders."""

    def __init__(self, limit: int = 3) -> None:
        if limit < 1:
            raise ConfigError(f"llm.max_concurrent must be >= 1, got {limit}")
        self.limit = int(limit)
        self.in_flight = 0
        self.max_in_flight = 0
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._waiting = 0

    @property
    def queue_length(self) -> int:
        """Waiters not yet holding a slot (cancelled ones excluded)."""
        return self._waiting

    async def acquire(self, priority: int = 1) -> None:
        if self.in_flight < self.limit and self._waiting == 0:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (int(priority), next(self._seq), fut))
        self._waiting += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            else:
                self._waiting -= 1
            raise

    def _take(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def release(self) -> None:
        while self._heap:
            _, _, fut = heapq.heappop(self._heap)
            if fut.done():  # cancelled while waiting; already uncounted
                continue
            self._waiting -= 1
            fut.set_result(None)  # the slot moves to this waiter; in_flight is unchanged
            return
        if self.in_flight <= 0:
            raise RuntimeError("PrioritySlots.release() without a matching acquire()")
        self.in_flight -= 1
