"""Tag quality: good / uncertain / bad, with a reason, packed in one uint16 per sample.

A quality code travels with every value in a :class:`~gateway.batch.SampleBatch`. The two high
bits hold the severity (as in OPC UA status codes), the low 14 bits a reason id. Reasons are short
names ("timeout", "Modbus IllegalDataAddress", "BadNodeIdUnknown") interned in a process-wide
table, so a code is cheap to compare in numpy and still readable at the edges::

    >>> code = bad("timeout")
    >>> describe(code)
    'bad: timeout'
    >>> severity_of(code) is Severity.BAD
    True
"""

from __future__ import annotations

__all__ = [
    "GOOD",
    "Severity",
    "bad",
    "describe",
    "is_good",
    "quality_code",
    "reason_of",
    "severity_name",
    "severity_of",
    "uncertain",
]

import threading
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

_SEVERITY_SHIFT = 14
_REASON_MASK = (1 << _SEVERITY_SHIFT) - 1


class Severity(IntEnum):
    """How far a value can be trusted."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


GOOD = 0
"""The code of a good value with no reason attached."""

_reasons: list[str] = ["", "other"]
_reason_ids: dict[str, int] = {"": 0, "other": 1}
_lock = threading.Lock()


def _intern(reason: str) -> int:
    found = _reason_ids.get(reason)
    if found is not None:
        return found
    with _lock:
        found = _reason_ids.get(reason)
        if found is not None:
            return found
        if len(_reasons) > _REASON_MASK:
            return 1  # table full (16383 reasons): fold the rest into "other"
        _reasons.append(reason)
        _reason_ids[reason] = len(_reasons) - 1
        return len(_reasons) - 1


def quality_code(severity: Severity, reason: str = "") -> int:
    """Pack a severity and a reason name into a quality code."""
    return (int(severity) << _SEVERITY_SHIFT) | _intern(reason)


def bad(reason: str) -> int:
    """The code of a bad value for `reason` (``bad("timeout")``)."""
    return quality_code(Severity.BAD, reason)


def uncertain(reason: str) -> int:
    """The code of an uncertain value for `reason`."""
    return quality_code(Severity.UNCERTAIN, reason)


def severity_of(code: int) -> Severity:
    """The severity part of one code."""
    return Severity(min(int(code) >> _SEVERITY_SHIFT, 2))


def severity_name(code: int) -> str:
    """``good``, ``uncertain`` or ``bad``."""
    return severity_of(code).name.lower()


def reason_of(code: int) -> str:
    """The reason name of one code ('' for none)."""
    reason_id = int(code) & _REASON_MASK
    return _reasons[reason_id] if reason_id < len(_reasons) else "unknown"


def describe(code: int) -> str:
    """A human form: ``good``, ``bad: timeout``."""
    reason = reason_of(code)
    name = severity_name(code)
    return f"{name}: {reason}" if reason else name


def is_good(codes: NDArray[np.uint16]) -> NDArray[np.bool_]:
    """Vectorised: which samples are good."""
    good: NDArray[np.bool_] = (codes >> _SEVERITY_SHIFT) == 0
    return good
