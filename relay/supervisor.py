"""The relay's tasks and its stop: drainers (joined; one crashing stops the rest), side tasks
(cancelled at the end), health writes (given a few seconds to land), and SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Iterator
from typing import Any

from relay.backoff import sleep_unless_stopped

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Supervisor:
    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.stop = stop or asyncio.Event()
        self._side: set[asyncio.Task] = set()  # cancelled at the end
        self._writes: set[asyncio.Task] = set()  # awaited (briefly) at the end
        self._drainers: dict[str, list[asyncio.Task]] = {}

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT set the stop event while the block runs (main thread only)."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop.set)
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A side task (a loop, a one-off chore): cancelled when the relay stops."""
        self._track(coro, name, self._side)

    def spawn_write(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A write that should land even when the relay stops (the breaker's last word)."""
        self._track(coro, name, self._writes)

    def _track(self, coro, name: str, tasks: set[asyncio.Task]) -> None:
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def has_drainers(self, key: str) -> bool:
        return key in self._drainers

    def start_drainers(self, key: str, coros: list[Coroutine[Any, Any, Any]]) -> None:
        self._drainers[key] = [
            asyncio.create_task(coro, name=f"drainer:{key}:{i}") for i, coro in enumerate(coros)
        ]

    async def join_drainers(self) -> None:
        """Waits for every drainer (they end on stop, or in --once when nothing is due); a
        drainer that crashed stops the others and its exception is raised. Drainers started
        meanwhile are joined too."""
        while True:
            pending = {t for tasks in self._drainers.values() for t in tasks if not t.done()}
            if not pending:
                break
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            crashed = [t for t in done if not t.cancelled() and t.exception()]
            if crashed:
                self.stop.set()
                if pending - done:  # (every drainer may have crashed at once)
                    await asyncio.wait(pending - done)
                raise crashed[0].exception()  # type: ignore[misc]  # not None: filtered above

    async def shutdown(self, write_grace_s: float = 5.0) -> None:
        """Stops: side tasks are cancelled, pending writes get write_grace_s to finish."""
        self.stop.set()
        for task in list(self._side):
            task.cancel()
        await asyncio.gather(*self._side, return_exceptions=True)
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=write_grace_s)
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def sleep(self, seconds: float) -> None:
        """Sleeps, or less when the relay stops."""
        await sleep_unless_stopped(self.stop, seconds)
