"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.demo.broker import LocalBroker
from tests.peers import require_binary


@pytest.fixture
async def mosquitto() -> AsyncIterator[LocalBroker]:
    """A real Mosquitto on a free loopback port, stopped after the test."""
    require_binary("mosquitto", "Debian package mosquitto")
    async with LocalBroker(prefer="mosquitto") as broker:
        assert broker.kind == "mosquitto"
        yield broker
