"""Configuration models of the business destinations (ERP, WMS, QMS).

A destination is one business system reached through one *profile* (how it is spoken to):

``rest``
    generic REST/JSON: URL, method, headers, auth (bearer, basic, API key, client certificate),
    idempotency by header, by an external-reference field or by a look-up before posting.
``sap_s4hana``
    SAP S/4HANA OData V2 ``API_PROD_ORDER_CONFIRMATION_2_SRV`` (CSRF token and session cookies).
``erpnext``
    ERPNext / Frappe REST (``Authorization: token key:secret``), Stock Entry documents.
``b2mml``
    ISA-95 messages as B2MML-style XML over HTTP.

Every destination has a field mapping per document kind (see :mod:`gateway.connectors.mapping`),
a retry policy, a circuit breaker and a sync strategy; all are validated when the config loads,
the mapping against the document kinds declared in :data:`gateway.documents.KINDS`.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "ApiKeyAuth",
    "Auth",
    "B2mmlDestinationConfig",
    "BasicAuth",
    "BearerAuth",
    "BreakerPolicy",
    "ClientCertificateAuth",
    "DestinationConfig",
    "ErpNextDestinationConfig",
    "FieldSpec",
    "IdempotencyConfig",
    "KindMapping",
    "RestDestinationConfig",
    "RetryPolicy",
    "SapDestinationConfig",
    "SyncMode",
    "SyncPolicy",
    "System",
    "TlsConfig",
    "UnitConversion",
]

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, SecretStr, Tag, model_validator

from gateway.config.common import ConfigModel, Name, PositiveSeconds

Scalar = str | int | float | bool
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s]+$")]


class System(StrEnum):
    """Which business system a destination is; decides which documents it receives by default."""

    ERP = "erp"
    """Production order confirmations (from completions)."""
    WMS = "wms"
    """Goods receipts / put-away requests of finished lots (from completions)."""
    QMS = "qms"
    """Inspection results per lot (from lot results) and nonconformances (from SPC alarms)."""


# --- authentication and TLS -----------------------------------------------------------------


def _check_file(path: str, what: str) -> str:
    if not Path(path).expanduser().is_file():
        raise ValueError(f"{what} {path!r} does not exist or is not a file")
    return path


class BearerAuth(ConfigModel):
    """``Authorization: Bearer <token>``."""

    type: Literal["bearer"]
    token: SecretStr


class BasicAuth(ConfigModel):
    """HTTP basic authentication."""

    type: Literal["basic"]
    username: str
    password: SecretStr


class ApiKeyAuth(ConfigModel):
    """An API key in a header of its own."""

    type: Literal["api_key"]
    header: str = "X-API-Key"
    key: SecretStr


class ClientCertificateAuth(ConfigModel):
    """TLS client certificate (mutual TLS); the URL must be ``https://``."""

    type: Literal["client_certificate"]
    cert: str
    """PEM file with the client certificate (and the key, when `key` is not set)."""
    key: str | None = None
    """PEM file with the private key."""
    password: SecretStr | None = None
    """Password of an encrypted private key."""

    @model_validator(mode="after")
    def _files(self) -> ClientCertificateAuth:
        _check_file(self.cert, "certificate file")
        if self.key is not None:
            _check_file(self.key, "key file")
        return self


Auth = Annotated[
    BearerAuth | BasicAuth | ApiKeyAuth | ClientCertificateAuth, Field(discriminator="type")
]


class TlsConfig(ConfigModel):
    """How the server's certificate is checked (``https://`` URLs)."""

    ca: str | None = None
    """PEM file of the CA that signed the server's certificate (system CAs when not set)."""
    verify: bool = True
    """Turn certificate checks off only on a test bench."""

    @model_validator(mode="after")
    def _files(self) -> TlsConfig:
        if self.ca is not None:
            _check_file(self.ca, "CA file")
        return self


# --- delivery policies -------------------------------------------------------------------------


class RetryPolicy(ConfigModel):
    """Exponential backoff with jitter between delivery attempts of one document."""

    initial: PositiveSeconds = 1.0
    """Delay before the first retry."""
    maximum: PositiveSeconds = 60.0
    """Cap on the delay between retries."""
    multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0

    @model_validator(mode="after")
    def _order(self) -> RetryPolicy:
        if self.maximum < self.initial:
            raise ValueError("maximum must be >= initial")
        return self


