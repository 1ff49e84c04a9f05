"""The ``edge-gateway`` command line."""

__all__: list[str] = []
