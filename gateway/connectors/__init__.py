"""Business connectors: deliver outbox documents to ERP, WMS and QMS."""

__all__: list[str] = []
