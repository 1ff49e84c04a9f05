"""The InfluxDB output: the line-protocol mapping, writes read back from VictoriaMetrics, and
the HTTP error handling against a stub server (4xx refused and not retried, 5xx/429 retried)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.config.model import GatewayConfig
from gateway.config.outputs import InfluxOutputConfig
from gateway.metrics import Metrics
from gateway.outputs.influx import InfluxOutput
from gateway.tags import TagTable

CONFIG = """
gateway: {id: gw1, location: {enterprise: acme, site: dallas, area: a, line: l1}}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: Temp, address: 0, type: float32}
      - {name: Good, address: 2, type: uint16}
      - {name: Running, table: coil, address: 0, type: bool}
      - {name: Order, address: 10, type: string, length: 8}
      - {name: "Ring", address: 20, type: float32, count: 2}
  - name: M2
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: Temp, address: 0, type: float32}
"""
STAMP = 1_700_000_000_123_456_789


def setup() -> tuple[GatewayConfig, TagTable]:
    config = load_config_text(CONFIG)
    return config, TagTable((d.name, d.tags) for d in config.devices)


def make_output(url: str, **fields: object) -> InfluxOutput:
    config, table = setup()
    section = InfluxOutputConfig.model_validate(
        {"type": "influxdb", "url": url, "bucket": "plant", "org": "acme", **fields}
    )
    return InfluxOutput(
        section,
        table,
        gateway_id="gw1",
        location=config.gateway.location,
        cells={"M1": "press 1", "M2": "M2"},
        metrics=Metrics(),
    )


def sample(
    table: TagTable, values: dict[str, object], stamp: int = STAMP, source: str = "M1"
) -> SampleBatch:
    ids = list(values)
    numbers = [v if isinstance(v, float) else np.nan for v in values.values()]
    objects = [v if isinstance(v, str) else None for v in values.values()]
    return SampleBatch(
        source,
        np.array([table.index(i) for i in ids], np.int32),
        np.array(numbers),
        np.zeros(len(ids), np.uint16),
        np.full(len(ids), stamp, np.int64),
        np.array(objects, object) if any(objects) else None,
    )


def test_one_line_per_device_and_timestamp_with_the_documented_mapping() -> None:
    output = make_output("http://unused:8086", constant_tags={"plant": "dallas west"})
    table = output.table
    lines = output.lines_of(
        sample(
            table,
            {
                "M1/Temp": 21.5,
                "M1/Good": 7.0,
                "M1/Running": 1.0,
                "M1/Order": 'A "quoted" order',
                "M1/Ring[1]": float("nan"),  # bad sample: left out
            },
        )
    )
    assert lines == [
        "plc,area=a,cell=press\\ 1,device=M1,enterprise=acme,gateway=gw1,line=l1,"
        "plant=dallas\\ west,site=dallas "
        'Temp=21.5,Good=7.0,Running=true,Order="A \\"quoted\\" order" 1700000000123'
    ]


def test_rows_of_other_timestamps_and_devices_make_their_own_lines() -> None:
    output = make_output("http://unused:8086", measurement="{device}", precision="s")
    table = output.table
    batch = SampleBatch.concat(
        "mixed",
        [
            sample(table, {"M1/Temp": 1.0}, STAMP),
            sample(table, {"M2/Temp": 2.0}, STAMP, "M2"),
            sample(table, {"M1/Temp": 3.0, "M1/Ring[0]": 4.0}, STAMP + 10**9),
            sample(table, {"M1/Ring[1]": float("nan")}, STAMP + 2 * 10**9),
        ],
    )
    lines = output.lines_of(batch)
    assert [" ".join(line.rsplit(" ", 2)[1:]) for line in lines] == [
        "Temp=1.0 1700000000",
        "Temp=3.0,Ring[0]=4.0 1700000001",
        "Temp=2.0 1700000000",
    ]
    assert lines[2].startswith("M2,")


def test_measurement_placeholders_are_checked() -> None:
    with pytest.raises(ValueError, match="not machine"):
        InfluxOutputConfig.model_validate(
            {"type": "influxdb", "url": "http://x", "bucket": "b", "measurement": "{machine}"}
        )


@pytest.mark.integration
async def test_written_points_read_back_from_victoria_metrics(victoria_metrics: str) -> None:
    output = make_output(victoria_metrics, batch_size=50, flush_interval=0.2)
    table = output.table
    start = (time.time_ns() // 10**9 - 3600) * 10**9 + 123_456_789  # inside the retention
    await output.connect()
    for i in range(120):
        await output.write(
            sample(table, {"M1/Temp": 20.0 + i / 10, "M1/Running": float(i % 2)}, start + i * 10**9)
        )
    assert await output.flush(10.0)
    await output.close()
    assert output.written == 120 and output.rejected == 0 and output.dropped == 0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        series: dict[str, list[float]] = {}
        async with asyncio.timeout(20):
            while sum(len(v) for v in series.values()) < 240:
                await (await http.get(f"{victoria_metrics}/internal/force_flush")).release()
                response = await http.get(
                    f"{victoria_metrics}/api/v1/export",
                    params={"match[]": '{__name__=~"plc_.*",device="M1"}'},
                )
                series = {}
                for line in (await response.text()).splitlines():
                    item = json.loads(line)
                    metric = item["metric"]
                    assert metric["gateway"] == "gw1" and metric["cell"] == "press 1"
                    assert metric["site"] == "dallas"
                    series[metric["__name__"]] = item["values"]
                    assert item["timestamps"][0] == start // 1_000_000
                await asyncio.sleep(0.2)
    assert series["plc_Temp"] == pytest.approx([20.0 + i / 10 for i in range(120)])
    assert series["plc_Running"] == [float(i % 2) for i in range(120)]


@dataclass
class Stub:
    """An /api/v2/write endpoint answering from a script of statuses."""

    statuses: list[int]
    requests: list[tuple[dict[str, str], str, bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has undone the gzip encoding already
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        self.requests.append(
            (dict(request.query), request.headers.get("Content-Encoding", ""), body)
        )
        status = self.statuses.pop(0) if self.statuses else 204
        if status == 204:
            return web.Response(status=204)
        headers = {"Retry-After": "0.1"} if status == 429 else {}
        return web.json_response(
            {"code": "invalid", "message": f"scripted {status}"}, status=status, headers=headers
        )


@pytest.fixture
async def stub() -> AsyncIterator[tuple[Stub, str]]:
    script = Stub([])
    app = web.Application()
    app.router.add_post("/api/v2/write", script.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield script, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_refused_lines_are_dropped_and_counted_not_retried(stub: tuple[Stub, str]) -> None:
    script, url = stub
    script.statuses = [400, 401, 204]
    output = make_output(url, batch_size=2, flush_interval=0.05, retry={"initial": 0.05})
    table = output.table
    await output.connect()
    for i in range(6):
        await output.write(sample(table, {"M1/Temp": float(i)}, STAMP + i * 10**9))
    assert await output.flush(5.0)
    await output.close()
    assert len(script.requests) == 3  # one request per batch of two, none repeated
    assert output.rejected == 4 and output.written == 2
    query, encoding, body = script.requests[-1]
    assert query == {"org": "acme", "bucket": "plant", "precision": "ms"}
    assert encoding == "gzip"
    assert body.decode().splitlines()[0].endswith("Temp=4.0 1700000004123")


async def test_server_errors_and_429_are_retried_until_written(stub: tuple[Stub, str]) -> None:
    script, url = stub
    script.statuses = [503, 429, 500]
    output = make_output(url, batch_size=10, flush_interval=0.05, retry={"initial": 0.05})
    table = output.table
    await output.connect()
    for i in range(5):
        await output.write(sample(table, {"M1/Temp": float(i)}, STAMP + i * 10**9))
    assert await output.flush(10.0)
    await output.close()
    assert len(script.requests) == 4
    assert output.written == 5 and output.rejected == 0
    assert script.requests[0][2] == script.requests[-1][2]  # the same lines, not lost


async def test_unreachable_server_keeps_the_newest_lines(stub: tuple[Stub, str]) -> None:
    _, url = stub
    output = make_output(
        "http://127.0.0.1:9", batch_size=100, max_buffered_lines=100, retry={"initial": 0.05}
    )
    table = output.table
    await output.connect()
    for i in range(250):
        await output.write(sample(table, {"M1/Temp": float(i)}, STAMP + i * 10**9))
    assert len(output.lines) == 100 and output.dropped == 150
    assert output.lines[0].rsplit(" ", 2)[1] == "Temp=150.0"
    await output.close()
    assert url
