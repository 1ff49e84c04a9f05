"""Request PDUs (built with pymodbus' PDU classes) and checks of the answers to them.

A PDU here is the function code followed by its data, as bytes: what the link frames and what it
returns. Read answers are checked for their byte count and turned into numpy arrays without
per-register Python objects.
"""

from __future__ import annotations

__all__ = [
    "MAX_WRITE_BITS",
    "MAX_WRITE_REGISTERS",
    "exception_code",
    "read_payload",
    "read_pdu",
    "unpack_bits",
    "write_pdus",
]

import numpy as np
from numpy.typing import NDArray
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.modbus.config import ModbusTable

MAX_WRITE_REGISTERS = 123
MAX_WRITE_BITS = 1968

_READ_REQUEST: dict[ModbusTable, type[ModbusPDU]] = {
    ModbusTable.COIL: ReadCoilsRequest,
    ModbusTable.DISCRETE: ReadDiscreteInputsRequest,
    ModbusTable.HOLDING: ReadHoldingRegistersRequest,
    ModbusTable.INPUT: ReadInputRegistersRequest,
}


def _pdu(request: ModbusPDU) -> bytes:
    return bytes([request.function_code]) + request.encode()


def read_pdu(table: ModbusTable, start: int, count: int) -> bytes:
    """FC 1, 2, 3 or 4 reading `count` registers (bits) from `start`."""
    return _pdu(_READ_REQUEST[table](address=start, count=count))


def exception_code(pdu: bytes) -> int | None:
    """The exception code of an exception answer, None for a normal answer."""
    if pdu[0] & 0x80:
        return pdu[1] if len(pdu) > 1 else 0
    return None


def read_payload(pdu: bytes, table: ModbusTable, count: int) -> bytes | None:
    """The data bytes of a read answer, or None when its length does not match the request."""
    size = (count + 7) // 8 if table.is_bits else 2 * count
    if len(pdu) != size + 2 or pdu[1] != size:
        return None
    return pdu[2:]


def unpack_bits(payload: bytes, count: int) -> NDArray[np.bool_]:
    """Coil or discrete-input states from a read answer (LSB of the first byte first)."""
    bits = np.unpackbits(np.frombuffer(payload, np.uint8), bitorder="little")[:count]
    return bits.astype(np.bool_)


def write_pdus(
    table: ModbusTable, address: int, values: list[int] | list[bool], *, multiple_only: bool
) -> list[tuple[int, int, bytes]]:
    """(address, count, PDU) of the requests that write `values` from `address`: FC 5 or 15 for
    coils, FC 6 or 16 for registers, split at the protocol's limits."""
    if table is ModbusTable.COIL:
        bits = [bool(v) for v in values]
        if len(bits) == 1 and not multiple_only:
            return [(address, 1, _pdu(WriteSingleCoilRequest(address=address, bits=bits)))]
        return [
            (
                address + i,
                len(bits[i : i + MAX_WRITE_BITS]),
                _pdu(
                    WriteMultipleCoilsRequest(
                        address=address + i, bits=bits[i : i + MAX_WRITE_BITS]
                    )
                ),
            )
            for i in range(0, len(bits), MAX_WRITE_BITS)
        ]
    registers = [int(v) for v in values]
    if len(registers) == 1 and not multiple_only:
        return [
            (address, 1, _pdu(WriteSingleRegisterRequest(address=address, registers=registers)))
        ]
    chunks = []
    for i in range(0, len(registers), MAX_WRITE_REGISTERS):
        part = registers[i : i + MAX_WRITE_REGISTERS]
        chunks.append(
            (
                address + i,
                len(part),
                _pdu(WriteMultipleRegistersRequest(address=address + i, registers=part)),
            )
        )
    return chunks
