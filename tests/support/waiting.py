"""Waiting for a condition in real-socket tests: poll it under a deadline, never sleep blindly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Return once ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def wait_for_async(predicate: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Like :func:`wait_for`, for a predicate that must await (an HTTP call, say)."""
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.02)
