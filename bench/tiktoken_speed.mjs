// js-tiktoken's GPT-2 encoding speed on a file (single thread). Prints one JSON line.
//   NODE_PATH=/tmp/jst/node_modules node bench/tiktoken_speed.mjs FILE
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.env.NODE_PATH || ".", "x.js"));
const { getEncoding } = require("js-tiktoken");
const enc = getEncoding("gpt2");
const text = fs.readFileSync(process.argv[2], "utf8");
const bytes = Buffer.byteLength(text, "utf8");
enc.encode(text.slice(0, 10000));  // warm up the JIT
let s = Infinity, ids;
for (let rep = 0; rep < 3; ++rep) {  // best of 3, as the C++ side
  const t0 = process.hrtime.bigint();
  ids = enc.encode(text);
  s = Math.min(s, Number(process.hrtime.bigint() - t0) / 1e9);
}
let h = 0x811c9dc5;  // FNV-1a over the ids, to compare with gpt.cpp's
for (const id of ids) h = Math.imul(h ^ id, 0x01000193) >>> 0;
console.log(JSON.stringify({ bytes, tokens: ids.length, ids_fnv: h, encode_mb_per_s: bytes / 1e6 / s }));