class BreakerPolicy(ConfigModel):
    """The circuit breaker of a destination: stop sending while the target is down."""

    failures: Annotated[int, Field(ge=1, le=1000)] = 5
    """Consecutive retryable failures (timeouts, 5xx, 429, refused connections) that open it."""
    open_for: PositiveSeconds = 5.0
    """Seconds it stays open before one probe is sent; doubles after each failed probe."""
    max_open_for: PositiveSeconds = 120.0
    """Cap on the open time (a Retry-After from the target may ask for longer, up to 1 h)."""


class SyncMode(StrEnum):
    IMMEDIATE = "immediate"
    """Each document as soon as it is stored."""
    BATCHED = "batched"
    """Several documents per request (every `batch_size` documents or `max_wait` seconds)."""
    SCHEDULED = "scheduled"
    """Held until the set times (`at`), e.g. the shift ends; then everything stored before."""


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class SyncPolicy(ConfigModel):
    """When documents are sent."""

    mode: SyncMode = SyncMode.IMMEDIATE
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Batched (and scheduled, where the profile takes arrays): documents per request."""
    max_wait: PositiveSeconds = 5.0
    """Batched: the longest a document waits for its batch to fill."""
    at: list[str] = Field(default_factory=list)
    """Scheduled: local times ``HH:MM`` when the backlog is released (``["06:00", "14:00"]``)."""
    timezone: str = "UTC"
    """Scheduled: the time zone of `at` (IANA name such as ``Europe/Berlin``)."""

    @model_validator(mode="after")
    def _check(self) -> SyncPolicy:
        for index, moment in enumerate(self.at):
            if not _HHMM.match(moment):
                raise ValueError(f"at[{index}]: {moment!r} is not a time HH:MM (00:00 to 23:59)")
        if self.mode is SyncMode.SCHEDULED and not self.at:
            raise ValueError("mode scheduled needs `at` (for example at: ['06:00', '14:00'])")
        _check_timezone(self.timezone)
        return self


def _check_timezone(name: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from None
    return name


# --- the mapping language ----------------------------------------------------------------------


class UnitConversion(ConfigModel):
    """Convert a number between units of measure (``{from: mm, to: in}``)."""

    from_: str = Field(alias="from")
    to: str


class FieldSpec(ConfigModel):
    """How one target field gets its value. ``Target: source`` is short for ``{from: source}``;
    ``Target: null`` removes a field the profile would send."""

    from_: str | None = Field(None, alias="from")
    """Our document's field (``good``, ``end``, ``idempotency_key``...)."""
    value: Scalar | None = None
    """A constant."""
    default: Scalar | None = None
    """Used when the source field is missing or null."""
    values: dict[str, Scalar] | None = None
    """Replace values by a table (``{EA: PC}``; booleans as ``"true"``/``"false"``)."""
    convert: UnitConversion | None = None
    """Unit-of-measure conversion of a number."""
    factor: float | None = None
    """Multiply a number (after `convert`)."""
    offset: float | None = None
    """Add to a number (after `factor`)."""
    round: Annotated[int, Field(ge=0, le=12)] | None = None
    """Round a number to this many decimals."""
    format: str | None = None
    """Timestamps: ``iso``, ``iso_local``, ``date``, ``time``, ``odata_date``, ``odata_datetime``,
    ``odata_time``, ``epoch_s``, ``epoch_ms`` or a strftime pattern; strings: ``guid``."""
    timezone: str | None = None
    """Time zone for `format` (the destination's `timezone` when not set)."""
    type: Literal["string", "integer", "number", "boolean", "decimal"] | None = None
    """Type of the sent value; ``decimal`` is a string with `round` decimals (default 3)."""
    max_length: Annotated[int, Field(ge=1)] | None = None
    """Cut strings longer than this."""
    zero_pad: Annotated[int, Field(ge=1, le=64)] | None = None
    """Left-pad digit strings with zeros to this width (SAP order numbers)."""
    items: dict[str, FieldSpec] | None = None
    """For a list field: the mapping applied to each of its items."""
    drop: bool = False
    """Remove this target field (what ``Target: null`` means)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data is None:
            return {"drop": True}
        if isinstance(data, str):
            return {"from": data}
        if isinstance(data, dict) and isinstance(data.get("values"), dict):
            data = {**data, "values": {_table_key(k): v for k, v in data["values"].items()}}
        return data

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if self.drop:
            return self
        if (self.from_ is None) == (self.value is None):
            raise ValueError("give exactly one of `from` (a document field) or `value` (constant)")
        if self.timezone is not None:
            _check_timezone(self.timezone)
        if self.format is not None:
            from gateway.connectors.mapping import check_format

            check_format(self.format)
        if self.convert is not None:
            from gateway.connectors.mapping import conversion

            conversion(self.convert.from_, self.convert.to)
        return self


def _table_key(value: Any) -> Any:
    """Keys of a `values` table as text: YAML's ``true:`` is the key ``"true"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


