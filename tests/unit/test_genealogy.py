"""Lot genealogy: lot runs from the lot tag, components from a scan tag or the API, process
values, stored in SQLite across restarts, queried backward and forward."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.server import ApiServer
from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.config.model import GatewayConfig
from gateway.documents import KINDS, Document
from gateway.processors.genealogy import GenealogyProcessor
from gateway.processors.genealogy_store import GenealogyStore, parse_components
from gateway.tags import TagTable
from tests.unit.helpers import batch

CONFIG = """
gateway: {id: gw1, location: {enterprise: acme, site: s, area: a, line: l}, data_dir: DATA}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: Order, address: 10, type: string, length: 16}
      - {name: Material, address: 20, type: string, length: 16}
      - {name: Lot, address: 28, type: string, length: 16}
      - {name: Scan, address: 40, type: string, length: 16}
      - {name: Temp, address: 60, type: float32}
      - {name: Pressure, address: 62, type: float32}
processors:
  - {type: genealogy, machine: M1, lot: M1/Lot, order: M1/Order, material: M1/Material,
     components: [{tag: M1/Scan, material: RM-7}], process: [M1/Temp, M1/Pressure]}
"""


def setup(tmp_path: Path) -> tuple[GatewayConfig, TagTable]:
    config = load_config_text(CONFIG.replace("DATA", str(tmp_path)))
    return config, TagTable((d.name, d.tags) for d in config.devices)


class Line:
    def __init__(self, tmp_path: Path, store: GenealogyStore | None) -> None:
        self.config, self.table = setup(tmp_path)
        section = self.config.processors[0]
        self.proc = GenealogyProcessor(section, self.table, "gw1", store=store)  # type: ignore[arg-type]
        self.values: dict[str, Any] = {
            "M1/Order": "1000",
            "M1/Material": "FG-1",
            "M1/Lot": "L1",
            "M1/Scan": "",
        }
        self.docs: list[Document] = []
        self.collect: list[SampleBatch] | None = None

    def poll(self, t: float, **changes: Any) -> list[Document]:
        self.values.update({f"M1/{k}": v for k, v in changes.items()})
        polled = batch(self.table, self.values, t)
        if self.collect is not None:
            self.collect.append(polled)
            return []
        docs = self.proc.ingest(polled)
        if docs or self.proc.needs_checkpoint:
            self.proc.snapshot()
        self.proc.commit()
        self.docs += docs
        return docs


def make_lot_one(line: Line) -> list[Document]:
    line.poll(1, Temp=20.0, Pressure=1.0)
    line.poll(2, Scan="C-100", Temp=22.0)
    line.poll(3, Scan="C-200", Temp=24.0, Pressure=1.2)
    line.poll(4, Scan="C-100")  # scanned again: still one component
    return line.poll(5, Lot="L2", Scan="", Temp=30.0)


def test_lot_genealogy_document(tmp_path: Path) -> None:
    line = Line(tmp_path, None)
    docs = make_lot_one(line)
    assert [d.kind for d in docs] == ["lot_genealogy"]
    body = docs[0].body
    assert set(body) == set(KINDS["lot_genealogy"].fields)
    assert (body["lot"], body["order"], body["material"]) == ("L1", "1000", "FG-1")
    assert (body["start"], body["end"]) == ("1970-01-01T00:00:01.000Z", "1970-01-01T00:00:05.000Z")
    assert [(c["lot"], c["material"]) for c in body["components"]] == [
        ("C-100", "RM-7"),
        ("C-200", "RM-7"),
    ]
    # polls 1-4 read 20, 22, 24, 24; the 30 of poll 5 belongs to L2
    assert body["process"]["M1/Temp"] == {"n": 4, "min": 20.0, "mean": 22.5, "max": 24.0}
    assert body["process"]["M1/Pressure"]["max"] == pytest.approx(1.2)
    assert docs[0].ordering_key == "L1"


def test_one_batch_with_the_whole_history_gives_the_same_document(tmp_path: Path) -> None:
    polled = Line(tmp_path, None)
    expected = make_lot_one(polled)
    recorded = Line(tmp_path, None)
    recorded.collect = []
    make_lot_one(recorded)
    again = Line(tmp_path, None)
    docs = again.proc.ingest(SampleBatch.concat("M1", recorded.collect))
    assert [d.body for d in docs] == [d.body for d in expected]


def query(store: GenealogyStore, lot: str, *, forward: bool = False, depth: int = 10) -> Any:
    async def run() -> Any:
        return await (store.forward(lot, depth) if forward else store.backward(lot, depth))

    return asyncio.run(run())


def test_stored_and_queried_after_a_restart(tmp_path: Path) -> None:
    store = GenealogyStore(tmp_path / "genealogy.db")
    line = Line(tmp_path, store)
    make_lot_one(line)
    line.poll(6)
    store.flush()
    store.close()
    reopened = GenealogyStore(tmp_path / "genealogy.db")
    tree = query(reopened, "L1")
    assert [(r["machine"], r["order"], r["end"]) for r in tree["runs"]] == [
        ("M1", "1000", "1970-01-01T00:00:05.000Z")
    ]
    assert [c["lot"] for c in tree["components"]] == ["C-100", "C-200"]
    assert tree["runs"][0]["process"]["M1/Temp"]["mean"] == 22.5
    running = query(reopened, "L2")
    assert running["runs"][0]["end"] is None  # L2 is still running
    assert query(reopened, "C-100", forward=True)["used_in"][0]["lot"] == "L1"
    assert query(reopened, "nope") is None
    reopened.close()


def test_records_saved_before_a_crash_are_written_after_the_restart(tmp_path: Path) -> None:
    line = Line(tmp_path, None)  # no store: the records stay unwritten in the state
    make_lot_one(line)
    saved = json.loads(json.dumps(line.proc.snapshot()))
    assert saved["unwritten"], "the finished run waits in the saved state"
    store = GenealogyStore(tmp_path / "genealogy.db")
    restarted = Line(tmp_path, store)
    restarted.proc.restore(saved)  # hands the records to the store again
    store.flush()
    assert query(store, "L1")["runs"][0]["end"] == "1970-01-01T00:00:05.000Z"
    restarted.poll(6, Lot="L2")
    assert not restarted.proc.snapshot()["unwritten"] or all(
        r["lot"] == "L2" for r in restarted.proc.snapshot()["unwritten"]
    )
    store.close()


def test_multi_level_backward_and_forward(tmp_path: Path) -> None:
    store = GenealogyStore(tmp_path / "genealogy.db")
    line = Line(tmp_path, store)
    make_lot_one(line)
    store.flush()

    async def post() -> None:
        await store.add_components("P-9", parse_components({"lot": "L1", "quantity": 2}), 9)
        await store.add_components(
            "L1",
            parse_components({"components": [{"lot": "C-100", "unit": "KG", "quantity": 1.5}]}),
            9,
        )

    asyncio.run(post())
    tree = query(store, "P-9")
    assert tree["components"][0]["lot"] == "L1" and tree["components"][0]["quantity"] == 2.0
    grand = {c["lot"]: c for c in tree["components"][0]["components"]}
    assert set(grand) == {"C-100", "C-200"} and grand["C-100"]["quantity"] == 1.5
    assert grand["C-100"]["source"] == "scan"  # first seen from the scanner, quantity from the API
    shallow = query(store, "P-9", depth=1)
    assert shallow["components"][0]["components_truncated"] == 2
    used = query(store, "C-200", forward=True)
    assert used["used_in"][0]["lot"] == "L1" and used["used_in"][0]["used_in"][0]["lot"] == "P-9"
    store.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"components": []}, "non-empty list"),
        ({"components": [{"material": "X"}]}, "components[0].lot: a non-empty lot"),
        ({"lot": "A", "qty": 1}, "qty: unknown field"),
        ({"components": [{"lot": "A", "quantity": "two"}]}, "components[0].quantity: wrong type"),
        ({"components": [{"lot": "A", "quantity": -1}]}, "quantity: must be a finite number"),
        ([1], "the body must be"),
    ],
)
def test_posted_components_are_validated(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_components(body)


async def test_api_posts_and_queries(tmp_path: Path) -> None:
    from gateway.runtime.app import Gateway

    config, table = setup(tmp_path)
    gateway = Gateway(config)
    processor = gateway.processors[0]
    assert isinstance(processor, GenealogyProcessor) and processor.genealogy_store is not None
    tags = np.array([table.index(t) for t in ("M1/Lot", "M1/Order")], np.int32)
    objects = np.array(["L7", "1000"], object)
    processor.ingest(SampleBatch.uniform("M1", tags, np.full(2, np.nan), 1_000_000_000, 0, objects))
    processor.snapshot()
    processor.commit()
    async with TestClient(TestServer(ApiServer(gateway).app)) as client:
        response = await client.post(
            "/genealogy/lots/L7/components",
            json={"components": [{"lot": "C-1", "material": "RM-1", "quantity": 3, "unit": "KG"}]},
        )
        assert response.status == 201 and (await response.json())["components"] == 1
        bad = await client.post("/genealogy/lots/L7/components", json={"components": [{}]})
        assert bad.status == 422 and "lot" in (await bad.json())["error"]
        tree = await (await client.get("/genealogy/lots/L7")).json()
        assert tree["runs"][0]["machine"] == "M1" and tree["runs"][0]["end"] is None
        assert tree["components"][0] == {
            "lot": "C-1",
            "material": "RM-1",
            "quantity": 3.0,
            "unit": "KG",
            "source": "api",
            "first_seen": tree["components"][0]["first_seen"],
            "machine": "",
            "runs": [],
            "components": [],
        }
        used = await (await client.get("/genealogy/lots/C-1/where-used")).json()
        assert used["used_in"][0]["lot"] == "L7"
        missing = await client.get("/genealogy/lots/unknown")
        assert missing.status == 404
    processor.genealogy_store.close()


def test_the_worked_example_of_the_docs(tmp_path: Path) -> None:
    """docs/mes.md §7: lot L-0417 on M1 with resin R-88 and insert I-12, packed in P-9001."""
    config = load_config_text(
        CONFIG.replace("DATA", str(tmp_path))
        .replace(
            "components: [{tag: M1/Scan, material: RM-7}], process: [M1/Temp, M1/Pressure]",
            "components: [{tag: M1/Scan, material: RM-100}, M1/Insert], process: [M1/Temp]",
        )
        .replace(
            "      - {name: Temp,",
            "      - {name: Insert, address: 48, type: string, length: 16}\n      - {name: Temp,",
        )
    )
    table = TagTable((d.name, d.tags) for d in config.devices)
    store = GenealogyStore(tmp_path / "genealogy.db")
    proc = GenealogyProcessor(config.processors[0], table, "gw1", store=store)  # type: ignore[arg-type]
    hour = 8 * 3600.0
    values: dict[str, Any] = {"M1/Order": "4711001", "M1/Material": "FG-100", "M1/Lot": "L-0417"}
    docs: list[Document] = []
    steps: list[tuple[float, dict[str, Any]]] = [
        (hour, {"M1/Temp": 212.0, "M1/Scan": "", "M1/Insert": ""}),
        (hour + 120, {"M1/Scan": "R-88"}),
        (hour + 1800, {"M1/Temp": 215.0}),
        (hour + 2400, {"M1/Insert": "I-12"}),
        (hour + 3600, {"M1/Temp": 218.0}),
        (hour + 5400, {"M1/Lot": "L-0418"}),
    ]
    for t, changes in steps:
        values.update(changes)
        polled = {k: v for k, v in values.items() if k != "M1/Temp" or k in changes}
        docs += proc.ingest(batch(table, polled, t))
        proc.snapshot()
        proc.commit()
    (document,) = docs
    assert document.body["process"]["M1/Temp"] == {
        "n": 3,
        "min": 212.0,
        "mean": 215.0,
        "max": 218.0,
    }
    assert [c["lot"] for c in document.body["components"]] == ["R-88", "I-12"]

    async def post_and_query() -> tuple[Any, Any]:
        await store.add_components(
            "P-9001",
            parse_components(
                {
                    "components": [
                        {"lot": "L-0417", "material": "FG-100", "quantity": 480, "unit": "EA"}
                    ]
                }
            ),
            int(hour) * 10**9,
        )
        return await store.backward("P-9001"), await store.forward("R-88")

    store.flush()
    back, forward = asyncio.run(post_and_query())
    lot = back["components"][0]
    assert (lot["lot"], lot["quantity"], lot["source"]) == ("L-0417", 480.0, "api")
    assert lot["runs"][0]["start"].endswith("T08:00:00.000Z")
    assert lot["runs"][0]["end"].endswith("T09:30:00.000Z")
    assert [(c["lot"], c["material"]) for c in lot["components"]] == [
        ("R-88", "RM-100"),
        ("I-12", ""),
    ]
    assert forward["used_in"][0]["lot"] == "L-0417"
    assert forward["used_in"][0]["used_in"][0]["lot"] == "P-9001"
    rev = store.run_sync(
        lambda db: db.execute("SELECT rev FROM lot_runs WHERE lot='L-0417'").fetchone()
    )
    assert rev == (4,)  # start, two scans, end
    store.close()
