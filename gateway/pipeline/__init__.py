"""Batch stages between the drivers and the outputs: change detection and routing."""

__all__: list[str] = []
