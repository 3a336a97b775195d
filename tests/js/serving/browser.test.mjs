// The web page in a real browser (Debian's chromium, headless, driven by
// puppeteer-core): chat and completion, streamed text, token alternatives on
// hover and by keyboard, the attention view, the stop button, a phone-sized
// window. Screenshots go to GPT_SCREENSHOT_DIR (the build folder under ctest).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";
import { binary, startServer, tinyModel } from "./server.mjs";

const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = process.env.GPT_SCREENSHOT_DIR || fs.mkdtempSync(path.join(os.tmpdir(), "gpt-shots-"));
fs.mkdirSync(shots, { recursive: true });

let server, browser;
before(async () => {
  server = await startServer(["--model", tinyModel, "--alias", "tiny", "--chat-template", "chatml"]);
  browser = await puppeteer.launch({ executablePath: chromium, headless: true,
                                     args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
});
after(async () => {
  await browser?.close();
  assert.equal(await server.stop(), 0);
});

async function openPage(url, viewport = { width: 1280, height: 800 }) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => /context/.test(document.getElementById("model").textContent));
  return { page, errors };
}

async function sendAndWait(page, text) {
  await page.focus("#input");
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => /tokens in/.test(document.getElementById("status").textContent), { timeout: 30000 });
}

test("chat: a streamed reply, tinted tokens, alternatives on hover and by keyboard", async () => {
  const { page, errors } = await openPage(server.url);
  assert.match(await page.$eval("#model", (e) => e.textContent), /tiny · context 64/);
  await page.$eval("#max_tokens", (e) => { e.value = "20"; });
  await sendAndWait(page, "Hello there");
  const bodies = await page.$$eval(".msg .body", (els) => els.map((e) => e.textContent));
  assert.equal(bodies.length, 2);
  assert.equal(bodies[0], "Hello there");
  const tokens = await page.$$(".msg.assistant .tok");
  assert.ok(tokens.length > 0, "the reply is made of token spans");
  const tints = await page.$$eval(".msg.assistant .tok", (els) => els.map((e) => e.style.background));
  assert.ok(tints.every((t) => /^(rgba|hsla)\(/.test(t)), "each token tinted by its probability: " + tints);
  await tokens[0].hover();
  await page.waitForSelector("#tip .row");
  const rows = await page.$$eval("#tip .row", (els) => els.map((e) => [e.querySelector(".name").textContent,
                                                                       parseFloat(e.querySelector(".bar").style.width)]));
  assert.ok(rows.length >= 1 && rows.length <= 5);
  assert.ok(rows.every(([, w]) => w >= 0 && w <= 100));
  await page.screenshot({ path: path.join(shots, "chat-hover.png") });
  // Keyboard: Escape hides, arrow keys in a focused message walk its tokens.
  await page.keyboard.press("Escape");
  await page.focus(".msg.assistant .body");
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.$eval("#tip", (e) => e.style.display), "block");
  assert.equal(await page.$$eval(".msg.assistant .tok.sel", (els) => els.length), 1);
  assert.deepEqual(errors, []);
  await page.close();
});

