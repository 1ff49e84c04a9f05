"""The configurations shown in docs/business.md load: every profile's example, the mapping
example and the sync strategies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.config.destinations import KindMapping, SyncPolicy
from gateway.config.load import load_config_text
from gateway.connectors.mapping import compile_mapping

DOC = Path(__file__).parents[2] / "docs" / "business.md"
HEAD = "gateway: {id: gw, location: {enterprise: a, site: b, area: c, line: d}}\n"


def blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_every_destination_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # certificate and CA paths of the examples do not exist here
    monkeypatch.setattr("gateway.config.destinations._check_file", lambda path, what: path)
    examples = [b for b in blocks() if "- name:" in b]
    profiles = set()
    for block in examples:
        text = re.sub(r"\$\{[^}]*\}", "secret", block)
        if not text.startswith("destinations:"):
            text = "destinations:\n" + text
        config = load_config_text(HEAD + text)
        profiles |= {d.profile for d in config.destinations}
    assert profiles == {"rest", "sap_s4hana", "erpnext", "b2mml"}


def test_the_mapping_example_compiles() -> None:
    (block,) = [b for b in blocks() if b.startswith("mapping:")]
    for kind, fields in yaml.safe_load(block)["mapping"].items():
        compile_mapping(kind, {}, KindMapping.model_validate(fields), timezone="UTC")


def test_the_sync_examples_are_valid() -> None:
    (block,) = [b for b in blocks() if b.startswith("sync:")]
    for line in block.splitlines():
        SyncPolicy.model_validate(yaml.safe_load(line.split("#")[0])["sync"])
