"""OPC UA driver: subscriptions and batched reads through asyncua."""

__all__: list[str] = []
