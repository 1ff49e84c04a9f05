"""Config validation: every error names its path (and line), secrets never leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.destinations import BearerAuth, RestDestinationConfig
from gateway.config.load import load_config, load_config_text
from gateway.errors import ConfigError

GOOD = """
gateway:
  id: gw1
  location: {enterprise: acme, site: dallas, area: pack, line: line3}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: GoodCount, address: 2, type: uint16}
      - {name: Order, address: 10, type: string, length: 16}
processors:
  - {type: work_report, machine: M1, good: M1/GoodCount, order: M1/Order}
destinations:
  - name: erp
    system: erp
    url: "http://127.0.0.1:1/api"
    auth: {type: bearer, token: "${ERP_TOKEN}"}
"""


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return [str(issue) for issue in caught.value.issues]


def test_valid_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "s3cret")
    config = load_config_text(GOOD)
    assert getattr(config.devices[0].tags[1], "length", None) == 16
    assert getattr(config.destinations[0], "auth", None) is not None


def test_unknown_key_names_path_and_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "x")
    text = GOOD.replace("{name: GoodCount, address: 2", "{name: GoodCount, adress: 2")
    found = issues(text)
    assert "devices[0].tags[0].adress (line 10): unknown key" in found
    assert "devices[0].tags[0].address (line 10): required key is missing" in found


def test_wrong_type_shows_value_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "x")
    found = issues(GOOD.replace("address: 2,", "address: two,"))
    assert any(
        f.startswith("devices[0].tags[0].address (line 10):") and "'two'" in f for f in found
    )


def test_every_error_is_listed_not_just_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "x")
    text = GOOD.replace("address: 2,", "address: 70000,").replace("host: 127", "hots: 127")
    found = issues(text)
    assert any("devices[0].tags[0].address" in f for f in found)
    assert any("devices[0].hots" in f for f in found)
    assert any("devices[0].host" in f and "missing" in f for f in found)


def test_unknown_protocol_is_named() -> None:
    found = issues(GOOD.replace("protocol: modbus_tcp", "protocol: modbus_udp"))
    assert any(f.startswith("devices[0] (line 6): unknown type 'modbus_udp'") for f in found)


def test_yaml_syntax_error_names_the_line() -> None:
    found = issues("gateway:\n  id: [gw1\n  location: {}\n")
    assert len(found) == 1
    assert "(line 3)" in found[0] and "YAML syntax error" in found[0]


def test_missing_environment_variable_is_named() -> None:
    found = issues(GOOD)
    assert any(
        f.startswith("destinations[0].auth.token") and "ERP_TOKEN is not set" in f for f in found
    )


def test_secret_value_never_appears_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "s3cret-value")
    text = GOOD.replace('url: "http://127.0.0.1:1/api"', 'url: "${ERP_TOKEN}"')
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert "destinations[0].url" in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    config = load_config_text(GOOD.replace("${ERP_TOKEN}", f"${{file:{secret}}}"))
    destination = config.destinations[0]
    assert isinstance(destination, RestDestinationConfig)
    auth = destination.auth
    assert isinstance(auth, BearerAuth)
    assert auth.token.get_secret_value() == "from-file"
    assert "from-file" not in repr(config)


def test_unknown_tag_reference_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "x")
    found = issues(GOOD.replace("good: M1/GoodCount", "good: M1/GoodCnt"))
    assert any(
        f.startswith("processors[0].good.tag (line 13): unknown tag 'M1/GoodCnt'") for f in found
    )


def test_duplicate_tag_and_bad_poll_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "x")
    text = GOOD.replace(
        "{name: Order, address: 10", "{name: GoodCount, poll_group: fast, address: 10"
    )
    found = issues(text)
    assert any(f.startswith("devices[0].tags[1].name") and "duplicate" in f for f in found)
    assert any(
        f.startswith("devices[0].tags[1].poll_group") and "unknown poll group" in f for f in found
    )


def test_string_tag_needs_length(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "x")
    found = issues(GOOD.replace(", length: 16", ""))
    assert any(f.startswith("devices[0].tags[1]") and "length" in f for f in found)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_command_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("address: 2,", "address: -1,"))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert "devices[0].tags[0].address (line 10)" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_check_command_exit_0_on_valid(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace("${ERP_TOKEN}", "literal"))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_check_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr


def test_schema_command_prints_json_schema() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "gateway" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_demo_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DEMO_DATA_DIR": "/tmp/d",
        "DEMO_MODBUS_PORT": "5020",
        "DEMO_OPCUA_PORT": "4840",
        "DEMO_MQTT_PORT": "1883",
        "DEMO_ERP_URL": "http://h:1",
        "DEMO_WMS_URL": "http://h:2",
        "DEMO_QMS_URL": "http://h:3",
    }.items():
        monkeypatch.setenv(name, value)
    config = load_config(Path(__file__).parents[2] / "gateway/demo/demo.yaml")
    assert [d.name for d in config.devices] == ["M1", "M2", "M3"]


SHARED = """
gateway: {id: gw1, location: {enterprise: a, site: b, area: c, line: d}}
devices:
  - {name: M1, protocol: modbus_tcp, host: h1, tags: &machine [{name: Count, address: 0},
                                                               {name: Temp, address: 1}]}
  - {name: M2, protocol: modbus_tcp, host: h2, tags: *machine}
"""


def test_devices_sharing_a_yaml_alias_share_their_tag_models() -> None:
    config = load_config_text(SHARED)
    first, second = config.devices
    assert [t.name for t in second.tags] == ["Count", "Temp"]
    assert first.tags[0] is second.tags[0]


def test_an_error_in_a_shared_tag_list_names_each_device() -> None:
    found = issues(SHARED.replace("address: 1}", "address: x}"))
    assert any(f.startswith("devices[0].tags[1].address") for f in found)
    assert any(f.startswith("devices[1].tags[1].address") for f in found)


def test_devices_on_one_serial_line_must_agree_on_its_settings() -> None:
    found = issues(
        """
gateway: {id: g, location: {enterprise: a, site: b, area: c, line: d}}
devices:
  - {name: A, protocol: modbus_rtu, port: /dev/ttyUSB0, baudrate: 9600, unit: 1}
  - {name: B, protocol: modbus_rtu, port: /dev/ttyUSB0, baudrate: 19200, unit: 2}
"""
    )
    assert any(f.startswith("devices[1] (line 5): device B shares /dev/ttyUSB0") for f in found)
