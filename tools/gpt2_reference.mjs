// Expected GPT-2 token ids for tests/tokenizer, made by a tokenizer we did not
// write: the npm package js-tiktoken (OpenAI's tiktoken ported to JavaScript).
//   mkdir -p /tmp/jst && (cd /tmp/jst && npm install js-tiktoken@1.0.21)
//   NODE_PATH=/tmp/jst/node_modules node tools/gpt2_reference.mjs
// Writes tests/fixtures/gpt2_bpe_cases.json: [{"name", "text", "ids"}].
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.env.NODE_PATH || ".", "x.js"));
const { getEncoding } = require("js-tiktoken");
const root = path.dirname(path.dirname(new URL(import.meta.url).pathname));
const enc = getEncoding("gpt2");

const seed = fs.readFileSync(path.join(root, "..", "shared", "seed", "llm-how-it-works.ko.txt"), "utf8");
const cases = [
  ["english", "The quick brown fox jumps over the lazy dog. It's 4:30pm, isn't it? They'll say we've won!"],
  ["contractions", "I'm sure you'd've known; he's here, she'll go, they're 'quoted' and it's DON'T won't"],
  ["code", "def forward(self, x):\n    # (B, T, C)\n    return self.ln_f(x) @ self.wte.weight.T  # tied\n\nif __name__ == '__main__':\n\tmain()\n"],
  ["whitespace", "a  b   c    d\n\n\n  e \t\tf   \n   g     "],
  ["digits", "123 4567 89012345 3.14159 1,000,000 2026-11-28 0x1F 007"],
  ["emoji", "I love 🤖 and 🦀🦀! 👩‍👩‍👧‍👦 family ✓ ★ ☃"],
  ["korean", seed.slice(0, 3000)],
  ["mixed", "GPT는 Transformer 모델이다. Ελληνικά, русский язык, 日本語のテキスト, العربية, हिन्दी — mixed “quotes” …"],
  ["punctuation", "!!! ??? ... --- ((( ))) [[x]] {y} <z> @user #tag $100 %50 ^&*_+=|\\/~`"],
  ["endoftext-as-text", "before<|endoftext|>after"],
];
const out = cases.map(([name, text]) => ({ name, text, ids: Array.from(enc.encode(text, [], [])) }));
fs.writeFileSync(path.join(root, "tests", "fixtures", "gpt2_bpe_cases.json"), JSON.stringify(out, null, 1) + "\n");
console.log(out.map((c) => `${c.name}: ${c.ids.length} tokens`).join("\n"));
