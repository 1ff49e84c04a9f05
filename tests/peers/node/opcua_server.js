// An OPC UA server in JavaScript (node-opcua) for the OPC UA driver's tests and benchmark.
//
//   node opcua_server.js '{"port": 0, ...}'
//
// Options (JSON, all optional):
//   port             TCP port (0 = let the OS pick a free one)
//   shift            dummy namespaces registered before ours: our namespace index moves
//   security         "none" (default) or "secure": Basic256Sha256, Aes128_Sha256_RsaOaep and
//                    Aes256_Sha256_RsaPss with Sign and SignAndEncrypt (and no None endpoint)
//   pki              folder of the server's certificate store (own/ trusted/ rejected/)
//   auto_accept      accept every client certificate (default false)
//   users            {"name": "password"} for username identity; anonymous then refused
//   bench            number of Double variables Bench.V<i>, each changing once per second
//   max_per_call     MaxMonitoredItemsPerCall and MaxNodesPerRead advertised (0 = none)
//
// Prints one line "@@ {"ready": true, "port": P, "namespace": URI, "index": N}" once listening
// (node-opcua prints its own lines on stdout too: ours start with "@@ ").
// Commands, one JSON object per line on stdin, each answered with one "@@ " JSON line:
//   {"op": "stats"}                          sessions, subscriptions, monitored items
//   {"op": "set", "id": "Plant.Double", "value": 1.5, "status": "BadSensorFailure"}
//   {"op": "get", "id": "Plant.Setpoint"}     the current value
"use strict";

const readline = require("readline");
const {
    OPCUAServer,
    OPCUACertificateManager,
    Variant,
    DataType,
    DataValue,
    StatusCodes,
    MessageSecurityMode,
    SecurityPolicy,
    VariantArrayType,
} = require("node-opcua");

const NAMESPACE = "urn:edge-gateway:test";
const options = JSON.parse(process.argv[2] || "{}");

function statusOf(name) {
    if (!name || name === "Good") return StatusCodes.Good;
    const code = StatusCodes[name];
    if (!code) throw new Error(`unknown status code ${name}`);
    return code;
}

