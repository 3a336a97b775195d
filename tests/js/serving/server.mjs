// Starts a real `gpt serve` on a free loopback port for the Node tests.
// GPT_BINARY: the gpt executable; GPT_SOURCE_DIR: the checkout (for the model fixture).
import { spawn } from "node:child_process";
import path from "node:path";

export const binary = process.env.GPT_BINARY;
export const sourceDir = process.env.GPT_SOURCE_DIR;
export const tinyModel = sourceDir && path.join(sourceDir, "tests/fixtures/hf_gpt2_tiny");

export function startServer(args = []) {
  if (!binary) throw new Error("set GPT_BINARY to the gpt executable");
  const proc = spawn(binary, ["serve", "--port", "0", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("gpt serve did not start:\n" + log)), 60000);
    proc.stderr.on("data", (d) => {
      log += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: m[1], proc, log: () => log,
          stop: () => new Promise((done) => { proc.once("exit", (code) => done(code)); proc.kill("SIGTERM"); }),
        });
      }
    });
    proc.once("exit", (code) => { clearTimeout(timer); reject(new Error(`gpt serve exited (${code}):\n${log}`)); });
  });
}
