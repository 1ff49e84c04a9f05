"""Every connector profile with the simulator that implements its target, for the conformance
suite: how to configure it, a document it takes, a document the target refuses (and the reason
the target gives), and how to tell its bookings in the simulator's ledger."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from gateway.config.destinations import DestinationConfig
from gateway.documents import Document
from gateway.runtime.interfaces import Connector
from simulators.b2mml import B2MML_COLLECTION
from simulators.business import (
    BusinessSimulator,
    ErpSimulator,
    GenericAuth,
    QmsSimulator,
    WmsSimulator,
)
from simulators.erpnext import ERPNEXT_COLLECTION
from simulators.sap import SAP_COLLECTION, SAP_ROOT
from tests.business.certs import Certificates
from tests.business.documents import completion, lot_result, spc_alarm

_ADAPTER: TypeAdapter[Any] = TypeAdapter(DestinationConfig)

SAP_AUTH = {"type": "basic", "username": "GATEWAY", "password": "secret"}
ERPNEXT = {"api_key": "gateway", "api_secret": "secret", "company": "Edge Manufacturing"}


@dataclass(frozen=True)
class Profile:
    id: str
    simulator: Callable[[Certificates], BusinessSimulator]
    destination: Callable[[str, Certificates], dict[str, Any]]
    document: Callable[..., Document]
    collection: str
    refuse: dict[str, Any] | None
    """Fields that make the target refuse the document."""
    refusal: str = ""
    """Part of the target's reason for the refusal."""
    bad_credentials: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    check: Callable[[Mapping[str, Any], Document], object] = field(default=lambda booked, doc: None)
    """Raises (or returns False) when the booked content does not match the document."""

    def config(self, url: str, certs: Certificates, **changes: Any) -> Any:
        return _ADAPTER.validate_python({**self.destination(url, certs), **changes})


def validate(destination: dict[str, Any]) -> Any:
    """A destination's config model from its dict."""
    return _ADAPTER.validate_python(destination)


def build(config: Any, gateway_id: str = "gw") -> Connector:
    from gateway.connectors.b2mml import B2mmlConnector
    from gateway.connectors.erpnext import ErpNextConnector
    from gateway.connectors.rest import RestConnector
    from gateway.connectors.sap import SapConnector

    factory = {
        "rest": RestConnector,
        "sap_s4hana": SapConnector,
        "erpnext": ErpNextConnector,
        "b2mml": B2mmlConnector,
    }[config.profile]
    connector: Connector = factory(config, gateway_id=gateway_id)
    return connector


def _erp(_: Certificates) -> BusinessSimulator:
    return ErpSimulator()


def _wms(_: Certificates) -> BusinessSimulator:
    return WmsSimulator()


def _qms(_: Certificates) -> BusinessSimulator:
    return QmsSimulator()


def _check_confirmation(booked: Mapping[str, Any], doc: Document) -> None:
    assert (booked["order"], booked["lot"], booked["good"]) == (
        doc.body["order"],
        doc.body["lot"],
        doc.body["good"],
    )


def _check_sap(booked: Mapping[str, Any], doc: Document) -> None:
    assert booked["OrderID"] == doc.body["order"]
    assert booked["ConfirmationYieldQuantity"] == f"{doc.body['good']}.000"
    assert booked["ExternalSystemConfirmation"].replace("-", "") == doc.key
    (item,) = booked["to_ProdnOrdConfMatlDocItm"]["results"]
    assert (item["Batch"], item["GoodsMovementType"]) == (doc.body["lot"], "101")


def _check_stock_entry(booked: Mapping[str, Any], doc: Document) -> None:
    finished = [i for i in booked["items"] if i.get("batch_no") == doc.body["lot"]]
    assert finished and finished[0]["qty"] == doc.body["good"]
    assert booked["custom_mes_event_id"] == doc.key
    assert booked["docstatus"] == 1


def _with_auth(auth: dict[str, Any]) -> Callable[[str, Certificates], dict[str, Any]]:
    def destination(url: str, certs: Certificates) -> dict[str, Any]:
        return {"name": "erp", "system": "erp", "url": f"{url}/api/v1/confirmations", "auth": auth}

    return destination


