"""Finding the real peers the integration tests need (Mosquitto, VictoriaMetrics, node...).

A missing peer skips its tests with the reason shown; under CI (``CI=true``) it fails them
instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["in_ci", "require_binary"]

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, install_hint: str) -> str:
    """The path of `name`, or skip (fail under CI) saying how to install it."""
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in _SBIN if os.access(f"{d}/{name}", os.X_OK)), None
    )
    if found:
        return found
    message = f"{name} is not installed ({install_hint}; `make test` installs it when root)"
    if in_ci():
        pytest.fail(f"CI=true and a required peer is missing: {message}")
    pytest.skip(message)
