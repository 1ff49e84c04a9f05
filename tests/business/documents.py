"""Documents as the MES engine emits them, for the business tests."""

from __future__ import annotations

from typing import Any

from gateway.documents import Document, idempotency_key


def completion(n: int = 1, **fields: Any) -> Document:
    key = idempotency_key("test", "completion", n)
    body: dict[str, Any] = {
        "gateway": "gw",
        "machine": "M1",
        "work_center": "WC1",
        "order": "1000123",
        "operation": "0010",
        "material": "FG-4711",
        "lot": "L100012301",
        "good": 480,
        "scrap": 2,
        "rework": 0,
        "unit": "EA",
        "start": "2026-05-04T08:00:00.000Z",
        "end": "2026-05-04T10:14:30.000Z",
        "sequence": n,
        "final": False,
        "trigger": "lot_change",
        "shift": "early",
        "idempotency_key": key,
    }
    body.update(fields)
    return Document("completion", key, str(body["machine"]), body, ordering_key=body["order"])


def lot_result(n: int = 1, **fields: Any) -> Document:
    key = idempotency_key("test", "lot", n)
    body: dict[str, Any] = {
        "gateway": "gw",
        "machine": "M1",
        "lot": "L100012301",
        "order": "1000123",
        "material": "FG-4711",
        "start": "2026-05-04T08:00:00.000Z",
        "end": "2026-05-04T10:14:30.000Z",
        "characteristics": [
            {
                "name": "diameter",
                "unit": "mm",
                "n": 100,
                "mean": 10.001,
                "std": 0.008,
                "min": 9.98,
                "max": 10.02,
                "out_of_spec": 0,
                "lsl": 9.95,
                "usl": 10.05,
                "nominal": 10.0,
                "cpk": 1.5,
                "ppk": 1.4,
            },
        ],
        "decision": "accept",
        "reasons": [],
        "idempotency_key": key,
    }
    body.update(fields)
    return Document("lot_result", key, str(body["machine"]), body, ordering_key=body["lot"])


def spc_alarm(n: int = 1, **fields: Any) -> Document:
    key = idempotency_key("test", "alarm", n)
    body: dict[str, Any] = {
        "gateway": "gw",
        "machine": "M1",
        "characteristic": "diameter",
        "unit": "mm",
        "rule": 2,
        "rule_name": "nine points on one side",
        "point": 57,
        "value": 10.021,
        "cl": 10.0,
        "ucl": 10.03,
        "lcl": 9.97,
        "sigma": 0.01,
        "subgroup": 1,
        "time": "2026-05-04T09:00:00.000Z",
        "lot": "L100012301",
        "order": "1000123",
        "material": "FG-4711",
        "nominal": 10.0,
        "lsl": 9.95,
        "usl": 10.05,
        "idempotency_key": key,
    }
    body.update(fields)
    return Document("spc_alarm", key, "M1", body, ordering_key=f"M1/{body['characteristic']}")
