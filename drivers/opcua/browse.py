"""Walking a server's address space for ``edge-gateway browse``: a tree of objects and
variables with data types and access levels, and a tag list ready to paste into the config.

The walk goes level by level: one Browse call per level (chunked by MaxNodesPerBrowse, with
BrowseNext for continuation points), then one Read for the data type, value rank, array
dimensions and access level of that level's variables.
"""

from __future__ import annotations

__all__ = ["BrowsedNode", "browse", "format_tree", "format_yaml"]

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncua import ua
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from drivers.opcua.addressing import format_node_id
from drivers.opcua.session import Session, good_status
from gateway.datatypes import DataType

_SERVER_OBJECT = ua.NodeId(ua.Int32(ObjectIds.Server))
_TAG_TYPES = {
    ua.VariantType.Boolean: DataType.BOOL,
    ua.VariantType.SByte: DataType.INT16,
    ua.VariantType.Byte: DataType.UINT16,
    ua.VariantType.Int16: DataType.INT16,
    ua.VariantType.UInt16: DataType.UINT16,
    ua.VariantType.Int32: DataType.INT32,
    ua.VariantType.UInt32: DataType.UINT32,
    ua.VariantType.Int64: DataType.INT64,
    ua.VariantType.UInt64: DataType.UINT64,
    ua.VariantType.Float: DataType.FLOAT32,
    ua.VariantType.Double: DataType.FLOAT64,
    ua.VariantType.String: DataType.STRING,
    ua.VariantType.DateTime: DataType.DATETIME,
    ua.VariantType.ByteString: DataType.BYTES,
}
_VARIABLE_ATTRIBUTES = (
    AttributeIds.DataType,
    AttributeIds.ValueRank,
    AttributeIds.ArrayDimensions,
    AttributeIds.UserAccessLevel,
)


@dataclass(slots=True)
class BrowsedNode:
    """One object or variable found under the start node."""

    node_id: ua.NodeId
    browse_name: ua.QualifiedName
    node_class: ua.NodeClass
    depth: int
    path: tuple[str, ...]
    """Browse names from the start node down to this one."""
    data_type: str = ""
    variant: ua.VariantType | None = None
    value_rank: int = -1
    dimensions: list[int] = field(default_factory=list)
    access: str = ""
    children: list[BrowsedNode] = field(default_factory=list)


async def browse(
    session: Session, start: ua.NodeId, depth: int, *, include_server: bool = False
) -> BrowsedNode:
    """The tree under `start`, `depth` levels deep (objects and variables)."""
    client = session.client
    names = await asyncio.wait_for(
        client.uaclient.read_attributes([start], AttributeIds.BrowseName), session.timeout
    )
    name = names[0].Value.Value if good_status(names[0]) and names[0].Value else None
    root = BrowsedNode(
        start,
        name if isinstance(name, ua.QualifiedName) else ua.QualifiedName(start.to_string()),
        ua.NodeClass.Object,
        0,
        (),
    )
    if await _is_variable(session, start):
        root.node_class = ua.NodeClass.Variable
        await _describe_variables(session, [root])
    seen = {start}
    level = [root]
    for current_depth in range(1, depth + 1):
        if not level:
            break
        found: list[BrowsedNode] = []
        references = await _browse_children(session, [node.node_id for node in level])
        for parent, refs in zip(level, references, strict=True):
            for ref in refs:
                child_id = ua.NodeId(
                    ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType
                )
                if child_id in seen or (child_id == _SERVER_OBJECT and not include_server):
                    continue
                seen.add(child_id)
                child = BrowsedNode(
                    child_id,
                    ref.BrowseName,
                    ref.NodeClass,
                    current_depth,
                    (*parent.path, ref.BrowseName.Name),
                )
                parent.children.append(child)
                found.append(child)
        await _describe_variables(
            session, [n for n in found if n.node_class == ua.NodeClass.Variable]
        )
        level = found
    return root


async def _is_variable(session: Session, node: ua.NodeId) -> bool:
    result = await asyncio.wait_for(
        session.client.uaclient.read_attributes([node], AttributeIds.NodeClass), session.timeout
    )
    value = result[0].Value.Value if good_status(result[0]) and result[0].Value else None
    return value == ua.NodeClass.Variable


async def _browse_children(
    session: Session, parents: Sequence[ua.NodeId]
) -> list[list[ua.ReferenceDescription]]:
    uaclient = session.client.uaclient
    out: list[list[ua.ReferenceDescription]] = []
    chunk = session.limits.browse
    for start in range(0, len(parents), chunk):
        part = parents[start : start + chunk]
        params = ua.BrowseParameters()
        params.NodesToBrowse = [
            ua.BrowseDescription(
                NodeId=node,
                BrowseDirection=ua.BrowseDirection.Forward,
                ReferenceTypeId=ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences)),
                IncludeSubtypes=True,
                NodeClassMask=int(ua.NodeClass.Object) | int(ua.NodeClass.Variable),
                ResultMask=int(ua.BrowseResultMask.All),
            )
            for node in part
        ]
        results = await asyncio.wait_for(uaclient.browse(params), session.timeout * 2)
        for result in results:
            references = list(result.References or [])
            point = result.ContinuationPoint
            while point:
                more = await asyncio.wait_for(
                    uaclient.browse_next(
                        ua.BrowseNextParameters(
                            ReleaseContinuationPoints=False,
                            ContinuationPoints=[point],
                        )
                    ),
                    session.timeout * 2,
                )
                references += list(more[0].References or [])
                point = more[0].ContinuationPoint
            out.append(references)
    return out


