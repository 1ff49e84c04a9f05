"""The gateway: builds every component from a validated config and runs them.

Start-up: compile the tag table, build drivers, processors, outputs and connectors through the
registry, open the outbox, restore processor state, then start one supervised task per device,
output and destination plus the pipeline. Shutdown (SIGINT/SIGTERM or :meth:`Gateway.stop`):
stop polling, process what is queued, save every processor's state, flush the outputs, let
in-flight deliveries finish, and close the outbox.
"""

from __future__ import annotations

__all__ = ["Gateway"]

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway import quality
from gateway.batch import SampleBatch, now_ns
from gateway.config.model import GatewayConfig
from gateway.errors import DeviceError, NotConnectedError, OutboxError, WriteRefusedError
from gateway.metrics import Metrics
from gateway.outbox.dispatcher import Dispatcher
from gateway.outbox.outbox import Outbox
from gateway.pipeline.change import ChangeDetector
from gateway.pipeline.last_values import LastValues
from gateway.pipeline.router import Route, Router
from gateway.pipeline.stage import OutputItem, Pipeline
from gateway.runtime.interfaces import (
    Connector,
    DocumentOutput,
    Driver,
    LinkedOutput,
    Output,
    Processor,
    WritableDriver,
)
from gateway.runtime.queues import DropOldestQueue
from gateway.runtime.registry import CONNECTORS, DRIVERS, OUTPUTS, PROCESSORS, BuildContext
from gateway.runtime.supervisor import Supervisor
from gateway.tags import TagTable

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT_S = 5.0
_HOUSEKEEPING_S = 60.0


