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