def _cert_destination(url: str, certs: Certificates) -> dict[str, Any]:
    return {
        "name": "erp",
        "system": "erp",
        "url": f"{url}/api/v1/confirmations",
        "auth": {
            "type": "client_certificate",
            "cert": str(certs.client_cert),
            "key": str(certs.client_key),
        },
        "tls": {"ca": str(certs.ca)},
    }


def _stranger(config: dict[str, Any]) -> dict[str, Any]:
    return {
        **config,
        "auth": {
            **config["auth"],
            "cert": config["auth"]["cert"].replace("client", "stranger"),
            "key": config["auth"]["key"].replace("client", "stranger"),
        },
    }


def _wrong_auth(config: dict[str, Any]) -> dict[str, Any]:
    auth = dict(config["auth"])
    for secret in ("token", "password", "key"):
        if secret in auth:
            auth[secret] = "wrong"
    return {**config, "auth": auth}


PROFILES = [
    Profile(
        "rest-erp-header",
        _erp,
        lambda url, c: {"name": "erp", "system": "erp", "url": f"{url}/api/v1/confirmations"},
        completion,
        "confirmations",
        {"material": ""},
        "material: must not be empty",
        check=_check_confirmation,
    ),
    Profile(
        "rest-erp-field",
        _erp,
        lambda url, c: {
            "name": "erp",
            "system": "erp",
            "url": f"{url}/api/v1/confirmations",
            "idempotency": {"mode": "field"},
        },
        completion,
        "confirmations",
        {"good": -1},
        "good: must be >= 0",
        check=_check_confirmation,
    ),
    Profile(
        "rest-erp-lookup",
        _erp,
        lambda url, c: {
            "name": "erp",
            "system": "erp",
            "url": f"{url}/api/v1/confirmations",
            "idempotency": {
                "mode": "lookup",
                "lookup_url": f"{url}/api/v1/confirmations?external_reference={{key}}",
            },
        },
        completion,
        "confirmations",
        {"start": "yesterday"},
        "start: must be an ISO 8601 date-time string",
        check=_check_confirmation,
    ),
    Profile(
        "rest-erp-bearer",
        lambda c: ErpSimulator(auth=GenericAuth(bearer="t0ken")),
        _with_auth({"type": "bearer", "token": "t0ken"}),
        completion,
        "confirmations",
        {"lot": " "},
        "lot: must not be empty",
        bad_credentials=_wrong_auth,
    ),
    Profile(
        "rest-erp-basic",
        lambda c: ErpSimulator(auth=GenericAuth(basic=("mes", "pw"))),
        _with_auth({"type": "basic", "username": "mes", "password": "pw"}),
        completion,
        "confirmations",
        {"lot": " "},
        "lot: must not be empty",
        bad_credentials=_wrong_auth,
    ),
    Profile(
        "rest-erp-api-key",
        lambda c: ErpSimulator(auth=GenericAuth(api_key=("X-Api-Key", "k3y"))),
        _with_auth({"type": "api_key", "header": "X-Api-Key", "key": "k3y"}),
        completion,
        "confirmations",
        {"lot": " "},
        "lot: must not be empty",
        bad_credentials=_wrong_auth,
    ),
    Profile(
        "rest-erp-client-certificate",
        lambda c: ErpSimulator(ssl_context=c.server_context()),
        _cert_destination,
        completion,
        "confirmations",
        {"lot": " "},
        "lot: must not be empty",
        bad_credentials=_stranger,
    ),
    Profile(
        "rest-wms",
        _wms,
        lambda url, c: {
            "name": "wms",
            "system": "wms",
            "url": f"{url}/api/v1/goods-receipts",
            "constants": {"source_location": "LINE1-OUT"},
        },
        completion,
        "goods-receipts",
        {"lot": ""},
        "lot: must not be empty",
        check=lambda booked, doc: (
            booked["quantity"] == doc.body["good"] and booked["source_location"] == "LINE1-OUT"
        ),
    ),
    Profile(
        "rest-qms-inspection",
        _qms,
        lambda url, c: {"name": "qms", "system": "qms", "url": f"{url}/api/v1/inspection-results"},
        lot_result,
        "inspection-results",
        {"decision": "maybe"},
        "decision: must be one of accept, reject, hold",
        check=lambda booked, doc: booked["characteristics"][0]["name"] == "diameter",
    ),
    Profile(
        "rest-qms-nonconformance",
        _qms,
        lambda url, c: {
            "name": "qms",
            "system": "qms",
            "url": f"{url}/api/v1/inspection-results",
            "endpoints": {"spc_alarm": f"{url}/api/v1/nonconformances"},
        },
        spc_alarm,
        "nonconformances",
        {"rule": 9},
        "rule: must be between 1 and 8",
    ),
    Profile(
        "sap-s4hana",
        _erp,
        lambda url, c: {
            "name": "sap",
            "profile": "sap_s4hana",
            "url": url + SAP_ROOT,
            "auth": SAP_AUTH,
            "plant": "1010",
            "storage_location": "FG01",
            "timezone": "Europe/Berlin",
        },
        completion,
        SAP_COLLECTION,
        {"lot": ""},
        "is handled in batches: enter a batch",
        bad_credentials=_wrong_auth,
        check=_check_sap,
    ),
    Profile(
        "erpnext-manufacture",
        _erp,
        lambda url, c: {
            "name": "erpnext",
            "profile": "erpnext",
            "url": url,
            **ERPNEXT,
            "from_warehouse": "Work In Progress - EM",
            "to_warehouse": "Finished Goods - EM",
        },
        completion,
        ERPNEXT_COLLECTION,
        {"lot": ""},
        "Batch No is mandatory for Item FG-4711",
        bad_credentials=lambda config: {**config, "api_secret": "wrong"},
        check=_check_stock_entry,
    ),
    Profile(
        "erpnext-manufacture-finished-goods-only",
        _erp,
        lambda url, c: {
            "name": "erpnext",
            "profile": "erpnext",
            "url": url,
            **ERPNEXT,
            "to_warehouse": "Finished Goods - EM",
            "use_work_order": False,
        },
        completion,
        ERPNEXT_COLLECTION,
        {"material": ""},
        "Row #1: Item Code is mandatory",
        check=_check_stock_entry,
    ),
    Profile(
        "erpnext-wms-transfer",
        _wms,
        lambda url, c: {
            "name": "wms",
            "profile": "erpnext",
            "system": "wms",
            "url": url,
            **ERPNEXT,
            "from_warehouse": "Line Output - EM",
            "to_warehouse": "Stores - EM",
        },
        completion,
        ERPNEXT_COLLECTION,
        {"material": ""},
        "Row #1: Item Code is mandatory",
        check=lambda booked, doc: booked["items"][0]["s_warehouse"] == "Line Output - EM",
    ),
    Profile(
        "b2mml-lot-result",
        _qms,
        lambda url, c: {"name": "qms", "profile": "b2mml", "url": f"{url}/b2mml"},
        lot_result,
        B2MML_COLLECTION,
        {"lot": ""},
        "MaterialLot: ID is required",
        check=lambda booked, doc: (
            booked["lot"] == doc.body["lot"] and booked["characteristics"][0]["name"] == "diameter"
        ),
    ),
    Profile(
        "b2mml-spc-alarm",
        _qms,
        lambda url, c: {"name": "qms", "profile": "b2mml", "url": f"{url}/b2mml"},
        spc_alarm,
        B2MML_COLLECTION,
        None,
        check=lambda booked, doc: booked["category"] == "Nonconformance",
    ),
    Profile(
        "b2mml-completion",
        _qms,
        lambda url, c: {"name": "erp", "profile": "b2mml", "system": "erp", "url": f"{url}/b2mml"},
        completion,
        B2MML_COLLECTION,
        {"lot": ""},
        "MaterialActual: MaterialLotID is required",
        check=lambda booked, doc: booked["quantity"] == doc.body["good"],
    ),
]