async function main() {
    const secure = options.security === "secure";
    const serverOptions = {
        port: options.port || 0,
        hostname: "127.0.0.1",
        maxConnectionsPerEndpoint: 100,
        serverCapabilities: {
            maxSessions: 100,
            maxSubscriptions: 100,
            maxMonitoredItems: 200000,
            maxMonitoredItemsPerSubscription: 200000,
            operationLimits: {
                maxNodesPerRead: options.max_per_call || 0,
                maxMonitoredItemsPerCall: options.max_per_call || 0,
            },
        },
        buildInfo: { productName: "edge-gateway test server", buildNumber: "1" },
    };
    if (secure) {
        const manager = new OPCUACertificateManager({
            rootFolder: options.pki,
            automaticallyAcceptUnknownCertificate: !!options.auto_accept,
        });
        await manager.initialize();
        serverOptions.serverCertificateManager = manager;
        serverOptions.securityPolicies = [
            SecurityPolicy.Basic256Sha256,
            SecurityPolicy.Aes128_Sha256_RsaOaep,
            SecurityPolicy.Aes256_Sha256_RsaPss,
        ];
        serverOptions.securityModes = [
            MessageSecurityMode.Sign,
            MessageSecurityMode.SignAndEncrypt,
        ];
    } else {
        serverOptions.securityPolicies = [SecurityPolicy.None];
        serverOptions.securityModes = [MessageSecurityMode.None];
    }
    if (options.users) {
        const users = options.users;
        serverOptions.userManager = {
            isValidUser: (name, password) => users[name] !== undefined && users[name] === password,
        };
        serverOptions.allowAnonymous = false;
    }
    const server = new OPCUAServer(serverOptions);
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    for (let i = 0; i < (options.shift || 0); i++) {
        addressSpace.registerNamespace(`urn:edge-gateway:dummy:${i}`);
    }
    const ns = addressSpace.registerNamespace(NAMESPACE);
    const variables = new Map();

    const plant = ns.addFolder(addressSpace.rootFolder.objects, {
        browseName: "Plant",
        nodeId: "s=Plant",
    });
    function add(name, dataType, value, extra = {}) {
        const variable = ns.addVariable({
            componentOf: extra.parent || plant,
            browseName: extra.browseName || name,
            nodeId: extra.nodeId || `s=Plant.${name}`,
            dataType,
            valueRank: extra.valueRank === undefined ? -1 : extra.valueRank,
            arrayDimensions: extra.arrayDimensions,
            accessLevel: extra.writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            userAccessLevel: extra.writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            minimumSamplingInterval: 50,
            value: extra.valueRank === 1
                ? { dataType, arrayType: VariantArrayType.Array, value }
                : { dataType, arrayType: VariantArrayType.Scalar, value },
        });
        variables.set(extra.key || `Plant.${name}`, variable);
        return variable;
    }
    add("Bool", DataType.Boolean, true);
    add("Int16", DataType.Int16, -1234);
    add("UInt16", DataType.UInt16, 54321);
    add("Int32", DataType.Int32, -123456);
    add("UInt32", DataType.UInt32, 3000000000);
    add("Int64", DataType.Int64, [0xffffffff, 0xfffffc18]); // -1000
    add("UInt64", DataType.UInt64, [0, 5000000000 - 0x100000000]); // 705032704
    add("Float", DataType.Float, 1.5);
    add("Double", DataType.Double, 2.25);
    add("String", DataType.String, "hello");
    add("DateTime", DataType.DateTime, new Date(Date.UTC(2024, 0, 2, 3, 4, 5)));
    add("ByteString", DataType.ByteString, Buffer.from([1, 2, 3, 250]));
    add("DoubleArray", DataType.Double, new Float64Array([1, 2, 3, 4]), {
        valueRank: 1,
        arrayDimensions: [4],
    });
    add("Counter", DataType.UInt32, 0);
    add("Quality", DataType.Double, 10.0);
    add("Setpoint", DataType.Double, 50.0, { writable: true });
    add("Mode", DataType.Int16, 1, { writable: true });
    add("Label", DataType.String, "idle", { writable: true });
    add("Flag", DataType.Boolean, false, { writable: true });
    add("Numeric", DataType.Int32, 42, { nodeId: "i=5001", key: "Numeric" });
    add("Guid", DataType.Double, 7.5, {
        nodeId: "g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
        key: "Guid",
    });
    add("Opaque", DataType.String, "opaque", { nodeId: "b=AQIDBA==", key: "Opaque" });
    const line = ns.addObject({ organizedBy: plant, browseName: "Line1", nodeId: "s=Plant.Line1" });
    add("Speed", DataType.Double, 12.5, { parent: line, nodeId: "s=Plant.Line1.Speed",
        key: "Plant.Line1.Speed" });
    const analog = ns.addAnalogDataItem({
        componentOf: plant,
        browseName: "Level",
        nodeId: "s=Plant.Level",
        dataType: "Double",
        engineeringUnitsRange: { low: 0, high: 200 },
        minimumSamplingInterval: 50,
        value: { dataType: DataType.Double, value: 0 },
    });
    variables.set("Plant.Level", analog);

    let counter = 0;
    const counterVariable = variables.get("Plant.Counter");
    setInterval(() => {
        counter += 1;
        counterVariable.setValueFromSource(
            new Variant({ dataType: DataType.UInt32, value: counter }),
            StatusCodes.Good,
            new Date(),
        );
    }, 100);

    const benchCount = options.bench || 0;
    if (benchCount > 0) {
        const folder = ns.addFolder(addressSpace.rootFolder.objects, {
            browseName: "Bench",
            nodeId: "s=Bench",
        });
        const bench = [];
        for (let i = 0; i < benchCount; i++) {
            bench.push(ns.addVariable({
                componentOf: folder,
                browseName: `V${i}`,
                nodeId: `s=Bench.V${i}`,
                dataType: "Double",
                minimumSamplingInterval: 0,
                value: { dataType: DataType.Double, value: 0 },
            }));
        }
        // every variable changes once per second, in ten slices spread over the second; slices
        // are due by the clock, so a late timer catches up instead of lowering the rate
        const slices = 10;
        const started = Date.now();
        let done = 0;
        setInterval(() => {
            const due = Math.floor((Date.now() - started) / (1000 / slices));
            const now = new Date();
            for (; done < due; done++) {
                const slice = done % slices;
                const tick = Math.floor(done / slices);
                for (let i = slice; i < benchCount; i += slices) {
                    bench[i].setValueFromSource(
                        new Variant({ dataType: DataType.Double, value: tick + i / benchCount }),
                        StatusCodes.Good,
                        now,
                    );
                }
            }
        }, 1000 / slices / 2);
    }

    await server.start();
    const port = server.endpoints[0].port;
    const reply = (object) => process.stdout.write("@@ " + JSON.stringify(object) + "\n");
    reply({ ready: true, port, namespace: NAMESPACE, index: ns.index });

    const input = readline.createInterface({ input: process.stdin });
    input.on("line", (text) => {
        let command;
        try {
            command = JSON.parse(text);
        } catch (err) {
            reply({ error: `not JSON: ${err.message}` });
            return;
        }
        try {
            if (command.op === "stats") {
                let items = 0;
                let subscriptions = 0;
                for (const session of Object.values(server.engine._sessions || {})) {
                    for (const sub of session.publishEngine.subscriptions) {
                        subscriptions += 1;
                        items += sub.monitoredItemCount;
                    }
                }
                reply({
                    sessions: server.engine.currentSessionCount,
                    subscriptions,
                    monitored_items: items,
                });
            } else if (command.op === "set") {
                const variable = variables.get(command.id);
                if (!variable) throw new Error(`unknown variable ${command.id}`);
                const dataType = variable.getBasicDataType();
                variable.setValueFromSource(
                    new Variant({ dataType, value: command.value }),
                    statusOf(command.status),
                    new Date(),
                );
                reply({ ok: true });
            } else if (command.op === "get") {
                const variable = variables.get(command.id);
                if (!variable) throw new Error(`unknown variable ${command.id}`);
                const value = variable.readValue().value.value;
                reply({ value: typeof value === "bigint" ? Number(value) : value });
            } else {
                reply({ error: `unknown op ${command.op}` });
            }
        } catch (err) {
            reply({ error: err.message });
        }
    });
    input.on("close", async () => {
        await server.shutdown(0);
        process.exit(0);
    });
    const stop = async () => {
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    process.stderr.write(`${err.stack || err}\n`);
    process.exit(1);
});
