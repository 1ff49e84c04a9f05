"""Helpers shared by the command modules."""

from __future__ import annotations

__all__ = ["setup_logging"]

import logging
import sys


def setup_logging(level: str) -> None:
    """Log to stderr at `level`; the libraries' chatter only from WARNING up."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("asyncua", "pymodbus", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
