#!/usr/bin/env bash
# Installs the real peers the integration tests run against, from Debian's packages:
# Mosquitto (MQTT broker), VictoriaMetrics (line-protocol server), mbpoll (a Modbus client in C),
# socat (pseudo-terminal pairs for Modbus RTU). Needs root for apt-get; without root it says what
# is missing and the tests that need it are skipped (under CI=true they fail instead).
set -euo pipefail

packages=(mosquitto mosquitto-clients victoria-metrics mbpoll socat)
binaries=(mosquitto mosquitto_sub victoria-metrics mbpoll socat)

missing=()
for i in "${!binaries[@]}"; do
    if ! command -v "${binaries[$i]}" >/dev/null 2>&1 \
        && ! [ -x "/usr/sbin/${binaries[$i]}" ] && ! [ -x "/usr/bin/${binaries[$i]}" ]; then
        missing+=("${packages[$i]}")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing test peers: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test peers missing: ${missing[*]} (install them with apt-get as root);" \
             "their tests will be skipped" >&2
    fi
fi

# Node.js peers (node-opcua, modbus-serial, jsmodbus), pinned in tests/peers/node/package.json.
node_dir="$(cd "$(dirname "$0")" && pwd)/node"
if command -v npm >/dev/null 2>&1; then
    if [ ! -d "$node_dir/node_modules/node-opcua" ] || [ ! -d "$node_dir/node_modules/modbus-serial" ] \
        || [ ! -d "$node_dir/node_modules/jsmodbus" ] \
        || [ ! -d "$node_dir/node_modules/sparkplug-payload" ]; then
        echo "installing Node.js test peers into $node_dir"
        (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error --omit=optional >/dev/null)
    fi
else
    echo "npm not found: the node-opcua and modbus-serial tests will be skipped" >&2
fi
