"""A PolicyServer on a thread of its own with its own event loop (tests, benchmarks, notebooks).

    with ServerThread(model, ServerConfig(port=0)) as server:
        client = PolicyClient(server.url)
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from serving.server import PolicyServer, ServerConfig


class ServerThread:
    def __init__(self, model: Any, config: ServerConfig) -> None:
        self.server = PolicyServer(model, config)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="policy-server", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.serve(self._started, self._stop)

        try:
            asyncio.run(main())
        except BaseException as err:  # e.g. the port is taken: re-raised in start()
            self._error = err
            self._started.set()

    def start(self, wait_ready_s: float = 60.0) -> ServerThread:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        self.server.batcher.ready.wait(wait_ready_s)
        return self

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://{self.server.config.host}:{self.port}"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
