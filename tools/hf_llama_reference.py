#!/usr/bin/python3
"""A tiny Llama in Hugging Face's on-disk layout, and PyTorch's answers for it.

No Llama weights can be downloaded here, so this script makes a stand-in that
exercises the import path of a real Llama 2 directory:

  tests/fixtures/hf_llama_tiny/config.json         model_type llama, GQA (4 heads, 2 KV heads),
                                                   untied head, rope_theta, rms_norm_eps, bfloat16
  tests/fixtures/hf_llama_tiny/model-0000N-of-00002.safetensors
                                                   bfloat16 tensors, sharded in two files ...
  tests/fixtures/hf_llama_tiny/model.safetensors.index.json
                                                   ... named by the index, as the hub ships big models
  tests/fixtures/hf_llama_tiny/tokenizer.json      a SentencePiece-style BPE in Llama 2's layout
                                                   (Prepend/Replace normalizer, byte fallback,
                                                   <s> put first by the post-processor), learned
                                                   here on a few sentences
  tests/fixtures/hf_llama_tiny/tokenizer_config.json   Llama 2's chat template, bos/eos tokens
  tests/fixtures/hf_llama_tiny_reference.json      PyTorch's answers (float64 on the bfloat16
                                                   weights): the text's ids (from Tokenizers.js,
                                                   an independent tokenizer, <s> included), the
                                                   loss, per-position logsumexp / top-8 / probe
                                                   logits, and 16 greedy tokens

Run:  /usr/bin/python3 tools/hf_llama_reference.py   (needs Debian's python3-torch, and node
with tests/js's npm packages for the ids). CI never runs this; the outputs are committed.
"""
import collections
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_reference import llama_forward, llama_param_shapes, write_safetensors  # noqa: E402

ROOT = os.path.join(HERE, "..")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "hf_llama_tiny")
REF_FILE = os.path.join(ROOT, "tests", "fixtures", "hf_llama_tiny_reference.json")

META = "\u2581"
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "in the beginning god created the heaven and the earth",
    "gpt.cpp reads what hugging face writes, shard by shard",
    "a language model predicts the next token from the ones before it",
    "the model reads the prompt and then writes one token at a time",
]
TEXT = "The quick brown fox reads the prompt, then writes the next token: ünïcødé falls back to bytes."
N_MERGES = 120
CONFIG = dict(arch="llama", vocab_size=None, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
              ffn_hidden=96, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
              attention_bias=False)
PROBES = 32
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")


def learn_tokenizer():
    """SentencePiece-style BPE: words are "▁" + letters, merged by pair frequency."""
    words = collections.Counter()
    for line in CORPUS:
        for w in line.split(" "):
            words[tuple(META + w)] += 1
    chars = sorted({ch for w in words for ch in w} | set("abcdefghijklmnopqrstuvwxyzTQ.,:!?'"))
    merges = []
    for _ in range(N_MERGES):
        pairs = collections.Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = collections.Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, t in enumerate(["<unk>", "<s>", "</s>"])]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": META},
            {"type": "Replace", "pattern": {"String": " "}, "content": META}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": META}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }


