"""Helpers for the output tests: a subscriber, a running MQTT output, batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import orjson

from gateway.batch import SampleBatch
from gateway.errors import NotConnectedError
from gateway.outputs.mqtt import MqttOutput
from gateway.outputs.mqtt_client import AsyncMqttClient, MqttSettings, TlsSettings
from gateway.tags import TagTable


class Subscriber:
    """Collects (topic, payload) of every message on its subscriptions."""

    def __init__(
        self,
        port: int,
        *,
        client_id: str = "test-subscriber",
        version: str = "5",
        username: str | None = None,
        password: str | None = None,
        tls: TlsSettings | None = None,
        clean_start: bool = True,
        session_expiry: int = 0,
        decode: Callable[[bytes], Any] = orjson.loads,
    ) -> None:
        self.raw: list[tuple[str, bytes]] = []
        self.decode = decode
        self.client = AsyncMqttClient(
            MqttSettings(
                "127.0.0.1",
                port,
                client_id,
                mqtt_version=version,
                username=username,
                password=password,
                tls=tls,
                clean_start=clean_start,
                session_expiry=session_expiry,
            ),
            "sub",
            self._on_message,
        )

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.raw.append((topic, payload))

    @property
    def messages(self) -> list[tuple[str, Any]]:
        return [(topic, self.decode(payload)) for topic, payload in self.raw]

    def on(self, topic: str) -> list[Any]:
        return [self.decode(payload) for t, payload in self.raw if t == topic]

    async def start(self, *topics: str, qos: int = 1) -> Subscriber:
        await self.client.connect()
        for topic in topics:
            self.client.subscribe(topic, qos)
        await asyncio.sleep(0.2)  # let the SUBACKs come back
        return self

    async def wait_for(
        self, count: int, timeout: float = 10.0, where: Callable[[str], bool] | None = None
    ) -> None:
        async with asyncio.timeout(timeout):
            while sum(1 for t, _ in self.raw if where is None or where(t)) < count:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.client.close()


async def keep_linked(output: MqttOutput) -> None:
    """What the gateway's supervisor does for the link: run it again after a short pause."""
    while True:
        with contextlib.suppress(NotConnectedError):
            await output.maintain_link()
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running(output: MqttOutput, *, wait_ready: bool = True) -> AsyncIterator[MqttOutput]:
    """Open the output, keep its link up, close it at the end (as at a gateway shutdown)."""
    await output.connect()
    task = asyncio.create_task(keep_linked(output))
    try:
        if wait_ready:
            async with asyncio.timeout(10):
                while not output.link.ready:
                    await asyncio.sleep(0.01)
        yield output
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await output.close()


def values_batch(
    table: TagTable, tag_id: str, values: list[float], *, stamp: int = 1_700_000_000_000_000_000
) -> SampleBatch:
    """One sample per value of one tag (timestamps 1 ms apart)."""
    n = len(values)
    return SampleBatch(
        "test",
        np.full(n, table.index(tag_id), np.int32),
        np.array(values, np.float64),
        np.zeros(n, np.uint16),
        stamp + np.arange(n, dtype=np.int64) * 1_000_000,
        unique_tags=False,
    )
