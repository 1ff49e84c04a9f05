"""Processors: plain classes over numpy arrays that turn batches into business documents."""

__all__: list[str] = []