def tokenizers_js_ids(text):
    """The ids Tokenizers.js (npm @huggingface/tokenizers) gives, <s> included."""
    script = ("import { Tokenizer } from '@huggingface/tokenizers'; import fs from 'node:fs';"
              "const [dir, text] = process.argv.slice(1);"
              "const t = new Tokenizer(JSON.parse(fs.readFileSync(dir + '/tokenizer.json', 'utf8')),"
              " JSON.parse(fs.readFileSync(dir + '/tokenizer_config.json', 'utf8')));"
              "console.log(JSON.stringify(t.encode(text).ids));")
    out = subprocess.run(["node", "--input-type=module", "-e", script, "--", OUT_DIR, TEXT],
                         cwd=os.path.join(ROOT, "tests", "js"), capture_output=True, check=True, text=True).stdout
    return json.loads(out)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    tok = learn_tokenizer()
    c = dict(CONFIG, vocab_size=len(tok["model"]["vocab"]))
    with open(os.path.join(OUT_DIR, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
    with open(os.path.join(OUT_DIR, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "legacy": True, "tokenizer_class": "LlamaTokenizer",
                   "chat_template": LLAMA2_CHAT_TEMPLATE}, f, indent=1)

    gen = torch.Generator().manual_seed(21)
    params = {}
    for name, shape in llama_param_shapes(c):
        if name.endswith("norm.weight"):
            t = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = 0.6 * torch.randn(shape, generator=gen)  # wide: logits far from uniform
        else:
            t = 0.15 * torch.randn(shape, generator=gen)
        params[name] = t.bfloat16()  # what is stored; the reference computes on exactly these values

    # Two shards: the embedding and layer 0, then the rest.
    names = [n for n, _ in llama_param_shapes(c)]
    first = [n for n in names if n == "model.embed_tokens.weight" or n.startswith("model.layers.0.")]
    shards = {"model-00001-of-00002.safetensors": first,
              "model-00002-of-00002.safetensors": [n for n in names if n not in first]}
    weight_map, total = {}, 0
    for file, members in shards.items():
        write_safetensors(os.path.join(OUT_DIR, file), {n: params[n] for n in members}, {"format": "pt"})
        for n in members:
            weight_map[n] = file
            total += params[n].numel() * 2
    with open(os.path.join(OUT_DIR, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    hf_config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
                 "vocab_size": c["vocab_size"], "max_position_embeddings": c["block_size"],
                 "hidden_size": c["n_embd"], "intermediate_size": c["ffn_hidden"],
                 "num_hidden_layers": c["n_layer"], "num_attention_heads": c["n_head"],
                 "num_key_value_heads": c["n_kv_head"], "rms_norm_eps": c["rms_norm_eps"],
                 "rope_theta": c["rope_theta"], "rope_scaling": None, "tie_word_embeddings": False,
                 "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    with open(os.path.join(OUT_DIR, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)

    p = {k: v.double() for k, v in params.items()}
    ids = tokenizers_js_ids(TEXT)
    assert ids[0] == 1 and len(ids) < c["block_size"], ids
    V = c["vocab_size"]
    probes = list(range(0, V, max(1, V // PROBES)))[:PROBES]
    tokens = torch.tensor([ids])
    with torch.no_grad():
        logits = llama_forward(c, p, tokens)[0]
        loss = F.cross_entropy(logits[:-1], tokens[0, 1:]).item()
        rows = []
        for t in range(len(ids)):
            top = torch.topk(logits[t], 8)
            rows.append({"logsumexp": torch.logsumexp(logits[t], 0).item(),
                         "top_ids": top.indices.tolist(), "top_logits": top.values.tolist(),
                         "probe_logits": logits[t, probes].tolist()})
        seq = tokens[0, :7].clone()
        margins = []
        for _ in range(16):
            last = llama_forward(c, p, seq[None, :])[0, -1]
            top2 = torch.topk(last, 2).values
            margins.append((top2[0] - top2[1]).item())
            seq = torch.cat([seq, last.argmax().view(1)])
    ref = {"text": TEXT, "ids": ids, "loss": loss, "probe_ids": probes, "rows": rows,
           "greedy": {"prompt": ids[:7], "tokens": seq[7:].tolist(), "margins": margins},
           "torch_version": torch.__version__}
    with open(REF_FILE + ".tmp", "w") as f:
        json.dump(ref, f)
    os.replace(REF_FILE + ".tmp", REF_FILE)
    print(f"vocab {V}, {len(ids)} tokens, loss {loss:.5f}, logit std {logits.std().item():.3f}, "
          f"smallest greedy margin {min(margins):.4f}")


if __name__ == "__main__":
    main()
