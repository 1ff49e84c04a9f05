"""The durable outbox: documents committed before acknowledgement, delivered with retries."""

__all__: list[str] = []
