// Decodes Sparkplug B payloads with Eclipse Tahu's JavaScript library (npm sparkplug-payload),
// independently of the gateway's Python code. Input on stdin: a JSON array of
// {"topic": ..., "payload": <base64>}. Output: the same array with "decoded" (Tahu's
// decodePayload, which types values by the metric's datatype) and "raw" (the protobufjs message
// as a plain object: every field as sent). 64-bit integers are written as strings.
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const proto = require("sparkplug-payload/lib/sparkplugPayloadProto");
const Long = require("long");

const Payload = proto.org.eclipse.tahu.protobuf.Payload;

function plain(value) {
  return JSON.parse(
    JSON.stringify(value, (key, v) => {
      if (Long.isLong(v)) return v.toString();
      if (v && v.type === "Buffer") return Buffer.from(v.data).toString("base64");
      return v;
    })
  );
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((message) => {
    const bytes = Buffer.from(message.payload, "base64");
    return {
      topic: message.topic,
      decoded: plain(sparkplug.decodePayload(bytes)),
      raw: plain(Payload.toObject(Payload.decode(bytes), { longs: String, defaults: false })),
    };
  });
  process.stdout.write(JSON.stringify(out));
});
