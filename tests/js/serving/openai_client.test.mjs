// The official `openai` npm client against gpt serve: completions and chat,
// streaming and not, logprobs, usage, errors as the client's own exceptions.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer, tinyModel } from "./server.mjs";

let server, client;
before(async () => {
  server = await startServer(["--model", tinyModel, "--alias", "tiny", "--chat-template", "chatml", "--api-key", "k1"]);
  client = new OpenAI({ baseURL: server.url + "/v1", apiKey: "k1", maxRetries: 0 });
});
after(async () => { assert.equal(await server.stop(), 0); });

test("models.list names the served model", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);
});

test("completions: text, finish_reason, usage and logprobs", async () => {
  const r = await client.completions.create({ model: "tiny", prompt: "Hello world", max_tokens: 8, temperature: 0, logprobs: 3 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 8);
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 8);
  assert.equal(lp.tokens.join(""), r.choices[0].text);
  for (let i = 0; i < 8; ++i) {
    const top = Object.values(lp.top_logprobs[i]);
    assert.equal(top.length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(lp.token_logprobs[i] - Math.max(...top)) < 1e-6);
  }
});

test("completions: a stream is the same text in pieces", async () => {
  const whole = await client.completions.create({ model: "tiny", prompt: "Once", max_tokens: 12, seed: 5 });
  const stream = await client.completions.create({ model: "tiny", prompt: "Once", max_tokens: 12, seed: 5, stream: true });
  let text = "", finish = null, chunks = 0;
  for await (const chunk of stream) {
    ++chunks;
    text += chunk.choices[0].text;
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.ok(chunks > 1);
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, whole.choices[0].finish_reason);
});

test("chat: message, n choices, seed, usage", async () => {
  const messages = [{ role: "user", content: "Hi" }];
  const r = await client.chat.completions.create({ model: "tiny", messages, max_completion_tokens: 6, n: 2, seed: 11 });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices.length, 2);
  assert.equal(r.choices[0].message.role, "assistant");
  const again = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 6, seed: 12 });
  assert.equal(again.choices[0].message.content, r.choices[1].message.content);  // choice 1 is seed + 1
  // Each choice ran to its 6 tokens or stopped at the template's end of turn.
  assert.ok(r.usage.completion_tokens >= 2 && r.usage.completion_tokens <= 12);
  if (r.choices.every((c) => c.finish_reason === "length")) assert.equal(r.usage.completion_tokens, 12);
});

test("chat: streaming with logprobs and include_usage", async () => {
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello" }];
  const whole = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 8, seed: 2, logprobs: true, top_logprobs: 2 });
  const stream = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 8, seed: 2, logprobs: true,
                                                        top_logprobs: 2, stream: true, stream_options: { include_usage: true } });
  let text = "", role = null, tokens = 0, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    const c = chunk.choices[0];
    role = role ?? c.delta.role;
    text += c.delta.content ?? "";
    tokens += c.logprobs?.content?.length ?? 0;
    for (const t of c.logprobs?.content ?? []) assert.equal(t.top_logprobs.length, 2);
  }
  assert.equal(role, "assistant");
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(tokens, whole.usage.completion_tokens);
  assert.deepEqual(usage, whole.usage);
});

test("errors arrive as the client's exceptions", async () => {
  await assert.rejects(client.completions.create({ model: "gpt-4", prompt: "x" }), OpenAI.NotFoundError);
  await assert.rejects(client.completions.create({ model: "tiny", prompt: "x", temperature: 7 }),
                       (e) => e instanceof OpenAI.BadRequestError && e.param === "temperature");
  const wrongKey = new OpenAI({ baseURL: server.url + "/v1", apiKey: "nope", maxRetries: 0 });
  await assert.rejects(wrongKey.models.list(), OpenAI.AuthenticationError);
});
