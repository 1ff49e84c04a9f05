"""The compiled tag table: every configured tag gets a global index, and per-tag settings become
numpy arrays indexed by it, so that batch processing never looks a tag up in a dict.

Array tags (``count > 1``) become one entry per element, with ids ``device/name[i]``; the array's
own id ``device/name`` maps to the element indices.
"""

from __future__ import annotations

__all__ = ["TagInfo", "TagTable"]

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gateway.config.common import TagBase
from gateway.datatypes import DataType


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One entry of the tag table (one scalar tag, or one element of an array tag)."""

    index: int
    id: str
    """``device/name`` or ``device/name[i]`` for an array element."""
    device: str
    name: str
    """The tag's name as published (``Measurements[3]`` for an element)."""
    config: TagBase
    element: int | None = None
    """Position in its array tag, or None for a scalar tag."""

    @property
    def type(self) -> DataType:
        return self.config.type

    @property
    def unit(self) -> str:
        return self.config.unit

    @property
    def writable(self) -> bool:
        return self.config.writable

    @property
    def base_id(self) -> str:
        """The configured tag's id (without the element suffix)."""
        return f"{self.device}/{self.config.name}"


class TagTable:
    """All tags of all devices, indexed 0..n-1, with per-tag settings as arrays."""

    def __init__(self, devices: Iterable[tuple[str, Sequence[TagBase]]]) -> None:
        infos: list[TagInfo] = []
        self.arrays: dict[str, NDArray[np.int32]] = {}
        """Array tag id → indices of its elements, in element order."""
        for device, tags in devices:
            for tag in tags:
                count = int(getattr(tag, "count", 1))
                base = f"{device}/{tag.name}"
                if count == 1:
                    infos.append(TagInfo(len(infos), base, device, tag.name, tag))
                    continue
                first = len(infos)
                for element in range(count):
                    name = f"{tag.name}[{element}]"
                    infos.append(
                        TagInfo(len(infos), f"{device}/{name}", device, name, tag, element)
                    )
                self.arrays[base] = np.arange(first, first + count, dtype=np.int32)
        self.infos: tuple[TagInfo, ...] = tuple(infos)
        self.by_id: dict[str, int] = {info.id: info.index for info in infos}
        n = len(infos)
        configs = [info.config for info in infos]
        self.numeric: NDArray[np.bool_] = np.array([c.type.is_numeric for c in configs], bool)
        self.scale = np.array([c.scale for c in configs], np.float64)
        self.offset = np.array([c.offset for c in configs], np.float64)
        self.deadband = np.array([c.deadband for c in configs], np.float64)
        self.deadband_percent = np.array([c.deadband_percent for c in configs], np.float64)
        self.span_width = np.array(
            [(c.span[1] - c.span[0]) if c.span else np.nan for c in configs], np.float64
        )
        self.max_age_ns = np.array(
            [int(c.max_age * 1e9) if c.max_age else 0 for c in configs], np.int64
        )
        self.writable = np.array([c.writable for c in configs], bool)
        assert len(self.numeric) == n

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, index: int) -> TagInfo:
        return self.infos[index]

    def index(self, tag_id: str) -> int:
        """The index of a scalar tag or array element; KeyError when unknown."""
        return self.by_id[tag_id]

    def indices(self, tag_id: str) -> NDArray[np.int32]:
        """The indices of a tag: one for a scalar, every element's for an array."""
        if tag_id in self.arrays:
            return self.arrays[tag_id]
        return np.array([self.by_id[tag_id]], np.int32)

    def device_indices(self, device: str) -> NDArray[np.int32]:
        return np.array([i.index for i in self.infos if i.device == device], np.int32)

    def select(self, patterns: Sequence[str]) -> NDArray[np.bool_]:
        """Mask of the tags whose id (or array's id) matches any glob pattern."""
        mask = np.zeros(len(self.infos), bool)
        for info in self.infos:
            mask[info.index] = any(
                fnmatch.fnmatchcase(info.id, p) or fnmatch.fnmatchcase(info.base_id, p)
                for p in patterns
            )
        return mask
