"""Finding the real peers the integration tests need (Mosquitto, VictoriaMetrics, node...).

A missing peer skips its tests with the reason shown; under CI (``CI=true``) it fails them
instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["NODE_DIR", "in_ci", "require_binary", "require_node_module"]

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


NODE_DIR = os.path.join(os.path.dirname(__file__), "node")
"""Where tests/peers/install.sh installs the Node.js peers (node_modules inside)."""


def require_node_module(name: str) -> str:
    """The folder holding node_modules/`name` (run node scripts there), or skip / fail under CI."""
    require_binary("node", "Debian package nodejs, or Node.js 20")
    if os.path.isdir(os.path.join(NODE_DIR, "node_modules", name)):
        return NODE_DIR
    message = f"npm package {name} is not installed (run tests/peers/install.sh)"
    if in_ci():
        pytest.fail(f"CI=true and a required peer is missing: {message}")
    pytest.skip(message)
