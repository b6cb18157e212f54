"""Batches run side by side; a checkpoint waits until none runs and holds new ones back."""

from __future__ import annotations

__all__ = ["BatchGate"]

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class BatchGate:
    """Any number of :meth:`batch` holders at once, or one :meth:`exclusive` holder.

    A checkpoint must copy the tables when every change it holds is in the changelog
    and no batch is half folded: it enters :meth:`exclusive`, which waits for the
    running batches to end and keeps new ones waiting until it leaves.
    """

    def __init__(self) -> None:
        self._running = 0
        self._closed = False
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Hold the gate open for one batch."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._closed)
            self._running += 1
        try:
            yield
        finally:
            async with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the gate with no batch running."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._closed)
            self._closed = True
            try:
                await self._changed.wait_for(lambda: self._running == 0)
            except BaseException:
                self._closed = False
                self._changed.notify_all()
                raise
        try:
            yield
        finally:
            async with self._changed:
                self._closed = False
                self._changed.notify_all()
