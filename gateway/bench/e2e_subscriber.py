"""The subscriber of ``bench e2e``, run in its own process so that it costs the gateway nothing:
counts the values inside batched payloads during a window and the age of each message (receipt
time minus the payload's source timestamp).

``python -m gateway.bench.e2e_subscriber PORT TOPIC WARMUP_S WINDOW_S`` prints one JSON object
when the window ends.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from gateway.bench.process import percentile
from gateway.outputs.mqtt_client import AsyncMqttClient, MqttSettings


async def _main(port: int, topic: str, warmup: float, window: float) -> dict[str, float]:
    start = time.time() + warmup
    end = start + window
    values = messages = 0
    ages: list[float] = []

    def on_message(_topic: str, payload: bytes) -> None:
        nonlocal values, messages
        now = time.time()
        if not start <= now < end:
            return
        body = orjson.loads(payload)
        values += len(body["values"])
        messages += 1
        ages.append(now * 1000 - body["ts"])

    client = AsyncMqttClient(
        MqttSettings("127.0.0.1", port, "bench-e2e-subscriber"), "subscriber", on_message
    )
    await client.connect()
    client.subscribe(topic, 1)
    await asyncio.sleep(max(0.0, end - time.time()) + 0.2)
    await client.close()
    return {
        "values_per_s": values / window,
        "messages_per_s": messages / window,
        "age_p50_ms": percentile(ages, 50),
        "age_p95_ms": percentile(ages, 95),
        "age_max_ms": max(ages) if ages else float("nan"),
    }


def main() -> int:
    port, topic, warmup, window = sys.argv[1:5]
    result = asyncio.run(_main(int(port), topic, float(warmup), float(window)))
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
