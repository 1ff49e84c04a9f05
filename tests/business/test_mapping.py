"""The field mapping language: renames, units, date/time formats and zones, constants, value
tables, nested targets, and its checks against the document kinds at start-up."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.destinations import FieldSpec, KindMapping
from gateway.config.load import load_config_text
from gateway.connectors.defaults import accepted_kinds, compile_mappings
from gateway.connectors.mapping import MappingError, compile_mapping, conversion
from gateway.errors import ConfigError
from tests.business.documents import completion, lot_result, spc_alarm

HEAD = "gateway: {id: gw, location: {enterprise: a, site: b, area: c, line: d}}\ndestinations:\n"


def spec(data: Any) -> FieldSpec:
    return FieldSpec.model_validate(data)


def mapping(fields: dict[str, Any], kind: str = "completion", tz: str = "UTC") -> Any:
    user = KindMapping.model_validate({"fields": fields, "replace": True})
    return compile_mapping(kind, {}, user, timezone=tz)


def test_renames_constants_tables_and_paths() -> None:
    compiled = mapping(
        {
            "qty": "good",
            "uom": {"from": "unit", "values": {"EA": "PC"}},
            "final_flag": {"from": "final", "values": {True: "X", False: ""}},
            "plant": {"value": "1010"},
            "items[0].batch": "lot",
            "items[0].order": {"from": "order", "zero_pad": 12},
            "note": {"from": "material", "max_length": 4},
            "missing": {"from": "handling_unit"},
            "fallback": {"from": "handling_unit", "default": "none"},
        }
    )
    body = compiled.apply(completion(good=480, final=True).body)
    assert body == {
        "qty": 480,
        "uom": "PC",
        "final_flag": "X",
        "plant": "1010",
        "items": [{"batch": "L100012301", "order": "000001000123"}],
        "note": "FG-4",
        "fallback": "none",
    }


def test_units_factors_rounding_and_types() -> None:
    compiled = mapping(
        {
            "weight_kg": {"from": "good", "factor": 0.25, "round": 2},
            "dozens": {"from": "good", "convert": {"from": "EA", "to": "DZ"}, "round": 1},
            "quantity": {"from": "good", "type": "decimal", "round": 3},
            "count_text": {"from": "good", "type": "string"},
        }
    )
    body = compiled.apply(completion(good=30).body)
    assert body == {
        "weight_kg": 7.5,
        "dozens": 2.5,
        "quantity": "30.000",
        "count_text": "30",
    }
    assert conversion("mm", "in")(25.4) == pytest.approx(1.0)
    assert conversion("°C", "F")(100.0) == pytest.approx(212.0)
    assert conversion("bar", "psi")(1.0) == pytest.approx(14.5038, rel=1e-4)


def test_date_and_time_formats_in_a_time_zone() -> None:
    fields = {
        "iso": {"from": "end", "format": "iso"},
        "local": {"from": "end", "format": "iso_local"},
        "date": {"from": "end", "format": "date"},
        "time": {"from": "end", "format": "time"},
        "odata_date": {"from": "end", "format": "odata_date"},
        "odata_time": {"from": "end", "format": "odata_time"},
        "odata_datetime": {"from": "end", "format": "odata_datetime"},
        "epoch": {"from": "end", "format": "epoch_ms"},
        "german": {"from": "end", "format": "%d.%m.%Y %H:%M"},
        "utc_time": {"from": "end", "format": "time", "timezone": "UTC"},
    }
    body = mapping(fields, tz="Europe/Berlin").apply(
        completion(end="2026-05-04T22:14:30.000Z").body
    )
    assert body == {
        "iso": "2026-05-05T00:14:30.000+02:00",
        "local": "2026-05-05T00:14:30",
        "date": "2026-05-05",  # the plant's date, not UTC's
        "time": "00:14:30",
        "odata_date": "/Date(1777939200000)/",  # 2026-05-05T00:00:00Z
        "odata_time": "PT00H14M30S",
        "odata_datetime": "/Date(1777940070000)/",  # 2026-05-05T00:14:30 as if UTC
        "epoch": 1777932870000,
        "german": "05.05.2026 00:14",
        "utc_time": "22:14:30",
    }


def test_list_items_are_mapped_each() -> None:
    compiled = mapping(
        {"tests": {"from": "characteristics", "items": {"feature": "name", "avg": "mean"}}},
        kind="lot_result",
    )
    body = compiled.apply(lot_result().body)
    assert body == {"tests": [{"feature": "diameter", "avg": 10.001}]}


def test_a_value_that_cannot_be_converted_is_a_mapping_error() -> None:
    compiled = mapping({"ref": {"from": "lot", "format": "guid"}}, kind="completion")
    with pytest.raises(MappingError, match="field ref \\(from lot\\): 'L1' is not 32 hex"):
        compiled.apply(completion(lot="L1").body)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"q": {"from": "goood"}}, "fields.q.from: unknown field 'goood'"),
        ({"q": {"from": "start", "factor": 2}}, "need a number, not timestamp"),
        ({"q": {"from": "good", "format": "date"}}, "format: date needs a timestamp, not int"),
        ({"q": {"from": "lot", "items": {"a": "b"}}}, "items: needs a list field, not str"),
        ({"a": "order", "a.b": "lot"}, "a is a value and also holds other fields"),
        ({"bad path!": "order"}, "is not a field name or path"),
    ],
)
def test_invalid_mappings_name_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(MappingError) as caught:
        mapping(fields)
    assert problem in str(caught.value)


def test_config_errors_name_the_destination_and_the_line() -> None:
    text = HEAD + (
        "  - name: erp\n"
        "    system: erp\n"
        "    url: http://erp/api\n"
        "    mapping:\n"
        "      completion:\n"
        "        fields:\n"
        "          qty: {from: goood}\n"
        "          when: {from: end, format: nonsense}\n"
        "          kg: {from: good, convert: {from: mm, to: kg}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    message = str(caught.value)
    assert "destinations[0].mapping.completion.fields.when (line 10): unknown format" in message
    assert "destinations[0].mapping.completion.fields.kg (line 11): cannot convert mm" in message


def test_unknown_source_fields_are_caught_at_load() -> None:
    text = HEAD + (
        "  - name: wms\n    system: wms\n    url: http://wms/api\n"
        "    mapping: {completion: {fields: {qty: goood}}, lot_result: {fields: {x: lot}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    message = str(caught.value)
    assert "destinations[0] (line 3): 2 problems" in message
    assert "mapping.lot_result: this destination does not receive 'lot_result'" in message
    assert "mapping.completion.fields.qty.from: unknown field 'goood'" in message


PROFILES = (
    HEAD
    + """
  - {name: erp, system: erp, url: "http://e/c"}
  - {name: erp-field, system: erp, url: "http://e/c", idempotency: {mode: field}}
  - {name: wms, system: wms, url: "http://w/gr"}
  - {name: qms, system: qms, url: "http://q/ir", endpoints: {spc_alarm: "http://q/nc"}}
  - {name: sap, profile: sap_s4hana, url: "http://s/x", auth: {type: basic, username: u,
     password: p}, plant: "1010", storage_location: FG01}
  - {name: next, profile: erpnext, url: "http://n", api_key: k, api_secret: s, company: C,
     to_warehouse: FG, from_warehouse: WIP}
  - {name: next-wms, profile: erpnext, system: wms, url: "http://n", api_key: k, api_secret: s,
     company: C, to_warehouse: Stores, from_warehouse: Line}
  - {name: b2, profile: b2mml, url: "http://q/b2mml"}
  - {name: b2-erp, profile: b2mml, system: erp, url: "http://q/b2mml"}
"""
)


def test_every_profile_mapping_compiles_against_the_declared_kinds() -> None:
    """Catches a document field renamed by the MES engine that a profile still maps."""
    config = load_config_text(PROFILES)
    samples = {"completion": completion(), "lot_result": lot_result(), "spc_alarm": spc_alarm()}
    for destination in config.destinations:
        compiled = compile_mappings(destination)
        assert set(compiled) == set(accepted_kinds(destination))
        for kind, mapped in compiled.items():
            assert mapped.apply(samples[kind].body), (destination.name, kind)
