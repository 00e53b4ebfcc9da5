// MQTT.js in a real browser (Debian's headless Chromium, driven by
// playwright-core) against ferrymq's WebSocket listener:
//   node browser.js URL [CHROMIUM]
// URL is ws://HOST:PORT/mqtt or wss://...; a wss listener's certificate is
// made by the suite's own CA, so the browser is told to accept it. The page
// loads MQTT.js's browser bundle, connects with MQTT 5, subscribes at QoS 1,
// publishes at QoS 0, 1 and 2 and waits for all three. Exits 0 on success,
// 1 otherwise; every wait is bounded.
"use strict";
const path = require("path");
const { chromium } = require("playwright-core");

const [url, executable = "/usr/bin/chromium"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node browser.js ws://HOST:PORT/mqtt [CHROMIUM]");
  process.exit(2);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: executable,
    // Containers run CI as root, where Chromium's sandbox cannot start.
    args: ["--no-sandbox"],
    timeout: 30000,
  });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const logs = [];
    page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`page error: ${e.message}`));
    await page.setContent("<!doctype html><title>ferrymq</title>");
    // The package's exports map hides dist/ from require.resolve.
    const bundle = path.join(__dirname, "node_modules", "mqtt", "dist", "mqtt.min.js");
    await page.addScriptTag({ path: bundle });
    const result = await page.evaluate(
      (url) =>
        new Promise((resolve) => {
          const topic = `browser/${Math.random().toString(16).slice(2)}`;
          const client = window.mqtt.connect(url, {
            protocolVersion: 5,
            reconnectPeriod: 0,
            connectTimeout: 5000,
          });
          const got = [];
          const timer = setTimeout(() => {
            client.end(true);
            resolve({ ok: false, why: `timed out; got ${JSON.stringify(got)}` });
          }, 15000);
          client.on("error", (e) => resolve({ ok: false, why: `error: ${e.message}` }));
          client.on("message", (t, payload, packet) => {
            got.push(`${packet.qos}:${payload.toString()}`);
            if (got.length === 3) {
              clearTimeout(timer);
              client.end(false, {}, () => resolve({ ok: true, got }));
            }
          });
          client.on("connect", () => {
            client.subscribe(topic, { qos: 1 }, (err) => {
              if (err) {
                resolve({ ok: false, why: `subscribe: ${err.message}` });
                return;
              }
              for (const qos of [0, 1, 2]) {
                client.publish(topic, `from the browser at qos ${qos}`, { qos });
              }
            });
          });
        }),
      url,
    );
    if (!result.ok) {
      console.error(`${url}: ${result.why}`);
      console.error(logs.join("\n"));
      return 1;
    }
    // QoS 2 publications arrive at the subscription's QoS 1.
    const want = [0, 1, 2].map((q) => `${Math.min(q, 1)}:from the browser at qos ${q}`).sort();
    const got = [...result.got].sort();
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      console.error(`${url}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      return 1;
    }
    console.log(`${url}: ${got.length} messages round-tripped in ${await browser.version()}`);
    return 0;
  } finally {
    await browser.close();
  }
}

const guard = setTimeout(() => {
  console.error("browser test: no result within 60 s");
  process.exit(1);
}, 60000);
main().then(
  (code) => {
    clearTimeout(guard);
    process.exit(code);
  },
  (e) => {
    console.error(`browser test: ${e.message}`);
    process.exit(1);
  },
);
