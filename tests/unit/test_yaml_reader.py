"""The event-based YAML reader builds exactly what yaml.safe_load builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config.yaml_reader import read_yaml

DOCUMENTS = [
    "a: 1\nb: [1, 2.5, true, null, '3', 2020-01-01]\nc: &x {k: v}\nd: *x\ne:\n  <<: *x\n  z: 1\n",
    "- &L [1, 2]\n- *L\n- {<<: [{a: 1}, {a: 2, b: 3}], c: 4}\n",
    "",
    "x: 0x1F\ny: 1_000\nz: .inf\nw: ~\nv: 'yes'\nu: yes\nt: !!str 12\n",
    "nested:\n  - {name: t0, address: 0}\n  - name: t1\n    span: [0, 10]\n",
    (Path(__file__).parents[2] / "gateway" / "demo" / "demo.yaml").read_text(),
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_same_as_safe_load(text: str) -> None:
    assert read_yaml(text) == yaml.safe_load(text)


def test_alias_shares_the_object_like_safe_load() -> None:
    data = read_yaml("a: &x [1]\nb: *x\n")
    assert data["a"] is data["b"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: [1,\n", "did not find expected node content"),
        ("a: *nope\n", "unknown alias"),
        ("? [1]\n: 2\n", "mapping key must be a plain value"),
        ("a: !!python/int 1\n", "unsupported"),
    ],
)
def test_errors_name_the_position(text: str, problem: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as caught:
        read_yaml(text)
    assert problem in str(caught.value)
    assert caught.value.problem_mark is not None
