// MQTT.js publish/subscribe round trip against a broker.
// Usage: node roundtrip.js HOST PORT (4|5) [ws]
// With "ws", over WebSocket (ws://HOST:PORT/mqtt, subprotocol mqtt).
// Subscribes at QoS 2, publishes at QoS 0/1/2 (MQTT 5: with a user
// property), checks each message arrives. Exits 0 on success, 1 otherwise;
// every wait is bounded. MQTT_USERNAME / MQTT_PASSWORD, when set, are the
// credentials it connects with.
"use strict";
const mqtt = require("mqtt");

const [host, port, version, transport] = process.argv.slice(2);
const protocolVersion = Number(version);
const topic = `interop/mqttjs/${version}`;
const timer = setTimeout(() => fail("timed out"), 10000);

function fail(why) {
  console.error(why);
  process.exit(1);
}

const client = mqtt.connect({
  host,
  port: Number(port),
  protocolVersion,
  clientId: `mqttjs-${version}`,
  reconnectPeriod: 0,
  connectTimeout: 5000,
  ...(transport === "ws" ? { protocol: "ws", path: "/mqtt" } : {}),
  ...(process.env.MQTT_USERNAME
    ? { username: process.env.MQTT_USERNAME, password: process.env.MQTT_PASSWORD || "" }
    : {}),
});
// Once every message arrived, the test has passed: a write that fails
// while the connection closes (a broker that closes at once on DISCONNECT,
// as Mosquitto does, can make MQTT.js's last acknowledgement hit EPIPE)
// is not a failure.
let done = false;
client.on("error", (e) => done || fail(`error: ${e.message}`));

const got = [];
client.on("message", (t, payload, packet) => {
  got.push({ payload: payload.toString(), qos: packet.qos, props: packet.properties });
  if (got.length === 3) {
    got.sort((a, b) => a.qos - b.qos);
    for (const [i, m] of got.entries()) {
      if (m.payload !== `mqttjs ${i}` || m.qos !== i) fail(`unexpected ${JSON.stringify(got)}`);
      if (protocolVersion === 5 && !(m.props && m.props.userProperties && m.props.userProperties.k === "v")) {
        fail(`user property lost: ${JSON.stringify(m.props)}`);
      }
    }
    clearTimeout(timer);
    done = true;
    client.end(false, {}, () => process.exit(0));
  }
});

client.on("connect", () => {
  client.subscribe(topic, { qos: 2 }, (err, granted) => {
    if (err || granted[0].qos !== 2) fail(`subscribe failed: ${err || JSON.stringify(granted)}`);
    for (const qos of [0, 1, 2]) {
      const opts = { qos };
      if (protocolVersion === 5) opts.properties = { userProperties: { k: "v" } };
      client.publish(topic, `mqttjs ${qos}`, opts, (e) => e && fail(`publish ${qos}: ${e.message}`));
    }
  });
});
