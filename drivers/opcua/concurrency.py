"""Running a driver's concurrent loops so that the first failure is the one raised."""

from __future__ import annotations

__all__ = ["run_until_first_failure"]

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


async def run_until_first_failure(*loops: Coroutine[Any, Any, None]) -> None:
    """Run `loops` together until one raises; cancel the others and raise that exception
    itself (not an ExceptionGroup, so the supervisor sees a NotConnectedError as one)."""
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    if not tasks:
        return
    try:
        pending: set[asyncio.Future[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