def _field_spec(data: Any) -> Any:
    if data is None:
        return {"drop": True}
    if isinstance(data, str):
        return {"from": data}
    return data


FieldEntry = Annotated[FieldSpec, BeforeValidator(_field_spec)]


class KindMapping(ConfigModel):
    """The mapping of one document kind for one destination."""

    fields: dict[str, FieldEntry] = Field(default_factory=dict)
    """Target field → how it gets its value. Dotted paths and ``[n]`` build nested objects
    (``items[0].batch_no``). Merged over the profile's own mapping."""
    replace: bool = False
    """Send only `fields` (ignore the profile's mapping)."""


class AlreadyExists(ConfigModel):
    """How the target says "this document exists already" (counted as delivered)."""

    statuses: list[Annotated[int, Field(ge=200, le=599)]] = Field(default_factory=lambda: [409])
    body_contains: list[str] = Field(default_factory=list)
    """Texts of an error body (case-insensitive) that mean a duplicate, e.g. ``already exists``."""


class IdempotencyConfig(ConfigModel):
    """How the generic REST profile makes a resend harmless."""

    mode: Literal["header", "field", "lookup"] = "header"
    """``header``: the key in a header; ``field``: the key in a body field, the target refuses a
    duplicate (`already_exists`); ``lookup``: the key in a body field and a GET before each POST."""
    header: str = "Idempotency-Key"
    field: str = "external_reference"
    """Body field carrying the key (modes field and lookup)."""
    lookup_url: HttpUrl | None = None
    """Lookup mode: GET URL with ``{key}`` (``https://erp/api/confirmations?ref={key}``); a 200
    with a non-empty JSON list (or ``items``/``data``/``results`` list) means it exists."""

    @model_validator(mode="after")
    def _check(self) -> IdempotencyConfig:
        if self.mode == "lookup":
            if self.lookup_url is None:
                raise ValueError("mode lookup needs lookup_url (with {key})")
            if "{key}" not in self.lookup_url:
                raise ValueError("lookup_url must contain {key}")
        return self


# --- destinations --------------------------------------------------------------------------


class _Destination(ConfigModel):
    name: Name
    timeout: PositiveSeconds = 10.0
    """Seconds for one request, connection included."""
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    """Requests in flight at once (documents of one order always go one after another)."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    sync: SyncPolicy = Field(default_factory=SyncPolicy)
    mapping: dict[str, KindMapping] = Field(default_factory=dict)
    """Per document kind (``completion``, ``lot_result``...): field renames, units, formats."""
    on_dead_letter: Literal["hold_order", "continue"] = "hold_order"
    """A refused document stops the later documents of its order (``hold_order``) until it is
    retried or dropped, so the target never sees them out of sequence; or they go on."""
    timezone: str = "UTC"
    """Time zone for dates and times the target expects in local time (IANA name)."""

    @model_validator(mode="after")
    def _check_destination(self) -> _Destination:
        _check_timezone(self.timezone)
        from gateway.connectors.defaults import check_destination

        problems = check_destination(self)
        if len(problems) == 1:
            raise ValueError(problems[0])
        if problems:
            raise ValueError(f"{len(problems)} problems:\n    " + "\n    ".join(problems))
        return self


class RestDestinationConfig(_Destination):
    """A business system reached over HTTP with JSON bodies."""

    profile: Literal["rest"] = "rest"
    system: System
    url: HttpUrl
    """Endpoint receiving the system's main documents (completions; lot results for QMS)."""
    endpoints: dict[str, HttpUrl] = Field(default_factory=dict)
    """Further document kinds and where they go (``spc_alarm: https://qms/api/nonconformances``)."""
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Auth | None = None
    tls: TlsConfig | None = None
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig)
    already_exists: AlreadyExists = Field(default_factory=AlreadyExists)
    batch_url: HttpUrl | None = None
    """Batched sync: endpoint taking ``{"documents": [...]}`` and answering per-item results."""
    constants: dict[str, Scalar] = Field(default_factory=dict)
    """Fields added to every body (``source_location: LINE1-OUT``)."""

    @model_validator(mode="after")
    def _check_rest(self) -> RestDestinationConfig:
        if isinstance(self.auth, ClientCertificateAuth) and not self.url.startswith("https://"):
            raise ValueError("a client certificate needs an https:// url")
        if self.sync.mode is SyncMode.BATCHED and self.batch_url is None:
            raise ValueError("sync mode batched needs batch_url (an endpoint that takes arrays)")
        return self