async def _describe_variables(session: Session, nodes: list[BrowsedNode]) -> None:
    client = session.client
    per_call = max(1, session.limits.read // len(_VARIABLE_ATTRIBUTES))
    type_names: dict[ua.NodeId, tuple[str, ua.VariantType | None]] = {}
    for start in range(0, len(nodes), per_call):
        part = nodes[start : start + per_call]
        reads = [
            ua.ReadValueId(NodeId=node.node_id, AttributeId=attribute)
            for node in part
            for attribute in _VARIABLE_ATTRIBUTES
        ]
        results = await asyncio.wait_for(
            client.uaclient.read(ua.ReadParameters(NodesToRead=reads)), session.timeout * 2
        )
        for position, node in enumerate(part):
            data_type, rank, dimensions, access = results[4 * position : 4 * position + 4]
            if good_status(rank) and rank.Value is not None:
                node.value_rank = int(rank.Value.Value)
            if good_status(dimensions) and dimensions.Value is not None and dimensions.Value.Value:
                node.dimensions = [int(d) for d in dimensions.Value.Value]
            level = access.Value.Value if good_status(access) and access.Value else 0
            node.access = _access(int(level or 0))
            type_id = data_type.Value.Value if data_type.Value is not None else None
            if good_status(data_type) and isinstance(type_id, ua.NodeId):
                if type_id not in type_names:
                    type_names[type_id] = await _type_name(session, type_id)
                node.data_type, node.variant = type_names[type_id]


async def _type_name(session: Session, type_id: ua.NodeId) -> tuple[str, ua.VariantType | None]:
    node = session.client.get_node(type_id)
    try:
        name = (await asyncio.wait_for(node.read_browse_name(), session.timeout)).Name
        variant: ua.VariantType | None = await asyncio.wait_for(
            data_type_to_variant_type(node), session.timeout
        )
    except (UaError, TimeoutError, ValueError):
        return type_id.to_string(), None
    if variant in (ua.VariantType.Variant, ua.VariantType.ExtensionObject):
        variant = None
    return str(name), variant


def _access(level: int) -> str:
    read = bool(level & ua.AccessLevel.CurrentRead.mask)
    write = bool(level & ua.AccessLevel.CurrentWrite.mask)
    return {(True, True): "read/write", (True, False): "read", (False, True): "write"}.get(
        (read, write), "none"
    )


def format_tree(root: BrowsedNode, namespaces: Sequence[str]) -> list[str]:
    """The tree as text lines: name, class or data type, access, NodeId (namespace by URI)."""
    lines = [f"{root.browse_name.Name}  {format_node_id(root.node_id, namespaces)}"]

    def walk(node: BrowsedNode, prefix: str) -> None:
        for position, child in enumerate(node.children):
            last = position == len(node.children) - 1
            branch = "└─ " if last else "├─ "
            if child.node_class == ua.NodeClass.Variable:
                shape = child.data_type or "?"
                if child.value_rank >= 1:
                    shape += f"[{','.join(map(str, child.dimensions)) or ''}]"
                what = f"{shape}  {child.access}"
            else:
                what = "Object"
            lines.append(
                f"{prefix}{branch}{child.browse_name.Name}  {what}  "
                f"{format_node_id(child.node_id, namespaces)}"
            )
            walk(child, prefix + ("   " if last else "│  "))

    walk(root, "")
    return lines


def format_yaml(root: BrowsedNode, namespaces: Sequence[str]) -> list[str]:
    """The variables under `root` as a config ``tags:`` list (NodeIds by namespace URI)."""
    lines = ["tags:"]
    used: set[str] = set()

    def walk(node: BrowsedNode) -> None:
        for child in node.children:
            if child.node_class == ua.NodeClass.Variable:
                lines.append(_tag_line(child, namespaces, used))
            walk(child)

    walk(root)
    if len(lines) == 1:
        lines.append("  []  # no variables found")
    return lines


def _tag_line(node: BrowsedNode, namespaces: Sequence[str], used: set[str]) -> str:
    node_text = format_node_id(node.node_id, namespaces)
    tag_type = _TAG_TYPES.get(node.variant) if node.variant is not None else None
    if node.variant is ua.VariantType.Int32 and node.data_type not in ("Int32", ""):
        tag_type = DataType.INT32  # enumerations are Int32 on the wire
    if tag_type is None:
        return f"  # {node_text}: data type {node.data_type or '?'} is not supported"
    fields = [f"name: {_unique_name(node.path, used)}", f"node: {json.dumps(node_text)}"]
    fields.append(f"type: {tag_type.value}")
    if node.value_rank >= 1:
        count = node.dimensions[0] if len(node.dimensions) == 1 else 0
        if node.value_rank > 1 or count <= 0:
            return f"  # {node_text}: array without a fixed length is not supported"
        fields.append(f"count: {count}")
    elif node.value_rank == 0 or node.value_rank < -1:
        return f"  # {node_text}: scalar-or-array variable is not supported"
    if "write" in node.access:
        fields.append("writable: true")
    return "  - {" + ", ".join(fields) + "}"


def _unique_name(path: tuple[str, ...], used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.\-\[\]]+", "_", ".".join(path)).strip("._") or "tag"
    if not re.match(r"[A-Za-z0-9_]", base):
        base = f"t_{base}"
    base = base[:120]
    name, suffix = base, 2
    while name in used:
        name, suffix = f"{base}_{suffix}", suffix + 1
    used.add(name)
    return name
