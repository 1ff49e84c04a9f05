"""Protocol drivers: each turns a device's tags into columnar sample batches."""

__all__: list[str] = []
