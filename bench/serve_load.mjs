#!/usr/bin/env node
// Streaming load on an OpenAI-compatible server (gpt serve or llama-server, the
// same requests to both): N clients, each sending one streamed completion after
// another for a fixed time. Prints one JSON line per client count: aggregate
// decode tokens/s, requests/s, time to first token and request latency
// (p50/p99). Node >= 18, no packages.
//   node bench/serve_load.mjs --url http://127.0.0.1:8080 [--clients 1,4,8,16]
//        [--seconds 20] [--max-tokens 64] [--prompt-words 100] [--label NAME]
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const url = args.url || "http://127.0.0.1:8080";
const clients = (args.clients || "1,4,8,16").split(",").map(Number);
const seconds = Number(args.seconds || 20);
const maxTokens = Number(args["max-tokens"] || 64);
const words = Number(args["prompt-words"] || 100);
const label = args.label || url;
const vocabulary = "the quick brown fox jumps over a lazy dog while seven old kings sing about rivers and stone".split(" ");

// A different prompt for every request (no cache can serve one from another).
let serial = 0;
function prompt() {
  const n = serial++;
  let out = `Request ${n}:`;
  for (let i = 0; i < words; ++i) out += " " + vocabulary[(n * 7 + i * 13 + (i >> 3)) % vocabulary.length];
  return out;
}

async function one(stats) {
  const t0 = performance.now();
  const r = await fetch(url + "/v1/completions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: prompt(), max_tokens: maxTokens, temperature: 0.8, stream: true, ignore_eos: true,
                           stream_options: { include_usage: true } }),
  });
  if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", first = -1, chunks = 0, usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const j = JSON.parse(event.slice(6));
      if (j.usage) usage = j.usage;
      if (j.choices && j.choices.length && j.choices[0].text) {
        if (first < 0) first = performance.now() - t0;
        ++chunks;
      }
    }
  }
  const end = performance.now();
  stats.push({ end, ttft: first, latency: end - t0, tokens: usage ? usage.completion_tokens : chunks });
}

function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] : NaN;
}

for (const n of clients) {
  await one([]);  // warm-up
  const stats = [];
  const start = performance.now(), stop = start + seconds * 1000;
  // A connection the server closed under a reused keep-alive socket is counted and retried, not fatal.
  let errors = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (performance.now() < stop) {
      try {
        await one(stats);
      } catch (e) {
        if (++errors > 20) throw e;
      }
    }
  }));
  const wall = (Math.max(...stats.map((s) => s.end)) - start) / 1000;
  const tokens = stats.reduce((a, s) => a + s.tokens, 0);
  console.log(JSON.stringify({
    label, clients: n, requests: stats.length, seconds: +wall.toFixed(2),
    tokens_per_s: +(tokens / wall).toFixed(1), requests_per_s: +(stats.length / wall).toFixed(2),
    ttft_p50_ms: +percentile(stats.map((s) => s.ttft), 50).toFixed(1), ttft_p99_ms: +percentile(stats.map((s) => s.ttft), 99).toFixed(1),
    latency_p50_ms: +percentile(stats.map((s) => s.latency), 50).toFixed(1), latency_p99_ms: +percentile(stats.map((s) => s.latency), 99).toFixed(1),
    tokens_per_request: +(tokens / stats.length).toFixed(1), errors,
  }));
}
