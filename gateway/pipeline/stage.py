"""The pipeline task: every batch goes through change detection and routing to the outputs,
and through the processors, whose documents are committed to the outbox before the processors
move on.
"""

from __future__ import annotations

__all__ = ["OutputItem", "Pipeline"]

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.batch import SampleBatch
from gateway.documents import Document
from gateway.errors import OutboxError
from gateway.metrics import Metrics
from gateway.outbox.outbox import Outbox
from gateway.pipeline.change import ChangeDetector
from gateway.pipeline.last_values import LastValues
from gateway.pipeline.router import Router
from gateway.runtime.interfaces import Processor
from gateway.runtime.queues import DropOldestQueue

log = logging.getLogger(__name__)

OutputItem = SampleBatch | Sequence[Document]


class Pipeline:
    """Owns the input queue; one task calls :meth:`run`."""

    def __init__(
        self,
        *,
        change: ChangeDetector,
        router: Router,
        processors: Sequence[Processor],
        outbox: Outbox | None,
        output_queues: Mapping[str, DropOldestQueue[OutputItem]],
        document_outputs: Sequence[str],
        last_values: LastValues,
        metrics: Metrics,
        queue_size: int,
    ) -> None:
        self._change = change
        self._router = router
        self.processors = tuple(processors)
        self._outbox = outbox
        self._queues = output_queues
        self._document_outputs = tuple(document_outputs)
        self.last_values = last_values
        self._metrics = metrics
        dropped = metrics.batches_dropped.labels("pipeline")
        self.queue: DropOldestQueue[SampleBatch] = DropOldestQueue(
            queue_size, on_drop=lambda _: dropped.inc()
        )
        self.batches = 0

    def sink(self, batch: SampleBatch) -> None:
        """Where drivers put their batches; never blocks (drops the oldest when full)."""
        self.queue.put(batch)

    async def run(self) -> None:
        while True:
            await self.process(await self.queue.get())

    async def drain(self) -> None:
        """Process everything queued now (shutdown)."""
        while (batch := self.queue.get_nowait()) is not None:
            await self.process(batch)

    async def process(self, batch: SampleBatch) -> None:
        self.batches += 1
        self.last_values.update(batch)
        changed = self._change.ingest(batch)
        for name, routed in self._router.route(changed):
            self._queues[name].put(routed)
        await self._run_processors(batch)

    async def _run_processors(self, batch: SampleBatch) -> None:
        documents: list[Document] = []
        states: dict[str, Mapping[str, Any]] = {}
        to_save: list[Processor] = []
        for processor in self.processors:
            try:
                produced = processor.ingest(batch)
            except Exception:  # a processor bug must not stop the data flow
                log.exception(
                    "processor %s failed on a batch from %s", processor.name, batch.source
                )
                processor.rollback()
                continue
            if produced or processor.needs_checkpoint:
                documents += produced
                states[processor.name] = processor.snapshot()
                to_save.append(processor)
            else:
                processor.commit()
        if not to_save:
            return
        if self._outbox is None:
            for processor in to_save:
                processor.commit()
        else:
            try:
                await self._outbox.store(documents, states)
            except OutboxError as exc:
                log.error("documents not stored, processors keep their state: %s", exc)
                for processor in to_save:
                    processor.rollback()
                return
            for processor in to_save:
                processor.commit()
        if documents:
            for name in self._document_outputs:
                self._queues[name].put(documents)

    async def restore(self) -> None:
        """Give every processor its saved state (once, before the first batch)."""
        if self._outbox is None:
            return
        saved = await self._outbox.load_states()
        for processor in self.processors:
            state = saved.get(processor.name)
            if state is not None:
                processor.restore(state)
                log.info("processor %s resumed from its saved state", processor.name)
