"""Industrial edge gateway: PLC tags to MES work reports, business systems, MQTT and a historian."""

__all__ = ["__version__"]

__version__ = "0.1.0"