class Gateway:
    """One running gateway."""

    def __init__(self, config: GatewayConfig, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.table = TagTable((d.name, d.tags) for d in config.devices)
        ctx = BuildContext(config, self.table, self.metrics, self.write_tag)
        self.drivers: list[Driver] = [DRIVERS[d.protocol](d, ctx) for d in config.devices]
        self.processors: list[Processor] = [PROCESSORS[p.type](p, ctx) for p in config.processors]
        self.outputs: list[Output] = [OUTPUTS[o.type](o, ctx) for o in config.outputs]
        self.connectors: list[Connector] = [
            CONNECTORS[d.profile](d, ctx) for d in config.destinations
        ]
        self.output_queues: dict[str, DropOldestQueue[OutputItem]] = {}
        for output, section in zip(self.outputs, config.outputs, strict=True):
            self.output_queues[output.name] = DropOldestQueue(
                section.queue_size, on_drop=self._drop_counter(f"output:{output.name}")
            )
        self.outbox: Outbox | None = None
        self.dispatchers: dict[str, Dispatcher] = {}
        if self.processors or self.connectors:
            self.outbox = Outbox(
                Path(config.gateway.data_dir) / "outbox.db",
                self.destinations_for,
                config.outbox,
                self.metrics,
            )
        routes = [
            Route(o.name, self.table.select(section.tags))
            for o, section in zip(self.outputs, config.outputs, strict=True)
        ]
        self.pipeline = Pipeline(
            change=ChangeDetector(self.table),
            router=Router(routes),
            processors=self.processors,
            outbox=self.outbox,
            output_queues=self.output_queues,
            document_outputs=[o.name for o in self.outputs if isinstance(o, DocumentOutput)],
            last_values=LastValues(self.table),
            metrics=self.metrics,
            queue_size=config.pipeline.queue_size,
        )
        self.supervisor = Supervisor(self.metrics)
        self._pipeline_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.started = False

    def _drop_counter(self, queue: str) -> Callable[[object], None]:
        counter = self.metrics.batches_dropped.labels(queue)
        return lambda _item: counter.inc()

    def destinations_for(self, kind: str) -> list[str]:
        """Names of the destinations that receive documents of `kind`."""
        return [c.name for c in self.connectors if c.accepts(kind)]

    def driver(self, name: str) -> Driver:
        for driver in self.drivers:
            if driver.name == name:
                return driver
        raise KeyError(name)

    async def write_tag(self, index: int, value: object) -> None:
        """Write a tag through the driver of its device (MQTT commands use this)."""
        info = self.table[index]
        driver = self.driver(info.device)
        if not isinstance(driver, WritableDriver):
            raise WriteRefusedError(info.id, f"the {info.device} driver cannot write")
        await driver.write(info, value)

    # --- lifecycle ---

    async def start(self) -> None:
        if self.outbox is not None:
            await self.outbox.open()
        await self.pipeline.restore()
        self._pipeline_task = asyncio.create_task(self.pipeline.run(), name="pipeline")
        for output in self.outputs:
            self.supervisor.start(f"output:{output.name}", self._output_runner(output))
            if isinstance(output, LinkedOutput):
                self.supervisor.start(f"output:{output.name}:link", output.maintain_link)
        for connector, section in zip(self.connectors, self.config.destinations, strict=True):
            if self.outbox is None:
                continue
            dispatcher = Dispatcher(
                self.outbox,
                connector,
                concurrency=section.concurrency,
                retry=section.retry,
                breaker=section.breaker,
                sync=section.sync,
                hold_on_dead=section.on_dead_letter == "hold_order",
                metrics=self.metrics,
            )
            self.dispatchers[connector.name] = dispatcher
            self.supervisor.start(f"destination:{connector.name}", dispatcher.run)
        for driver in self.drivers:
            self.supervisor.start(
                f"device:{driver.name}",
                self._device_runner(driver),
                on_failure=self._device_failed(driver),
            )
        if self.outbox is not None:
            self.supervisor.start("housekeeping", self._housekeeping)
        self.started = True
        # Everything built so far (config, tag table, drivers, plans) lives as long as the
        # gateway: move it out of the cyclic garbage collector's reach, so that collections
        # triggered by the steady stream of short-lived objects do not traverse it again and
        # again (less CPU and less poll jitter).
        gc.freeze()
        log.info(
            "gateway %s started: %d devices, %d tags, %d processors, %d outputs, %d destinations",
            self.config.gateway.id,
            len(self.drivers),
            len(self.table),
            len(self.processors),
            len(self.outputs),
            len(self.connectors),
        )

    async def stop(self) -> None:
        """Stop polling, process and save what is pending, flush outputs, close the outbox."""
        if not self.started:
            return
        self.started = False
        await self.supervisor.stop(*[f"device:{d.name}" for d in self.drivers])
        if self._pipeline_task is not None:
            self._pipeline_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pipeline_task
        await self.pipeline.drain()
        await self._save_states()
        await self.supervisor.stop()  # outputs drain their queues when cancelled
        for connector in self.connectors:
            await connector.close()
        if self.outbox is not None:
            await self.outbox.close()
        self._stopped.set()
        log.info("gateway %s stopped", self.config.gateway.id)

    async def run_until_signal(self) -> None:
        """Start, run until SIGINT or SIGTERM, then stop cleanly."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
            log.info("signal received: stopping")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()

    async def _save_states(self) -> None:
        if self.outbox is None or not self.processors:
            return
        states = {p.name: p.snapshot() for p in self.processors}
        try:
            await self.outbox.store([], states)
        except OutboxError as exc:
            log.error("processor states not saved at shutdown: %s", exc)
            return
        for processor in self.processors:
            processor.commit()

    # --- supervised components ---

    def _device_runner(self, driver: Driver) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await driver.connect()
                await driver.run(self.pipeline.sink)
            finally:
                await driver.close()

        return run

    def _device_failed(self, driver: Driver) -> Callable[[BaseException], None]:
        def mark_bad(error: BaseException) -> None:
            if isinstance(error, NotConnectedError):
                reason = "disconnected"
            elif isinstance(error, DeviceError):
                reason = "device error"
            else:
                reason = "driver failure"
            tags = getattr(driver, "tag_indices", None)
            if tags is not None and len(tags):
                self.pipeline.sink(
                    SampleBatch.bad(driver.name, tags, quality.bad(reason), now_ns())
                )

        return mark_bad

    def _output_runner(self, output: Output) -> Callable[[], Awaitable[None]]:
        queue = self.output_queues[output.name]
        if isinstance(output, LinkedOutput):
            return self._linked_output_runner(output, queue)

        async def run() -> None:
            await output.connect()
            try:
                while True:
                    item = await queue.get()
                    try:
                        await _deliver(output, item)
                    except NotConnectedError:
                        queue.put_front(item)
                        raise
            except asyncio.CancelledError:
                await self._flush_output(output, queue)
                raise
            finally:
                await output.close()

        return run

    def _linked_output_runner(
        self, output: Output, queue: DropOldestQueue[OutputItem]
    ) -> Callable[[], Awaitable[None]]:
        """A store-and-forward output: its writes never wait for the connection (its link is
        supervised separately), so the queue keeps draining during outages; it is closed
        only at shutdown."""

        async def run() -> None:
            await output.connect()
            try:
                while True:
                    await _deliver(output, await queue.get())
            except asyncio.CancelledError:
                await self._flush_output(output, queue)
                await output.close()
                raise

        return run

    async def _flush_output(self, output: Output, queue: DropOldestQueue[OutputItem]) -> None:
        async def flush() -> None:
            while (item := queue.get_nowait()) is not None:
                await _deliver(output, item)

        try:
            await asyncio.wait_for(flush(), _FLUSH_TIMEOUT_S)
        except (TimeoutError, NotConnectedError) as exc:
            log.warning(
                "%s: %d queued items not flushed at shutdown: %s", output.name, len(queue), exc
            )

    async def _housekeeping(self) -> None:
        assert self.outbox is not None
        while True:
            await self.outbox.refresh()  # counts changed by `edge-gateway outbox`, gauges
            await self.outbox.purge()
            await asyncio.sleep(_HOUSEKEEPING_S)


async def _deliver(output: Output, item: OutputItem) -> None:
    if isinstance(item, SampleBatch):
        await output.write(item)
    elif isinstance(output, DocumentOutput):
        await output.publish_documents(item)
