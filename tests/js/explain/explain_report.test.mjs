// gpt explain's report in a real browser, offline: every section renders, the
// page asks for nothing from the network, and a screenshot is saved
// (GPT_SCREENSHOT_DIR) to look at.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";
import { binary, tinyModel } from "../serving/server.mjs";

const shots = process.env.GPT_SCREENSHOT_DIR || fs.mkdtempSync(path.join(os.tmpdir(), "gpt-shots-"));
fs.mkdirSync(shots, { recursive: true });

test("the report renders every section offline", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gpt-explain-"));
  const report = path.join(dir, "report.html");
  execFileSync(binary, ["explain", "--model", tinyModel, "--prompt", "The cat sat on the mat because it", "--out", report]);
  const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
                                           args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 1600 });
    const requests = [];
    page.on("request", (r) => { if (!r.url().startsWith("file:")) requests.push(r.url()); });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto("file://" + report, { waitUntil: "load" });
    for (const id of ["tokens", "embedding", "blocks", "output"]) {
      const box = await page.$eval("#" + id, (e) => { const r = e.getBoundingClientRect(); return [r.width, r.height]; });
      assert.ok(box[0] > 100 && box[1] > 50, `section ${id} is drawn (${box})`);
    }
    assert.equal(await page.$$eval("section.block", (els) => els.length), 2);  // the tiny model's 2 blocks
    assert.equal(await page.$$eval("#block-0 svg.att", (els) => els.length), 2);  // one strip per head
    assert.equal(await page.$$eval(".tok.at", (els) => els.length), 1);
    assert.ok(await page.$$eval("#output .bar span", (els) => els.every((e) => parseFloat(e.style.width) >= 0)));
    assert.deepEqual(requests, []);
    assert.deepEqual(errors, []);
    await page.screenshot({ path: path.join(shots, "explain-report.png"), fullPage: true });
  } finally {
    await browser.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
