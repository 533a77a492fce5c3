"""Loop helpers: control loops wait on events (stop, a kick), never a bare sleep."""

from __future__ import annotations

import asyncio


async def wait_any(timeout_s: float | None, *events: asyncio.Event) -> None:
    """Return when any event is set or after timeout_s (None: no timeout), whichever comes first."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
