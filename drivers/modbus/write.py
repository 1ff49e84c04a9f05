"""Writes: FC 5, 6, 15 and 16, validated before anything is sent, with an optional read-back.

A write goes ahead of the reads queued on the device's link (never ahead of one in flight).
"""

from __future__ import annotations

__all__ = ["write_tag"]

from collections.abc import Sequence

import numpy as np

from drivers.modbus.codec import encode_value
from drivers.modbus.config import ModbusDevice, ModbusTable, ModbusTag
from drivers.modbus.errors import (
    ModbusDeviceError,
    ModbusExceptionResponse,
    ModbusTimeout,
    exception_reason,
)
from drivers.modbus.link import ModbusLink, Result
from drivers.modbus.pdu import exception_code, read_payload, read_pdu, unpack_bits, write_pdus
from gateway.errors import NotConnectedError, WriteRefusedError
from gateway.tags import TagInfo


async def write_tag(
    link: ModbusLink, device: ModbusDevice, config: ModbusTag, tag: TagInfo, value: object
) -> None:
    """Write `value` to one element of `tag`, or a list of values to consecutive elements of an
    array tag from `tag`'s element."""
    if not config.writable:
        raise WriteRefusedError(tag.id, "the tag is not writable")
    element = tag.element or 0
    values: Sequence[object] = value if isinstance(value, list | tuple) else [value]
    if isinstance(value, list | tuple) and config.count == 1:
        raise WriteRefusedError(tag.id, "a list of values needs an array tag")
    if not values:
        raise WriteRefusedError(tag.id, "no value to write")
    if element + len(values) > config.count:
        raise WriteRefusedError(
            tag.id, f"{len(values)} values from element {element} run past {config.count}"
        )
    words: list[int] = []
    coils: list[bool] = []
    for item in values:
        try:
            encoded = encode_value(config, item, device.word_order)
        except WriteRefusedError as exc:
            raise WriteRefusedError(tag.id, exc.reason) from None
        if isinstance(encoded, bool):
            coils.append(encoded)
        else:
            words += encoded
    address = config.element_address(element)
    data: list[int] | list[bool] = coils if config.table is ModbusTable.COIL else words
    requests = write_pdus(config.table, address, data, multiple_only=device.multiple_writes_only)
    answers = await link.submit(
        device.unit, [pdu for _, _, pdu in requests], device.timeout, urgent=True
    )
    for (start, count, pdu), answer in zip(requests, answers, strict=True):
        _check_answer(device.name, tag.id, start, count, pdu, answer)
    if config.verify_write:
        await _read_back(link, device, tag.id, config.table, address, data)


def _check_answer(name: str, what: str, start: int, count: int, pdu: bytes, answer: Result) -> None:
    if isinstance(answer, NotConnectedError):
        raise NotConnectedError(f"{name}: write to {what}: {answer}")
    if isinstance(answer, ModbusTimeout):
        raise ModbusTimeout(
            name, f"write to {what}: no answer; the value may or may not be written"
        )
    code = exception_code(answer)
    if code is not None:
        raise ModbusExceptionResponse(name, code, f"write to {what}")
    # FC 5/6 echo the request; FC 15/16 echo address and count
    expected = pdu if pdu[0] in (5, 6) else pdu[:5]
    if answer[: len(expected)] != expected:
        raise ModbusDeviceError(
            name, f"write to {what}: the answer does not confirm {count} at {start}"
        )


async def _read_back(
    link: ModbusLink,
    device: ModbusDevice,
    what: str,
    table: ModbusTable,
    address: int,
    data: list[int] | list[bool],
) -> None:
    limit = device.max_bits if table.is_bits else device.max_registers
    starts = range(0, len(data), limit)
    pdus = [read_pdu(table, address + i, min(limit, len(data) - i)) for i in starts]
    answers = await link.submit(device.unit, pdus, device.timeout, urgent=True)
    got: list[int] = []
    for i, answer in zip(starts, answers, strict=True):
        count = min(limit, len(data) - i)
        if not isinstance(answer, bytes):
            raise ModbusDeviceError(device.name, f"read-back of {what}: {answer}")
        payload = read_payload(answer, table, count)
        if payload is None:
            code = exception_code(answer)
            reason = exception_reason(code) if code is not None else "malformed answer"
            raise ModbusDeviceError(device.name, f"read-back of {what}: {reason}")
        if table.is_bits:
            got += [int(b) for b in unpack_bits(payload, count)]
        else:
            got += np.frombuffer(payload, ">u2").astype(int).tolist()
    wanted = [int(v) for v in data]
    if got != wanted:
        raise ModbusDeviceError(
            device.name, f"read-back of {what} differs: wrote {wanted}, read {got}"
        )
