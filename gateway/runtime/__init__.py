"""The runtime: interfaces, registry, supervisor, and the gateway that wires them."""

__all__: list[str] = []