class SapDestinationConfig(_Destination):
    """SAP S/4HANA production order confirmations over OData V2."""

    profile: Literal["sap_s4hana"]
    system: Literal[System.ERP] = System.ERP
    url: HttpUrl
    """Service root: ``https://host/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV``."""
    sap_client: Annotated[str, Field(pattern=r"^\d{3}$")] | None = None
    """The SAP client (``sap-client`` query parameter), e.g. ``100``."""
    auth: BasicAuth | BearerAuth | ClientCertificateAuth
    tls: TlsConfig | None = None
    plant: Annotated[str, Field(min_length=1, max_length=4)]
    goods_receipt: bool = True
    """Post the finished lot's goods receipt (movement 101, with the batch) with the
    confirmation; when false SAP applies its own automatic goods receipt, if set up."""
    storage_location: Annotated[str, Field(min_length=1, max_length=4)] | None = None
    """Storage location of the goods receipt (required with goods_receipt)."""
    movement_type: Annotated[str, Field(pattern=r"^\d{3}$")] = "101"

    @model_validator(mode="after")
    def _check_sap(self) -> SapDestinationConfig:
        if self.goods_receipt and self.storage_location is None:
            raise ValueError("goods_receipt needs storage_location (or set goods_receipt: false)")
        if self.sync.mode is SyncMode.BATCHED:
            raise ValueError("sync mode batched is not available for sap_s4hana")
        return self


class ErpNextDestinationConfig(_Destination):
    """ERPNext (Frappe) Stock Entries: Manufacture (ERP) or a transfer/receipt (WMS)."""

    profile: Literal["erpnext"]
    system: Literal[System.ERP, System.WMS] = System.ERP
    url: HttpUrl
    """The site, e.g. ``https://erp.example.com``."""
    api_key: str
    api_secret: SecretStr
    tls: TlsConfig | None = None
    company: str
    stock_entry_type: str | None = None
    """``Manufacture`` (erp) or ``Material Transfer`` (wms) when not set."""
    from_warehouse: str | None = None
    """erp: work-in-progress warehouse; wms: where the lot waits (the line's output)."""
    to_warehouse: str
    """erp: finished-goods warehouse; wms: the storage warehouse."""
    use_work_order: bool = True
    """erp: build the entry with ERPNext's ``make_stock_entry`` of the work order (raw
    materials back-flushed by the BOM); false: post only the finished-goods row."""
    submit: bool = True
    """Submit the entry (``docstatus`` 1); false leaves drafts for a person to check."""
    reference_field: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")] = "custom_mes_event_id"
    """Custom field (make it unique) holding our idempotency key, looked up before posting."""

    @property
    def entry_type(self) -> str:
        if self.stock_entry_type:
            return self.stock_entry_type
        return "Manufacture" if self.system is System.ERP else "Material Transfer"

    @model_validator(mode="after")
    def _check_erpnext(self) -> ErpNextDestinationConfig:
        if self.sync.mode is SyncMode.BATCHED:
            raise ValueError("sync mode batched is not available for erpnext")
        transfer = self.system is System.WMS and self.entry_type == "Material Transfer"
        if transfer and not self.from_warehouse:
            raise ValueError("a Material Transfer needs from_warehouse")
        return self


class B2mmlDestinationConfig(_Destination):
    """ISA-95 messages (B2MML-style XML BODs) posted over HTTP."""

    profile: Literal["b2mml"]
    system: Literal[System.QMS, System.ERP] = System.QMS
    url: HttpUrl
    """Endpoint receiving the BODs."""
    documents: list[str] = Field(default_factory=list)
    """Document kinds to send; by system when empty (qms: lot_result and spc_alarm; erp:
    completion)."""
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Auth | None = None
    tls: TlsConfig | None = None
    sender: str | None = None
    """``ApplicationArea/Sender/LogicalID``; the gateway id when not set."""

    @model_validator(mode="after")
    def _check_b2mml(self) -> B2mmlDestinationConfig:
        if self.sync.mode is SyncMode.BATCHED:
            raise ValueError("sync mode batched is not available for b2mml (one BOD per document)")
        return self


def _profile(value: Any) -> str:
    """The destination's profile; ``rest`` when the key is left out."""
    if isinstance(value, dict):
        return str(value.get("profile", "rest"))
    return str(getattr(value, "profile", "rest"))


DestinationConfig = Annotated[
    Annotated[RestDestinationConfig, Tag("rest")]
    | Annotated[SapDestinationConfig, Tag("sap_s4hana")]
    | Annotated[ErpNextDestinationConfig, Tag("erpnext")]
    | Annotated[B2mmlDestinationConfig, Tag("b2mml")],
    Discriminator(_profile),
]
