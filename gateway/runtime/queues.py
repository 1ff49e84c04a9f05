"""A bounded asyncio queue whose overflow policy is: drop the oldest item, and count it.

Tag values are superseded by newer ones, so under overload the newest data wins and the loss is
visible in a metric rather than as growing memory and latency.
"""

from __future__ import annotations

__all__ = ["DropOldestQueue"]

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Single-consumer bounded queue; :meth:`put` never blocks."""

    def __init__(self, maxsize: int, on_drop: Callable[[T], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._on_drop = on_drop
        self._ready = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) >= self._maxsize:
            oldest = self._items.popleft()
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(oldest)
        self._items.append(item)
        self._ready.set()

    def put_front(self, item: T) -> None:
        """Put an item back at the head (a write that failed and will be retried first)."""
        self._items.appendleft(item)
        while len(self._items) > self._maxsize:
            dropped = self._items.pop()
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(dropped)
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    def drain(self) -> list[T]:
        """Take everything queued now."""
        items = list(self._items)
        self._items.clear()
        return items
