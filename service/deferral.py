"""Deferring work to the end of the current event-loop turn, to batch it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def at_end_of_turn(callback: Callable[[], None]) -> bool:
    """Run ``callback`` after the callbacks already queued in this loop turn, before the
    loop waits for I/O again; False (nothing scheduled) when this thread runs no loop."""
    try:
        asyncio.get_running_loop().call_soon(callback)
    except RuntimeError:
        return False
    return True
