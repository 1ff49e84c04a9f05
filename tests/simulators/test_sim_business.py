"""ERP, WMS and QMS simulators over HTTP: validation, booking, idempotent replays."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from simulators.business import (
    BusinessSimulator,
    ErpSimulator,
    GenericAuth,
    QmsSimulator,
    WmsSimulator,
)
from simulators.sap import SAP_ROOT

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


# --- generic routes: external references, batches, credentials ------------------------------


async def test_external_reference_field_books_once_and_refuses_a_duplicate(
    http: aiohttp.ClientSession,
) -> None:
    async with ErpSimulator() as erp:
        url = erp.url + "/api/v1/confirmations"
        body = {**CONFIRMATION, "external_reference": "ref-1"}
        first = await _post(http, url, body, key=None)
        second = await _post(http, url, body, key=None)
        assert first[0] == 201
        assert second[:2] == (409, {"error": "external_reference: already exists",
                                    "id": first[1]["id"]})  # fmt: skip
        async with http.get(url, params={"external_reference": "ref-1"}) as response:
            assert (await response.json())["count"] == 1
        async with http.get(url, params={"external_reference": "other"}) as response:
            assert (await response.json())["count"] == 0


async def test_batch_route_answers_each_document(http: aiohttp.ClientSession) -> None:
    async with ErpSimulator() as erp:
        documents = [
            {**CONFIRMATION, "external_reference": "a"},
            {**CONFIRMATION, "external_reference": "b", "good": -1},
            {**CONFIRMATION, "external_reference": "a"},
        ]
        async with http.post(
            erp.url + "/api/v1/confirmations/batch", json={"documents": documents}
        ) as response:
            results = (await response.json())["results"]
        assert [r["status"] for r in results] == [201, 422, 409]
        assert results[1]["error"] == "good: must be >= 0"
        assert len(erp.ledger) == 1


async def test_generic_routes_check_credentials_when_configured(
    http: aiohttp.ClientSession,
) -> None:
    async with ErpSimulator(auth=GenericAuth(bearer="secret-token")) as erp:
        url = erp.url + "/api/v1/confirmations"
        status, _, headers = await _post(http, url, CONFIRMATION)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        async with http.post(
            url,
            json=CONFIRMATION,
            headers={"Idempotency-Key": "k", "Authorization": "Bearer secret-token"},
        ) as response:
            assert response.status == 201


# --- SAP S/4HANA OData ----------------------------------------------------------------------

SAP_BODY: dict[str, Any] = {
    "OrderID": "1000123",
    "OrderOperation": "0010",
    "Sequence": "0",
    "ConfirmationYieldQuantity": "480.000",
    "ConfirmationUnit": "EA",
    "IsFinalConfirmation": False,
    "FinalConfirmationType": "",
    "PostingDate": "/Date(1777852800000)/",
    "ExternalSystemConfirmation": "a043037b-6c9c-5295-124f-678d32ae7569",
}
BASIC = {"Authorization": "Basic " + base64.b64encode(b"GATEWAY:secret").decode()}


async def test_sap_needs_basic_auth_and_the_csrf_token_with_its_session_cookie() -> None:
    async with ErpSimulator() as erp:
        url = erp.url + SAP_ROOT + "/ProdnOrdConf2"
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(timeout=TIMEOUT, cookie_jar=jar) as session:
            async with session.post(url, json=SAP_BODY) as response:
                assert response.status == 401
            async with session.post(url, json=SAP_BODY, headers=BASIC) as response:
                assert response.status == 403
                assert response.headers["x-csrf-token"] == "Required"
            async with session.get(
                erp.url + SAP_ROOT + "/", headers={**BASIC, "x-csrf-token": "Fetch"}
            ) as response:
                token = response.headers["x-csrf-token"]
                assert response.status == 200 and token
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as cookieless,
                cookieless.post(
                    url, json=SAP_BODY, headers={**BASIC, "x-csrf-token": token}
                ) as response,
            ):
                assert response.status == 403  # the token belongs to the session cookie
            headers = {**BASIC, "x-csrf-token": token}
            async with session.post(url, json=SAP_BODY, headers=headers) as response:
                assert response.status == 201
                created = (await response.json())["d"]
            assert (created["ConfirmationGroup"], created["ConfirmationCount"]) == (
                "0000000001",
                "00000001",
            )
            async with session.post(url, json=SAP_BODY, headers=headers) as response:
                assert response.status == 201  # SAP books a repeated confirmation again
            async with session.get(
                url,
                headers=BASIC,
                params={
                    "$filter": "ExternalSystemConfirmation eq "
                    "guid'a043037b-6c9c-5295-124f-678d32ae7569'"
                },
            ) as response:
                assert len((await response.json())["d"]["results"]) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ConfirmationYieldQuantity": 480}, "must be an Edm.Decimal string"),
        ({"PostingDate": "2026-05-04"}, "must be an Edm.DateTime"),
        ({"ExternalSystemConfirmation": "abc"}, "must be an Edm.Guid"),
        ({"FinalConfirmationType": "X"}, "contradict each other"),
        ({"Quantity": "1"}, "Property 'Quantity' is invalid"),
        (
            {
                "to_ProdnOrdConfMatlDocItm": {
                    "results": [
                        {
                            "Material": "FG-4711",
                            "Plant": "1010",
                            "StorageLocation": "FG01",
                            "GoodsMovementType": "101",
                            "GoodsMovementRefDocType": "F",
                            "OrderID": "1000123",
                            "QuantityInEntryUnit": "480.000",
                            "EntryUnit": "EA",
                        }
                    ]
                }
            },
            "is handled in batches: enter a batch",
        ),
    ],
)
async def test_sap_refuses_mistakes_with_its_error_body(
    change: dict[str, Any], message: str
) -> None:
    async with ErpSimulator() as erp:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(timeout=TIMEOUT, cookie_jar=jar) as session:
            async with session.head(
                erp.url + SAP_ROOT + "/", headers={**BASIC, "x-csrf-token": "Fetch"}
            ) as response:
                token = response.headers["x-csrf-token"]
            async with session.post(
                erp.url + SAP_ROOT + "/ProdnOrdConf2",
                json={**SAP_BODY, **change},
                headers={**BASIC, "x-csrf-token": token},
            ) as response:
                assert response.status == 400
                error = (await response.json())["error"]
        assert message in error["message"]["value"]
        assert error["code"] and error["message"]["lang"] == "en"
        assert error["innererror"]["errordetails"][0]["message"] == error["message"]["value"]
        assert len(erp.ledger) == 0


# --- ERPNext / Frappe -----------------------------------------------------------------------

FRAPPE = {"Authorization": "token gateway:secret", "Accept": "application/json"}
ENTRY: dict[str, Any] = {
    "stock_entry_type": "Material Receipt",
    "company": "Edge Manufacturing",
    "items": [{"item_code": "FG-4711", "qty": 5, "t_warehouse": "Stores - EM"}],
    "custom_mes_event_id": "evt-1",
}


async def test_erpnext_token_auth_json_errors_only_when_asked_and_unique_reference(
    http: aiohttp.ClientSession,
) -> None:
    async with WmsSimulator() as wms:
        url = wms.url + "/api/resource/Stock%20Entry"
        async with http.post(url, json=ENTRY) as response:
            assert response.status == 401
            assert response.content_type == "text/html"  # no Accept: application/json
        async with http.post(url, json=ENTRY, headers={"Accept": "application/json"}) as response:
            assert response.status == 401
            assert (await response.json())["exc_type"] == "AuthenticationError"
        async with http.post(url, json=ENTRY, headers=FRAPPE) as response:
            assert response.status == 200
            name = (await response.json())["data"]["name"]
        async with http.post(url, json=ENTRY, headers=FRAPPE) as response:
            assert response.status == 417
            error = await response.json()
        assert error["exc_type"] == "UniqueValidationError"
        assert "must be unique" in json.loads(json.loads(error["_server_messages"])[0])["message"]
        filters = json.dumps([["custom_mes_event_id", "=", "evt-1"]])
        async with http.get(
            url, params={"filters": filters, "fields": '["name","docstatus"]'}, headers=FRAPPE
        ) as response:
            assert (await response.json()) == {"data": [{"name": name, "docstatus": 0}]}


async def test_erpnext_validates_links_like_erpnext(http: aiohttp.ClientSession) -> None:
    async with ErpSimulator() as erp:
        url = erp.url + "/api/resource/Stock%20Entry"
        bad = {**ENTRY, "items": [{"item_code": "FG-4711", "qty": 5, "t_warehouse": "Nowhere"}]}
        async with http.post(url, json=bad, headers=FRAPPE) as response:
            assert response.status == 417
            error = await response.json()
        assert error["exc_type"] == "LinkValidationError"
        assert "Could not find Row #1: Target Warehouse: Nowhere" in error["exception"]
        manufacture = {**ENTRY, "stock_entry_type": "Manufacture", "fg_completed_qty": 5}
        async with http.post(url, json=manufacture, headers=FRAPPE) as response:
            assert "Work Order is mandatory" in (await response.json())["exception"]
        assert len(erp.ledger) == 0


# --- B2MML ----------------------------------------------------------------------------------

BOD = """<?xml version="1.0" encoding="UTF-8"?>
<ProcessMaterialLot xmlns="{ns}" releaseID="V0700">
  <ApplicationArea><Sender><LogicalID>gw</LogicalID></Sender>
    <CreationDateTime>2026-05-04T10:00:00Z</CreationDateTime>
    <BODID>6f1c0a3e-2b4d-4c1e-9f00-1a2b3c4d5e6f</BODID></ApplicationArea>
  <DataArea><Process/><MaterialLot><ID>{lot}</ID><MaterialDefinitionID>FG-4711</MaterialDefinitionID>
    <Status>accept</Status>
    <MaterialLotProperty><ID>diameter</ID>
      <Value><ValueString>10.01</ValueString><DataType>double</DataType></Value>
      <TestResult><ID>x</ID></TestResult></MaterialLotProperty>
  </MaterialLot></DataArea>
