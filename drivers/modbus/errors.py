"""Modbus exception codes and the driver's errors, as tag qualities and write errors carry them."""

from __future__ import annotations

__all__ = [
    "EXCEPTION_NAMES",
    "ModbusDeviceError",
    "ModbusExceptionResponse",
    "ModbusTimeout",
    "exception_reason",
]

from gateway.errors import DeviceError

EXCEPTION_NAMES = {
    1: "IllegalFunction",
    2: "IllegalDataAddress",
    3: "IllegalDataValue",
    4: "ServerDeviceFailure",
    5: "Acknowledge",
    6: "ServerDeviceBusy",
    7: "NegativeAcknowledge",
    8: "MemoryParityError",
    10: "GatewayPathUnavailable",
    11: "GatewayTargetDeviceFailedToRespond",
}


def exception_reason(code: int) -> str:
    """``Modbus exception 2 IllegalDataAddress``."""
    return f"Modbus exception {code} {EXCEPTION_NAMES.get(code, 'Unknown')}"


class ModbusDeviceError(DeviceError):
    """A request to one unit failed: no answer, a malformed answer, or an exception code."""


class ModbusTimeout(ModbusDeviceError):
    """The unit did not answer within the device's timeout (or the request was not sent because
    the unit had just failed to answer an earlier request of the same poll)."""


class ModbusExceptionResponse(ModbusDeviceError):
    """The unit answered with a Modbus exception code."""

    def __init__(self, device: str, code: int, what: str = "") -> None:
        prefix = f"{what}: " if what else ""
        super().__init__(device, prefix + exception_reason(code), code=code)
