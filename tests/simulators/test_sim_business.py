"""ERP, WMS and QMS simulators over HTTP: validation, booking, idempotent replays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from simulators.business import BusinessSimulator, ErpSimulator, QmsSimulator, WmsSimulator

TIMEOUT = aiohttp.ClientTimeout(total=5.0)

CONFIRMATION: dict[str, Any] = {
    "order": "1000101",
    "operation": "0010",
    "material": "FG-4711",
    "lot": "L100010101",
    "good": 158,
    "scrap": 2,
    "unit": "PCE",
    "start": "2026-11-22T05:00:00Z",
    "end": "2026-11-22T05:05:20.000+00:00",
    "final": False,
}
GOODS_RECEIPT: dict[str, Any] = {
    "material": "FG-4711",
    "lot": "L100010101",
    "quantity": 158,
    "unit": "PCE",
    "source_location": "Line1",
}
INSPECTION: dict[str, Any] = {
    "lot": "L100010101",
    "material": "FG-4711",
    "characteristics": [{"name": "diameter", "mean": 10.01, "cpk": 1.4}],
    "decision": "accept",
}
SYSTEMS: list[tuple[type[BusinessSimulator], str, dict[str, Any]]] = [
    (ErpSimulator, "/api/v1/confirmations", CONFIRMATION),
    (WmsSimulator, "/api/v1/goods-receipts", GOODS_RECEIPT),
    (QmsSimulator, "/api/v1/inspection-results", INSPECTION),
]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, key: str | None = "key-1"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    data = body if isinstance(body, bytes) else None
    json_body = None if isinstance(body, bytes) else body
    async with http.post(url, json=json_body, data=data, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


@pytest.mark.parametrize(("cls", "path", "document"), SYSTEMS)
async def test_valid_document_is_booked_and_listed(
    http: aiohttp.ClientSession, cls: type[BusinessSimulator], path: str, document: dict[str, Any]
) -> None:
    async with cls() as sim:
        status, body, headers = await _post(http, sim.url + path, document, key="abc-1")
        assert status == 201
        assert body["id"]
        assert body["status"] == "booked"
        assert "Idempotent-Replayed" not in headers
        assert len(sim.ledger) == 1
        booking = sim.ledger[0]
        assert (booking.id, booking.idempotency_key) == (body["id"], "abc-1")
        assert dict(booking.document) == document
        async with http.get(sim.url + path) as response:
            assert response.status == 200
            listed = await response.json()
        assert listed["count"] == 1
        (item,) = listed["items"]
        assert item["id"] == body["id"]
        assert item["idempotency_key"] == "abc-1"
        assert item["received_at"].endswith("Z")
        assert item["document"] == document
        async with http.get(sim.url + "/health") as response:
            assert response.status == 200
            assert (await response.json())["system"] == cls.SYSTEM


INVALID: list[tuple[type[BusinessSimulator], str, dict[str, Any], dict[str, Any], str]] = [
    *[
        (
            ErpSimulator,
            "/api/v1/confirmations",
            CONFIRMATION,
            {field: None},
            f"{field}: is required",
        )
        for field in CONFIRMATION
    ],
    (ErpSimulator, "/api/v1/confirmations", CONFIRMATION, {"good": -1}, "good: must be >= 0"),
    (
        ErpSimulator,
        "/api/v1/confirmations",
        CONFIRMATION,
        {"good": 1.5},
        "good: must be an integer",
    ),
    (
        ErpSimulator,
        "/api/v1/confirmations",
        CONFIRMATION,
        {"good": "5"},
        "good: must be an integer",
    ),
    (
        ErpSimulator,
        "/api/v1/confirmations",
        CONFIRMATION,
        {"scrap": True},
        "scrap: must be an integer",
    ),
    (
        ErpSimulator,
        "/api/v1/confirmations",
        CONFIRMATION,
        {"order": 1000101},
        "order: must be a string",
    ),
    (ErpSimulator, "/api/v1/confirmations", CONFIRMATION, {"lot": " "}, "lot: must not be empty"),
    (
        ErpSimulator,
        "/api/v1/confirmations",
        CONFIRMATION,
        {"start": "yesterday"},
        "start: must be an ISO 8601 date-time string",
    ),
    (
        ErpSimulator,
        "/api/v1/confirmations",
        CONFIRMATION,
        {"end": 1763787600},
        "end: must be an ISO 8601 date-time string",
    ),
    (
        ErpSimulator,
        "/api/v1/confirmations",
        CONFIRMATION,
        {"final": "yes"},
        "final: must be true or false",
    ),
    *[
        (
            WmsSimulator,
            "/api/v1/goods-receipts",
            GOODS_RECEIPT,
            {field: None},
            f"{field}: is required",
        )
        for field in GOODS_RECEIPT
    ],
    (
        WmsSimulator,
        "/api/v1/goods-receipts",
        GOODS_RECEIPT,
        {"quantity": 0},
        "quantity: must be > 0",
    ),
    (
        WmsSimulator,
        "/api/v1/goods-receipts",
        GOODS_RECEIPT,
        {"quantity": -2.5},
        "quantity: must be > 0",
    ),
    (
        WmsSimulator,
        "/api/v1/goods-receipts",
        GOODS_RECEIPT,
        {"quantity": "158"},
        "quantity: must be a number",
    ),
    *[
        (
            QmsSimulator,
            "/api/v1/inspection-results",
            INSPECTION,
            {field: None},
            f"{field}: is required",
        )
        for field in INSPECTION
    ],
    (
        QmsSimulator,
        "/api/v1/inspection-results",
        INSPECTION,
        {"decision": "maybe"},
        "decision: must be one of accept, reject, hold",
    ),
    (
        QmsSimulator,
        "/api/v1/inspection-results",
        INSPECTION,
        {"characteristics": {"name": "d"}},
        "characteristics: must be a list",
    ),
    (
        QmsSimulator,
        "/api/v1/inspection-results",
        INSPECTION,
        {"characteristics": [{"value": 1}]},
        "characteristics: item 0 needs a name",
    ),
    (
        QmsSimulator,
        "/api/v1/inspection-results",
        INSPECTION,
        {"characteristics": ["diameter"]},
        "characteristics: item 0 must be an object",
    ),
]


@pytest.mark.parametrize(("cls", "path", "document", "change", "error"), INVALID)
async def test_invalid_document_answers_422_with_the_reason(
    http: aiohttp.ClientSession,
    cls: type[BusinessSimulator],
    path: str,
    document: dict[str, Any],
    change: dict[str, Any],
    error: str,
) -> None:
    body = {**document, **change}
    body = {k: v for k, v in body.items() if v is not None}
    async with cls() as sim:
        status, answer, _ = await _post(http, sim.url + path, body)
        assert (status, answer) == (422, {"error": error})
        assert len(sim.ledger) == 0
        assert sim.stats.rejected == 1


@pytest.mark.parametrize(
    ("raw", "error"),
    [(b"{not json", "body: invalid JSON"), (b"[1, 2]", "body: must be a JSON object")],
)
async def test_malformed_body_answers_422(
    http: aiohttp.ClientSession, raw: bytes, error: str
) -> None:
    async with ErpSimulator() as erp:
        status, answer, _ = await _post(http, erp.url + "/api/v1/confirmations", raw)
        assert (status, answer) == (422, {"error": error})


async def test_missing_idempotency_key_answers_400(http: aiohttp.ClientSession) -> None:
    async with WmsSimulator() as wms:
        for key in (None, "  "):
            status, answer, _ = await _post(
                http, wms.url + "/api/v1/goods-receipts", GOODS_RECEIPT, key=key
            )
            assert status == 400
            assert answer["error"].startswith("Idempotency-Key:")
        assert len(wms.ledger) == 0


async def test_replay_returns_the_first_answer_and_books_nothing(
    http: aiohttp.ClientSession,
) -> None:
    async with ErpSimulator() as erp:
        url = erp.url + "/api/v1/confirmations"
        first = await _post(http, url, CONFIRMATION, key="conf-1")
        # same key, even with another body: the same document as far as the ERP is concerned
        second = await _post(http, url, {**CONFIRMATION, "good": 999}, key="conf-1")
        third = await _post(http, url, CONFIRMATION, key="conf-2")
        assert first[0] == 201
        assert second[0] == 200
        assert second[1] == first[1]
        assert second[2]["Idempotent-Replayed"] == "true"
        assert third[0] == 201
        assert third[1]["id"] != first[1]["id"]
        assert [b.idempotency_key for b in erp.ledger] == ["conf-1", "conf-2"]
        assert erp.ledger[0].document["good"] == 158
        stats = erp.stats_json()
        assert (stats["booked"], stats["replays"], stats["requests"]) == (2, 1, 3)


async def test_concurrent_requests_with_one_key_book_once(http: aiohttp.ClientSession) -> None:
    async with QmsSimulator() as qms:
        qms.faults.latency_ms = 50  # all ten are in flight at the same time
        url = qms.url + "/api/v1/inspection-results"
        answers = await asyncio.gather(
            *(_post(http, url, INSPECTION, key="q-1") for _ in range(10))
        )
        assert len(qms.ledger) == 1
        assert sorted(status for status, _, _ in answers) == [200] * 9 + [201]
        assert len({answer["id"] for _, answer, _ in answers}) == 1
        assert qms.stats.replays == 9


async def test_rejected_document_can_be_corrected_with_the_same_key(
    http: aiohttp.ClientSession,
) -> None:
    async with ErpSimulator() as erp:
        url = erp.url + "/api/v1/confirmations"
        status, _, _ = await _post(http, url, {**CONFIRMATION, "good": -5}, key="fix-me")
        assert status == 422
        status, _, headers = await _post(http, url, CONFIRMATION, key="fix-me")
        assert status == 201
        assert "Idempotent-Replayed" not in headers
        assert len(erp.ledger) == 1


async def test_unknown_route_is_404(http: aiohttp.ClientSession) -> None:
    async with (
        ErpSimulator() as erp,
        http.post(erp.url + "/api/v1/goods-receipts", json=GOODS_RECEIPT) as response,
    ):
        assert response.status == 404
