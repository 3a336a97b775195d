// Reads a GGUF file with Hugging Face's independent parser (@huggingface/gguf) and prints
// its metadata (arrays abbreviated) and first tensors: a second opinion on what
// `gpt convert` writes. ES modules resolve packages next to the script, so:
//   mkdir -p /tmp/gg && cd /tmp/gg && npm install @huggingface/gguf
//   cp tools/gguf_inspect.mjs /tmp/gg/ && node /tmp/gg/gguf_inspect.mjs FILE.gguf
import { gguf } from "@huggingface/gguf";
const file = process.argv[2];
const { metadata, tensorInfos, tensorDataOffset } = await gguf(file, { allowLocalFile: true, computeParametersCount: true });
const m = {};
for (const [k, v] of Object.entries(metadata)) m[k] = Array.isArray(v) ? `[${v.length}] ${JSON.stringify(v.slice(0, 3))}` : v;
console.log(JSON.stringify(m, (k, v) => typeof v === "bigint" ? v.toString() : v, 1));
console.log("tensors", tensorInfos.length, "data offset", tensorDataOffset.toString());
for (const t of tensorInfos.slice(0, 6)) console.log(t.name, t.shape.map(String), t.dtype, t.offset.toString());
