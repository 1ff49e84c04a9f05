"""Tag addresses: NodeId strings and browse paths, parsed at config time and resolved to
:class:`asyncua.ua.NodeId` at every connect (namespace indices can change when a server
restarts; URIs do not).

NodeIds follow the OPC UA text form (Part 6, 5.3.1.10)::

    >>> parse_node_id("ns=2;s=Line1.Press.Count").identifier
    'Line1.Press.Count'
    >>> parse_node_id("nsu=urn:acme:plc;i=1001").namespace_uri
    'urn:acme:plc'

Browse paths start at the Objects folder; each element is ``<namespace>:<BrowseName>`` with the
namespace an index or an alias of the device's ``namespaces`` (none: namespace 0)::

    >>> [str(e) for e in parse_browse_path("plc:Line1/plc:Press/2:Count")]
    ['plc:Line1', 'plc:Press', '2:Count']
"""

from __future__ import annotations

__all__ = [
    "ALIAS_PATTERN",
    "BrowsePathElement",
    "NodeAddress",
    "UnresolvedAddressError",
    "format_node_id",
    "parse_browse_path",
    "parse_node_id",
    "resolve_browse_path",
    "resolve_node_id",
]

import base64
import binascii
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from asyncua import ua

# asyncua (~30 MB, 0.5 s to import) is imported by the functions that build its objects, so
# that validating a config (the parsers here) does not load it.

ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ALIAS = re.compile(ALIAS_PATTERN)
_NODE_ID = re.compile(
    r"^(?:(?:ns=(?P<ns>\d+)|nsu=(?P<nsu>.+?));)?(?P<kind>[isgb])=(?P<id>.*)$", re.S
)
_ID_TYPES = {"i": "Numeric", "s": "String", "g": "Guid", "b": "ByteString"}


class UnresolvedAddressError(Exception):
    """A tag's address does not resolve on this server (namespace or node missing)."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A parsed NodeId string; the namespace by index or by URI/alias."""

    kind: Literal["i", "s", "g", "b"]
    identifier: int | str | uuid.UUID | bytes
    namespace_index: int | None = None
    namespace_uri: str | None = None

    @property
    def is_alias(self) -> bool:
        """True when `namespace_uri` is an alias name rather than a URI."""
        return self.namespace_uri is not None and bool(_ALIAS.match(self.namespace_uri))


def parse_node_id(text: str) -> NodeAddress:
    """Parse a NodeId string; ValueError saying what is wrong."""
    match = _NODE_ID.match(text.strip())
    if match is None:
        raise ValueError(
            "not a NodeId: expected [ns=<index>;|nsu=<uri>;] then i=<number>, s=<string>, "
            "g=<guid> or b=<base64>"
        )
    kind = match["kind"]
    raw = match["id"]
    identifier: int | str | uuid.UUID | bytes
    if kind == "i":
        if not raw.isdigit() or int(raw) > 0xFFFFFFFF:
            raise ValueError(f"numeric NodeId {raw!r} is not a number 0..4294967295")
        identifier = int(raw)
    elif kind == "g":
        try:
            identifier = uuid.UUID(raw)
        except ValueError:
            raise ValueError(f"GUID NodeId {raw!r} is not a GUID") from None
    elif kind == "b":
        try:
            identifier = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"opaque NodeId {raw!r} is not base64") from None
    else:
        if not raw:
            raise ValueError("string NodeId is empty")
        identifier = raw
    namespace_index = int(match["ns"]) if match["ns"] is not None else None
    if namespace_index is not None and namespace_index > 0xFFFF:
        raise ValueError(f"namespace index {namespace_index} is above 65535")
    namespace_uri = match["nsu"]
    if namespace_index is None and namespace_uri is None:
        namespace_index = 0
    return NodeAddress(kind, identifier, namespace_index, namespace_uri)  # type: ignore[arg-type]


