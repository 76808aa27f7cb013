"""Plan caches: an exact LRU with TTL, and an optional semantic cache that respects negation.

The exact cache is keyed by the normalized instruction plus the digest of the context that
changes the answer (capabilities, robot place, held object, scene). It is an ``OrderedDict``
LRU: O(1) get, put and eviction.

The semantic cache embeds instructions with hashed character n-grams (a small, local,
deterministic embedding) and serves a cached plan for a *similar* instruction only when the
context digest, the polarity (negated or not) and the set of things mentioned are all the
same; "pick up the red cube" never answers "do not pick up the red cube", nor
"pick up the blue cube".

Usage::

    cache = PlanCache(maxsize=128, ttl_s=600)
    key = cache_key("Put the red cube in the blue bin!", context.digest)
    cache.put(key, plan); cache.get(key)
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

import numpy as np

from rtvla.errors import ConfigError
from rtvla.language.rules import is_negated
from rtvla.timing import MONOTONIC, Clock

__all__ = ["CacheStats", "PlanCache", "SemanticCache", "cache_key", "embed", "normalize_instruction"]

V = TypeVar("V")

_NORM_RE = re.compile(r"[^a-z0-9' ]+")
_SPACE_RE = re.compile(r"\s+")
_FILLER = frozenset({"please", "the", "a", "an", "now", "robot", "could", "you", "can", "would"})


@lru_cache(maxsize=4096)
def normalize_instruction(text: str) -> str:
    """Lower case, punctuation and filler words dropped, whitespace collapsed: the text part
    of the cache key. Negation words are kept, so an instruction and its negation differ."""
    words = _SPACE_RE.split(_NORM_RE.sub(" ", text.lower()).strip())
    return " ".join(w for w in words if w and w not in _FILLER)


def cache_key(instruction: str, context_digest: str) -> str:
    return f"{normalize_instruction(instruction)}\x1f{context_digest}"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class PlanCache(Generic[V]):
    """Bounded LRU with a time-to-live; thread-safe, O(1) per operation."""

    def __init__(self, maxsize: int = 128, ttl_s: float = 600.0, *, clock: Clock = MONOTONIC) -> None:
        if maxsize < 1:
            raise ConfigError(f"cache maxsize must be >= 1, got {maxsize}")
        if not ttl_s > 0:
            raise ConfigError(f"cache ttl_s must be > 0, got {ttl_s}")
        self.maxsize = int(maxsize)
        self.ttl_ns = int(ttl_s * 1e9)
        self.clock = clock
        self.stats = CacheStats()
        self._data: OrderedDict[str, tuple[int, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> V | None:
        now = self.clock.now_ns()
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            if now - item[0] > self.ttl_ns:
                del self._data[key]
                self.stats.expirations += 1
                self.stats.misses += 1
                return None
            self._data.move_to_end(key)
            self.stats.hits += 1
            return item[1]

    def put(self, key: str, value: V) -> None:
        now = self.clock.now_ns()
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
            self._data[key] = (now, value)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
                self.stats.evictions += 1

    def resize(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ConfigError(f"cache maxsize must be >= 1, got {maxsize}")
        with self._lock:
            self.maxsize = int(maxsize)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
                self.stats.evictions += 1

    def purge_expired(self) -> int:
        """Drop entries older than the TTL; returns how many were dropped."""
        now = self.clock.now_ns()
        dropped = 0
        with self._lock:
            # Entries are in recency order, not age order: scan them all (bounded by maxsize).
            for key in [k for k, (t, _) in self._data.items() if now - t > self.ttl_ns]:
                del self._data[key]
                dropped += 1
            self.stats.expirations += dropped
        return dropped

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def embed(text: str, dim: int = 512, n: int = 3) -> np.ndarray:
    """Unit vector of hashed character n-grams (with word boundaries) of the normalized text."""
    t = f" {normalize_instruction(text)} "
    vec = np.zeros(dim, dtype=np.float32)
    for i in range(max(1, len(t) - n + 1)):
        h = int.from_bytes(hashlib.blake2b(t[i:i + n].encode(), digest_size=4).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


@dataclass
class _SemEntry(Generic[V]):
    stamp_ns: int
    digest: str
    negated: bool
    mentions: frozenset[str]
    value: V


class SemanticCache(Generic[V]):
    """Nearest cached instruction by cosine similarity, guarded by context, polarity and
    mentions; bounded (oldest dropped first) and with the same TTL rule as :class:`PlanCache`."""

    def __init__(self, maxsize: int = 128, ttl_s: float = 600.0, threshold: float = 0.9, *,
                 dim: int = 512, clock: Clock = MONOTONIC) -> None:
        if not 0 < threshold <= 1:
            raise ConfigError(f"semantic threshold must be in (0, 1], got {threshold}")
        self.maxsize = int(maxsize)
        self.ttl_ns = int(ttl_s * 1e9)
        self.threshold = float(threshold)
        self.dim = dim
        self.clock = clock
        self.stats = CacheStats()
        self._vecs = np.zeros((self.maxsize, dim), dtype=np.float32)
        self._entries: list[_SemEntry[V] | None] = [None] * self.maxsize
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(e is not None for e in self._entries)

    def put(self, instruction: str, digest: str, mentions: frozenset[str], value: V) -> None:
        vec = embed(instruction, self.dim)
        with self._lock:
            i = self._next
            self._vecs[i] = vec
            self._entries[i] = _SemEntry(self.clock.now_ns(), digest, is_negated(instruction),
                                         mentions, value)
            self._next = (i + 1) % self.maxsize

    def get(self, instruction: str, digest: str, mentions: frozenset[str]) -> tuple[V, float] | None:
        """The cached value of the most similar admissible instruction and its similarity."""
        vec = embed(instruction, self.dim)
        negated = is_negated(instruction)
        now = self.clock.now_ns()
        with self._lock:
            sims = self._vecs @ vec
            for i in np.argsort(-sims):
                if sims[i] < self.threshold:
                    break
                e = self._entries[i]
                if e is None or now - e.stamp_ns > self.ttl_ns:
                    continue
                # The guard: never across contexts, polarity, or different things mentioned.
                if e.digest != digest or e.negated != negated or e.mentions != mentions:
                    continue
                self.stats.hits += 1
                return e.value, float(sims[i])
            self.stats.misses += 1
            return None

    def clear(self) -> None:
        with self._lock:
            self._vecs[:] = 0
            self._entries = [None] * self.maxsize
            self._next = 0
