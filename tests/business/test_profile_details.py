"""What only some profiles do: SAP's CSRF session, ERPNext's drafts and unique reference,
batches to a REST target, Retry-After, and the answer classification table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.connectors.erpnext import ErpNextConnector
from gateway.connectors.http import HttpReply, classify
from gateway.connectors.rest import RestConnector
from gateway.connectors.sap import SapConnector
from gateway.errors import DeliveryError
from simulators.business import ErpSimulator
from simulators.erpnext import ERPNEXT_COLLECTION
from simulators.sap import SAP_COLLECTION, SAP_ROOT
from tests.business.documents import completion
from tests.business.profiles import ERPNEXT, SAP_AUTH, validate


@pytest.fixture
async def erp() -> AsyncIterator[ErpSimulator]:
    async with ErpSimulator() as sim:
        yield sim


def sap(url: str, **changes: Any) -> SapConnector:
    config = validate(
        {"name": "sap", "profile": "sap_s4hana", "url": url + SAP_ROOT, "auth": SAP_AUTH,
         "plant": "1010", "storage_location": "FG01", **changes}
    )  # fmt: skip
    return SapConnector(config)


async def test_sap_fetches_a_new_token_when_the_session_expired(erp: ErpSimulator) -> None:
    # without the GUID look-up, a token is fetched once and reused for every POST
    connector = sap(
        erp.url,
        mapping={"completion": {"fields": {"ExternalSystemConfirmation": None}}},
    )
    await connector.deliver(completion(1))
    await connector.deliver(completion(2))
    assert erp.sap.token_fetches == 1
    erp.sap.expire_sessions()
    await connector.deliver(completion(3))
    await connector.close()
    assert erp.sap.csrf_refusals == 1  # the old token was refused once, then a new one worked
    assert erp.sap.token_fetches == 2
    assert len(erp.ledger.by_collection(SAP_COLLECTION)) == 3


async def test_sap_without_the_guid_books_a_resend_twice(erp: ErpSimulator) -> None:
    """Why the GUID look-up matters: SAP itself does not recognise a repeated confirmation."""
    connector = sap(
        erp.url, mapping={"completion": {"fields": {"ExternalSystemConfirmation": None}}}
    )
    await connector.deliver(completion(1))
    await connector.deliver(completion(1))
    await connector.close()
    assert len(erp.ledger.by_collection(SAP_COLLECTION)) == 2


async def test_sap_confirmation_without_good_parts_has_no_goods_receipt(erp: ErpSimulator) -> None:
    connector = sap(erp.url)
    await connector.deliver(completion(1, good=0, scrap=5, final=True))
    await connector.close()
    (booking,) = erp.ledger.by_collection(SAP_COLLECTION)
    assert "to_ProdnOrdConfMatlDocItm" not in booking.document
    assert booking.document["FinalConfirmationType"] == "X"
    assert booking.document["ConfirmationScrapQuantity"] == "5.000"


def erpnext(url: str, **changes: Any) -> ErpNextConnector:
    config = validate(
        {"name": "erpnext", "profile": "erpnext", "url": url, **ERPNEXT,
         "to_warehouse": "Finished Goods - EM", "use_work_order": False, **changes}
    )  # fmt: skip
    return ErpNextConnector(config)


async def test_erpnext_submits_a_draft_it_finds_and_leaves_a_cancelled_one(
    erp: ErpSimulator,
) -> None:
    drafts = erpnext(erp.url, submit=False)
    first, second = completion(1), completion(2)
    await drafts.deliver(first)
    await drafts.deliver(second)
    await drafts.close()
    entries = erp.ledger.by_collection(ERPNEXT_COLLECTION)
    assert [e.document.get("docstatus", 0) for e in entries] == [0, 0]
    erp.ledger.replace(entries[1], {**entries[1].document, "docstatus": 2})  # cancelled by hand
    connector = erpnext(erp.url)
    assert (await connector.deliver(first)).endswith("(draft submitted)")
    assert (await connector.deliver(second)).endswith("(exists, cancelled in ERPNext)")
    await connector.close()
    entries = erp.ledger.by_collection(ERPNEXT_COLLECTION)
    assert [e.document["docstatus"] for e in entries] == [1, 2]


async def test_erpnext_unique_reference_catches_a_race_the_look_up_missed(
    erp: ErpSimulator,
) -> None:
    class Blind(ErpNextConnector):
        """Its first look-up misses the entry (another process posted it a moment ago)."""

        looked = 0

        async def _find(self, key: str) -> tuple[str, int] | None:
            self.looked += 1
            return None if self.looked == 1 else await super()._find(key)

    doc = completion(1)
    first = erpnext(erp.url)
    name = await first.deliver(doc)
    await first.close()
    blind = Blind(
        validate(
            {
                "name": "e",
                "profile": "erpnext",
                "url": erp.url,
                **ERPNEXT,
                "to_warehouse": "Finished Goods - EM",
                "use_work_order": False,
            }
        )
    )
    assert (await blind.deliver(doc)) == f"{name} (already booked)"
    await blind.close()
    assert erp.stats.rejected == 1  # the POST was refused as a duplicate
    assert len(erp.ledger.by_collection(ERPNEXT_COLLECTION)) == 1


async def test_rest_batch_reports_each_document_and_resends_harmlessly(
    erp: ErpSimulator,
) -> None:
    config = validate(
        {"name": "erp", "system": "erp", "url": f"{erp.url}/api/v1/confirmations",
         "batch_url": f"{erp.url}/api/v1/confirmations/batch",
         "sync": {"mode": "batched", "batch_size": 10}}
    )  # fmt: skip
    connector = RestConnector(config)
    docs = [completion(1), completion(2, material=""), completion(3)]
    results = await connector.deliver_batch(docs)
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert isinstance(results[1], DeliveryError) and not results[1].retryable
    assert "material: must not be empty" in str(results[1])
    again = await connector.deliver_batch(docs)
    await connector.close()
    assert again[0] == results[0] and again[2] == results[2]  # already exists: same ids
    assert [b.idempotency_key for b in erp.ledger] == [docs[0].key, docs[2].key]


async def test_retry_after_from_the_target_is_passed_on() -> None:
    async def busy(_request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "too many requests"}, status=429, headers={"Retry-After": "7"}
        )

    app = web.Application()
    app.router.add_post("/c", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    connector = RestConnector(
        validate({"name": "erp", "system": "erp", "url": f"http://127.0.0.1:{port}/c"})
    )
    try:
        with pytest.raises(DeliveryError) as caught:
            await connector.deliver(completion())
    finally:
        await connector.close()
        await runner.cleanup()
    assert (caught.value.retryable, caught.value.retry_after) == (True, 7.0)
    assert "too many requests" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (204, "delivered"),
        (409, "delivered"),  # already exists
        (400, "dead"),
        (417, "dead"),  # Frappe ValidationError
        (422, "dead"),
        (401, "retry"),  # credentials: the destination is wrong, not the document
        (403, "retry"),
        (404, "retry"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
    ],
)
def test_answers_are_classified(status: int, outcome: str) -> None:
    reply = HttpReply(status, {}, '{"error": "why"}')
    error = classify("erp", reply, already_exists=lambda r: r.status == 409)
    if outcome == "delivered":
        assert error is None
    else:
        assert error is not None
        assert error.retryable == (outcome == "retry")
        assert "why" in str(error)