test("attention view: layer and head selectors, a query token, a heat map", async () => {
  const { page, errors } = await openPage(server.url);
  await page.$eval("#max_tokens", (e) => { e.value = "8"; });
  await sendAndWait(page, "The cat sat on the mat");
  assert.deepEqual(await page.$$eval("#layer option", (o) => o.map((x) => x.value)), ["0", "1"]);
  assert.deepEqual(await page.$$eval("#head option", (o) => o.map((x) => x.value)), ["-1", "0", "1"]);
  await page.click("#inspect");
  await page.waitForFunction(() => document.querySelectorAll("#attn-tokens .tok").length > 0);
  const n = await page.$$eval("#attn-tokens .tok", (els) => els.length);
  assert.equal(await page.$eval("#heat", (c) => c.width), n);
  await page.select("#layer", "0");
  await page.select("#head", "1");
  await page.waitForFunction(() => /layer 0, head 1/.test(document.getElementById("status").textContent));
  const spans = await page.$$("#attn-tokens .tok");
  await spans[3].click();
  const shading = await page.$$eval("#attn-tokens .tok", (els) => els.map((e) => e.style.background));
  assert.match(shading[0], /rgba/);                         // token 0 gets some of token 3's attention
  assert.equal(await page.$eval("#attn-tokens .tok.query", (e) => e.dataset.index), "3");
  assert.ok(shading.slice(4).every((s) => / 0\)$/.test(s)), "nothing attends to the future");
  // gpt explain's view of the chosen token: one row per block and the output.
  await page.click("#explain");
  await page.waitForFunction(() => /Explained token 3/.test(document.getElementById("status").textContent));
  assert.equal(await page.$$eval("#explain-view tr", (rows) => rows.length), 1 + 2 + 1);
  await page.screenshot({ path: path.join(shots, "attention.png") });
  assert.deepEqual(errors, []);
  await page.close();
});

test("completion mode and a phone-sized window", async () => {
  const { page, errors } = await openPage(server.url, { width: 390, height: 844, isMobile: true, hasTouch: true });
  await page.click("#mode-complete");
  assert.equal(await page.$eval("#mode-complete", (e) => e.getAttribute("aria-pressed")), "true");
  await page.$eval("#max_tokens", (e) => { e.value = "12"; });
  await sendAndWait(page, "Once upon a time");
  const text = await page.$eval(".msg.completion .body", (e) => e.textContent);
  assert.ok(text.startsWith("Once upon a time") && text.length > "Once upon a time".length);
  // Nothing wider than the screen.
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1));
  const tok = await page.$(".msg.completion .tok:last-child");
  await tok.tap();
  await page.waitForSelector("#tip .row");
  assert.equal(await page.$eval("#tip", (e) => e.style.display), "block", "a tap shows the alternatives");
  await page.screenshot({ path: path.join(shots, "phone-completion.png") });
  assert.deepEqual(errors, []);
  await page.close();
});

test("the stop button ends a long reply", async () => {
  // A byte-level model large enough that 1,000 tokens take seconds.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gpt-slow-"));
  fs.writeFileSync(path.join(dir, "fox.txt"), "The quick brown fox jumps over the lazy dog.\n".repeat(600));
  execFileSync(binary, ["train", "--data", path.join(dir, "fox.txt"), "--tokenizer", "byte", "--out", path.join(dir, "m"),
                        "--n-layer", "6", "--n-head", "6", "--n-embd", "384", "--block-size", "1024", "--batch-size", "1",
                        "--max-iters", "1"], { stdio: "ignore" });
  const slow = await startServer(["--model", path.join(dir, "m"), "--threads", "1"]);
  try {
    const { page, errors } = await openPage(slow.url);
    await page.click("#mode-complete");
    await page.$eval("#max_tokens", (e) => { e.value = "1000"; });
    await page.focus("#input");
    await page.keyboard.type("The");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => !document.getElementById("stop").disabled);
    await page.waitForFunction(() => document.querySelectorAll(".msg.completion .tok").length > 3);
    await page.click("#stop");
    await page.waitForFunction(() => /Stopped/.test(document.getElementById("status").textContent));
    assert.equal(await page.$eval("#send", (e) => e.disabled), false);
    // The page has let go of the stream; the server learns it when it next writes a
    // token (a moment later on a loaded machine): wait for its counter, up to 20 s.
    let metrics = "";
    for (let i = 0; i < 200; ++i) {
      metrics = await (await fetch(slow.url + "/metrics")).text();
      if (/gptcpp_requests_cancelled_total 1/.test(metrics)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(metrics, /gptcpp_requests_cancelled_total 1/);
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    assert.equal(await slow.stop(), 0);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
