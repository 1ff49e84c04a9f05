"""One conformance suite that every connector profile passes against the simulators.

For each profile: the document is booked once with the mapped fields; a resend (after a crash
that lost the "delivered" record, or after a lost answer) books nothing new; a document the
target refuses is not retryable and carries the target's reason; an unavailable, failing,
slow or misconfigured target is retryable.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from gateway.connectors.base import PreviewConnector
from gateway.errors import DeliveryError
from simulators.business import BusinessSimulator
from tests.business.certs import Certificates
from tests.business.profiles import PROFILES, Profile, build, validate


def _each(profiles: list[Profile]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("profile", profiles, ids=[p.id for p in profiles])


every_profile = _each(PROFILES)
refusing = _each([p for p in PROFILES if p.refuse is not None])
with_credentials = _each([p for p in PROFILES if p.bad_credentials is not None])


@pytest.fixture
async def simulator(profile: Profile, certs: Certificates) -> AsyncIterator[BusinessSimulator]:
    async with profile.simulator(certs) as sim:
        yield sim


def booked(sim: BusinessSimulator, profile: Profile) -> list[str]:
    return [b.idempotency_key for b in sim.ledger.by_collection(profile.collection)]


async def deliver(profile: Profile, sim: BusinessSimulator, certs: Certificates, doc: object,
                  **changes: object) -> str:  # fmt: skip
    connector = build(profile.config(sim.url, certs, **changes))
    try:
        return await connector.deliver(doc)  # type: ignore[arg-type]
    finally:
        await connector.close()


@every_profile
async def test_delivers_once_with_the_mapped_fields(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    doc = profile.document()
    reference = await deliver(profile, simulator, certs, doc)
    assert reference
    assert booked(simulator, profile) == [doc.key]
    (booking,) = simulator.ledger.by_collection(profile.collection)
    assert profile.check(booking.document, doc) is not False


@every_profile
async def test_what_is_sent_is_what_the_preview_shows(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    config = profile.config(simulator.url, certs)
    connector = build(config)
    assert isinstance(connector, PreviewConnector)
    doc = profile.document()
    rendered = connector.render(doc)
    assert rendered is not None
    await connector.deliver(doc)
    await connector.close()
    (booking,) = simulator.ledger.by_collection(profile.collection)
    if rendered.content_type == "application/xml":
        assert booking.document["xml"] == rendered.body
    elif config.profile == "erpnext" and config.use_work_order and config.system == "erp":
        preview = json.loads(rendered.body)
        finished = next(i for i in booking.document["items"] if i.get("is_finished_item"))
        assert finished == {**finished, **preview["items"][0]}
    else:
        preview = json.loads(rendered.body)
        assert {k: booking.document[k] for k in preview} == preview


@every_profile
async def test_resend_after_the_record_was_lost_books_nothing_new(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    """A crash between "sent" and "recorded as sent": a new process sends it again."""
    doc = profile.document()
    first = await deliver(profile, simulator, certs, doc)
    again = await deliver(profile, simulator, certs, doc)  # a new connector: nothing remembered
    assert booked(simulator, profile) == [doc.key]
    assert first.split(" ")[0].removeprefix("already exists: ") in again or "already" in again


@every_profile
async def test_lost_answer_then_resend_books_once(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    doc = profile.document()
    simulator.faults.drop_rate = 1.0  # requests are processed, answers never arrive
    with pytest.raises(DeliveryError) as caught:
        await deliver(profile, simulator, certs, doc)
    assert caught.value.retryable
    simulator.faults.drop_rate = 0.0
    await deliver(profile, simulator, certs, doc)
    await deliver(profile, simulator, certs, doc)
    assert booked(simulator, profile) == [doc.key]


@refusing
async def test_refused_document_is_not_retried_and_says_why(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    assert profile.refuse is not None
    doc = profile.document(**profile.refuse)
    with pytest.raises(DeliveryError) as caught:
        await deliver(profile, simulator, certs, doc)
    assert not caught.value.retryable
    assert profile.refusal in str(caught.value)
    assert booked(simulator, profile) == []


@every_profile
async def test_failing_or_unreachable_target_is_retryable(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    doc = profile.document()
    simulator.faults.error_rate = 1.0  # 503
    with pytest.raises(DeliveryError) as caught:
        await deliver(profile, simulator, certs, doc)
    assert caught.value.retryable
    assert caught.value.status == 503
    simulator.faults.error_rate = 0.0
    simulator.faults.down_for(5.0)
    with pytest.raises(DeliveryError) as caught:
        await deliver(profile, simulator, certs, doc)
    assert caught.value.retryable
    assert booked(simulator, profile) == []


@every_profile
async def test_slow_target_times_out_retryably(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    simulator.faults.latency_ms = 600
    with pytest.raises(DeliveryError, match="no answer within the timeout") as caught:
        await deliver(profile, simulator, certs, profile.document(), timeout=0.2)
    assert caught.value.retryable


@with_credentials
async def test_wrong_credentials_wait_instead_of_dead_letters(
    profile: Profile, simulator: BusinessSimulator, certs: Certificates
) -> None:
    assert profile.bad_credentials is not None
    config = profile.bad_credentials(profile.destination(simulator.url, certs))
    connector = build(validate(config))
    with pytest.raises(DeliveryError) as caught:
        await connector.deliver(profile.document())
    await connector.close()
    assert caught.value.retryable
    assert booked(simulator, profile) == []
