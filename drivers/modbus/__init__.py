"""Modbus TCP driver: request planning, numpy block decoding, polling."""

__all__: list[str] = []
