// A bounded load test on loopback with autocannon: 16 connections for 20 s,
// one request in ten malformed. Zero crashes, zero 5xx, every valid request
// answered 200 and every malformed one 400, resident memory flat within 10%
// after warm-up. Prints the figures (they go in docs/serving.md).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import autocannon from "autocannon";
import { startServer, tinyModel } from "./server.mjs";

const seconds = Number(process.env.GPT_LOAD_SECONDS || 20);

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

test("16 connections, one request in ten malformed: no crash, no 5xx, flat memory", async () => {
  const server = await startServer(["--model", tinyModel, "--parallel", "8", "--max-n", "1"]);
  const valid = { method: "POST", path: "/v1/completions", headers: { "content-type": "application/json" },
                  body: JSON.stringify({ prompt: "The meaning of life is", max_tokens: 16, temperature: 0.8 }) };
  const malformed = { ...valid, body: '{"prompt": "The meaning of life is", "max_tokens": ' };
  const requests = [...Array(9).fill(valid), malformed];
  const samples = [];
  const sampler = setInterval(() => samples.push({ t: Date.now(), rss: rssKiB(server.proc.pid) }), 500);
  const start = Date.now();
  const result = await autocannon({ url: server.url, connections: 16, duration: seconds, requests });
  clearInterval(sampler);
  const codes = Object.fromEntries(Object.entries(result.statusCodeStats || {}).map(([k, v]) => [k, v.count]));
  const afterWarmup = samples.filter((s) => s.t - start > Math.min(5000, seconds * 250)).map((s) => s.rss);
  const lo = Math.min(...afterWarmup), hi = Math.max(...afterWarmup);
  console.log(JSON.stringify({ seconds, requests: result.requests.total, requests_per_s: result.requests.average,
                               latency_p50_ms: result.latency.p50, latency_p99_ms: result.latency.p99, codes,
                               errors: result.errors, timeouts: result.timeouts, rss_kib_min: lo, rss_kib_max: hi }));
  assert.equal(result.errors, 0, "connection errors");
  assert.equal(result.timeouts, 0);
  assert.deepEqual(Object.keys(codes).sort(), ["200", "400"]);
  const total = codes[200] + codes[400];
  assert.ok(Math.abs(codes[400] / total - 0.1) < 0.02, `malformed share ${codes[400] / total}`);
  assert.ok(hi <= lo * 1.1, `resident memory moved from ${lo} to ${hi} KiB after warm-up`);
  // Still serving, then a clean exit.
  assert.equal((await fetch(server.url + "/health")).status, 200);
  assert.equal(await server.stop(), 0);
});
