"""Reading YAML into plain data straight from the parser's events.

PyYAML's loaders first compose a node tree of the whole document and then construct objects
from it; for a config with ten thousand tags the tree costs several times the memory of the
data. Building the data from the event stream (libyaml's parser when available) keeps only
the data, which matters on an edge PC where peak memory is part of the budget. Scalars are
resolved and constructed exactly as ``yaml.safe_load`` does; anchors, aliases and ``<<`` merge
keys work as usual.
"""

from __future__ import annotations

__all__ = ["read_yaml"]

from typing import Any, cast

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.resolver import Resolver

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class _Mapping:
    __slots__ = ("anchor", "data", "key", "merges")

    def __init__(self, anchor: str | None) -> None:
        self.data: dict[Any, Any] = {}
        self.key: Any = _NO_KEY
        self.anchor = anchor
        self.merges: list[dict[Any, Any]] = []


def _mark(event: yaml.Event) -> Mark | None:
    """The event's start position (libyaml's and PyYAML's marks have the same fields)."""
    return cast(Mark | None, event.start_mark)


_NO_KEY = object()
_MERGE_KEY = object()


def read_yaml(text: str) -> Any:
    """The document in `text` as dicts, lists and scalars (None for an empty document).

    Raises ``yaml.YAMLError`` (``MarkedYAMLError`` with the position) for invalid YAML.
    """
    resolver = Resolver()
    constructor = SafeConstructor()
    anchors: dict[str, Any] = {}
    stack: list[_Mapping | list[Any]] = []
    result: Any = None

    def add(value: Any, event: yaml.Event) -> None:
        nonlocal result
        if not stack:
            result = value
            return
        top = stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif top.key is _NO_KEY:
            try:
                hash(value)
            except TypeError:
                raise yaml.MarkedYAMLError(
                    problem="a mapping key must be a plain value", problem_mark=_mark(event)
                ) from None
            top.key = value
        elif top.key is _MERGE_KEY:
            sources = value if isinstance(value, list) else [value]
            for source in sources:
                if not isinstance(source, dict):
                    raise yaml.MarkedYAMLError(
                        problem="a << merge key needs a mapping", problem_mark=_mark(event)
                    )
                top.merges.append(source)
            top.key = _NO_KEY
        else:
            top.data[top.key] = value
            top.key = _NO_KEY

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolver.resolve(  # type: ignore[no-untyped-call]
                    yaml.ScalarNode, event.value, event.implicit
                )
            top = stack[-1] if stack else None
            if tag == _MERGE and isinstance(top, _Mapping) and top.key is _NO_KEY:
                top.key = _MERGE_KEY
                continue
            node = yaml.ScalarNode(tag, event.value, _mark(event), None, style=event.style)
            try:
                value = constructor.yaml_constructors[tag](constructor, node)
            except KeyError:
                raise yaml.MarkedYAMLError(
                    problem=f"unsupported tag {tag}", problem_mark=_mark(event)
                ) from None
            if event.anchor:
                anchors[event.anchor] = value
            add(value, event)
        elif isinstance(event, yaml.MappingStartEvent):
            stack.append(_Mapping(event.anchor))
        elif isinstance(event, yaml.SequenceStartEvent):
            sequence: list[Any] = []
            if event.anchor:
                anchors[event.anchor] = sequence
            stack.append(sequence)
        elif isinstance(event, yaml.MappingEndEvent):
            mapping = stack.pop()
            assert isinstance(mapping, _Mapping)
            data = mapping.data
            if mapping.merges:
                merged: dict[Any, Any] = {}
                for source in reversed(mapping.merges):
                    merged.update(source)
                merged.update(data)
                data = merged
            if mapping.anchor:
                anchors[mapping.anchor] = data
            add(data, event)
        elif isinstance(event, yaml.SequenceEndEvent):
            add(stack.pop(), event)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise yaml.MarkedYAMLError(
                    problem=f"unknown alias *{event.anchor}", problem_mark=_mark(event)
                )
            add(anchors[event.anchor], event)
    return result
