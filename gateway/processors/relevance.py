"""Which batches can concern a processor, decided cheaply.

The pipeline hands every batch to every processor. A processor's tags belong to a few devices,
and a device's batches carry only that device's tags, so a batch whose source is another known
device is skipped without looking at its rows; any other source (a test, a tool) is checked
row by row.
"""

from __future__ import annotations

__all__ = ["Relevance"]

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.tags import TagTable


class Relevance:
    """The tags a processor reads, and the devices it can skip."""

    def __init__(self, table: TagTable, mask: NDArray[np.bool_]) -> None:
        mine = {table[int(i)].device for i in np.flatnonzero(mask)}
        self.mask = mask
        self._others = frozenset(info.device for info in table.infos) - mine
        self._mine = frozenset(mine)

    def concerns(self, batch: SampleBatch) -> bool:
        """Whether the batch may have a sample of one of the processor's tags.

        True for every batch of one of its devices (the processor then finds its rows).
        """
        if batch.source in self._others:
            return False
        if batch.source in self._mine:
            return len(batch) > 0
        return bool(self.mask[batch.tags].any())
