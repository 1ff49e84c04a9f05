"""Modbus exception codes and their names, as tag quality reasons carry them."""

from __future__ import annotations

__all__ = ["EXCEPTION_NAMES", "exception_reason"]

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