</ProcessMaterialLot>"""


async def test_b2mml_books_once_per_bodid_and_refuses_with_a_confirm_bod(
    http: aiohttp.ClientSession,
) -> None:
    async with QmsSimulator() as qms:
        url = qms.url + "/b2mml"
        good = BOD.format(ns="http://www.mesa.org/xml/B2MML", lot="L1").encode()
        async with http.post(url, data=good) as response:
            assert response.status == 201
            first = await response.text()
        async with http.post(url, data=good) as response:
            assert response.status == 200 and await response.text() == first
        wrong_ns = BOD.format(ns="http://www.mesa.org/xml/B2MML-V0600", lot="L1").encode()
        async with http.post(url, data=wrong_ns) as response:
            assert response.status == 400
            assert "must be in namespace http://www.mesa.org/xml/B2MML," in await response.text()
        no_lot = BOD.format(ns="http://www.mesa.org/xml/B2MML", lot="").encode()
        async with http.post(url, data=no_lot) as response:
            assert "MaterialLot: ID is required" in await response.text()
        async with http.post(url, data=b"<not xml") as response:
            assert "not well-formed XML" in await response.text()
        (booking,) = qms.ledger
        assert booking.idempotency_key == "6f1c0a3e2b4d4c1e9f001a2b3c4d5e6f"
        assert booking.document["characteristics"] == [{"name": "diameter", "mean": 10.01}]