def resolve_node_id(
    address: NodeAddress, namespaces: Sequence[str], aliases: Mapping[str, str]
) -> ua.NodeId:
    """The NodeId on a server whose namespace array is `namespaces`."""
    index = address.namespace_index
    if address.namespace_uri is not None:
        index = _namespace_index(address.namespace_uri, namespaces, aliases)
    elif index is not None and index >= len(namespaces):
        raise UnresolvedAddressError(
            f"namespace index {index} is not on the server (it has {len(namespaces)})"
        )
    identifier: Any = address.identifier
    from asyncua import ua

    kind = getattr(ua.NodeIdType, _ID_TYPES[address.kind])
    return ua.NodeId(identifier, ua.Int16(index or 0), kind)


def _namespace_index(name: str, namespaces: Sequence[str], aliases: Mapping[str, str]) -> int:
    uri = aliases.get(name, name)
    try:
        return list(namespaces).index(uri)
    except ValueError:
        raise UnresolvedAddressError(
            f"namespace {uri!r} is not on the server (it has: {', '.join(namespaces)})"
        ) from None


def format_node_id(node_id: ua.NodeId, namespaces: Sequence[str]) -> str:
    """A NodeId as text with its namespace by URI (``nsu=...;s=...``), stable across restarts;
    namespace 0 stays implicit (``i=2258``)."""
    text = node_id.to_string()
    if node_id.NamespaceIndex == 0:
        return text
    rest = text.split(";", 1)[1] if text.startswith("ns=") else text
    if node_id.NamespaceIndex < len(namespaces):
        return f"nsu={namespaces[node_id.NamespaceIndex]};{rest}"
    return text


@dataclass(frozen=True, slots=True)
class BrowsePathElement:
    """One step of a browse path: a browse name in a namespace (index or alias)."""

    namespace: int | str
    name: str

    def __str__(self) -> str:
        name = self.name.replace("\\", "\\\\").replace("/", "\\/").replace(":", "\\:")
        return name if self.namespace == 0 else f"{self.namespace}:{name}"


def parse_browse_path(text: str) -> tuple[BrowsePathElement, ...]:
    """Parse ``a:B/c:D``; ``\\/``, ``\\:`` and ``\\\\`` escape the separators."""
    parts: list[list[str]] = [[]]
    escaped = False
    for char in text.strip().lstrip("/"):
        if escaped:
            parts[-1].append("\0" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "/":
            parts.append([])
        else:
            parts[-1].append(char)
    if escaped:
        raise ValueError("browse path ends with a lone backslash")
    elements: list[BrowsePathElement] = []
    for tokens in parts:
        element = _parse_element(tokens)
        if not elements and element == BrowsePathElement(0, "Objects"):
            continue  # the path starts at Objects already
        elements.append(element)
    if not elements:
        raise ValueError("browse path is empty")
    return tuple(elements)


def _parse_element(tokens: list[str]) -> BrowsePathElement:
    colon = next((i for i, t in enumerate(tokens) if t == ":"), None)
    namespace: int | str = 0
    if colon is not None:
        prefix = "".join(tokens[:colon])
        tokens = tokens[colon + 1 :]
        if prefix.isdigit():
            namespace = int(prefix)
        elif _ALIAS.match(prefix):
            namespace = prefix
        else:
            raise ValueError(
                f"browse path element prefix {prefix!r} is neither a namespace index nor an alias"
            )
    name = "".join(t[-1] for t in tokens)
    if not name:
        raise ValueError("browse path has an empty element (two / in a row?)")
    return BrowsePathElement(namespace, name)


def resolve_browse_path(
    path: Sequence[BrowsePathElement], namespaces: Sequence[str], aliases: Mapping[str, str]
) -> ua.BrowsePath:
    """A TranslateBrowsePathsToNodeIds request item for `path`, from the Objects folder."""
    from asyncua import ua
    from asyncua.ua.object_ids import ObjectIds

    elements = []
    for element in path:
        if isinstance(element.namespace, str):
            index = _namespace_index(element.namespace, namespaces, aliases)
        else:
            index = element.namespace
        elements.append(
            ua.RelativePathElement(
                ReferenceTypeId=ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences)),
                IsInverse=cast(ua.Boolean, False),
                IncludeSubtypes=cast(ua.Boolean, True),
                TargetName=ua.QualifiedName(element.name, index),
            )
        )
    return ua.BrowsePath(
        StartingNode=ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder)),
        RelativePath=ua.RelativePath(Elements=elements),
    )
