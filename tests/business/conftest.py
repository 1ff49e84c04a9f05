"""Fixtures of the business tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.business.certs import Certificates, make_certificates


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder: Path = tmp_path_factory.mktemp("certs")
    return make_certificates(folder)
