"""The local HTTP API: health, status, tags, writes, metrics, completion requests."""

__all__: list[str] = []
