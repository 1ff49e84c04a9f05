"""Northbound outputs: MQTT (Unified Namespace) and the historian."""

__all__: list[str] = []
