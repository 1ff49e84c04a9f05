"""Routing: which outputs get which rows of a batch, by each output's tag selection."""

from __future__ import annotations

__all__ = ["Route", "Router"]

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch


@dataclass(frozen=True, slots=True)
class Route:
    """An output's name and the mask of tags it takes (indexed by tag index)."""

    name: str
    mask: NDArray[np.bool_]


class Router:
    """Splits batches by route masks; a route taking every row gets the batch itself."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self._takes_all = tuple(bool(route.mask.all()) for route in routes)

    def route(self, batch: SampleBatch) -> list[tuple[str, SampleBatch]]:
        out: list[tuple[str, SampleBatch]] = []
        if len(batch) == 0:
            return out
        for route, takes_all in zip(self.routes, self._takes_all, strict=True):
            if takes_all:
                out.append((route.name, batch))
                continue
            keep = np.flatnonzero(route.mask[batch.tags])
            if len(keep) == len(batch):
                out.append((route.name, batch))
            elif len(keep):
                out.append((route.name, batch.select(keep)))
        return out
