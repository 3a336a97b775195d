#!/usr/bin/python3
"""A tiny GPT-2 in Hugging Face's on-disk layout, and PyTorch's answers for it.

Real GPT-2 weights cannot be downloaded here, so this script makes a stand-in that
exercises the same import path: GPT-2's real vocabulary (50257 tokens, from
../shared/data/gpt2/), two layers of width 32, weights drawn with a wide spread so
the logits are far from uniform, written the way the Hugging Face hub ships GPT-2:

  tests/fixtures/hf_gpt2_tiny/config.json        model_type gpt2, n_positions, n_embd, ...
  tests/fixtures/hf_gpt2_tiny/model.safetensors  float16 tensors, hub names without the
                                                 "transformer." prefix, Conv1D weights
                                                 (in, out), plus the "h.N.attn.bias"
                                                 causal-mask buffers old checkpoints carry
  tests/fixtures/hf_gpt2_tiny/vocab.json, merges.txt   GPT-2's tokenizer files
  tests/fixtures/hf_gpt2_tiny_reference.json     what PyTorch computes (float64, on the
                                                 float16 weights):
      text, ids           a sentence and its GPT-2 token ids (checked against gpt.cpp's
                          tokenizer by the test)
      loss                mean next-token cross-entropy over ids
      rows[t]             for every position: the logsumexp of the logits, the top-8
                          (id, logit) pairs and the logits at 32 fixed probe ids
      greedy.prompt, greedy.tokens, greedy.margins   24 tokens of greedy continuation
                          (recomputing the whole sequence each step) and the gap between
                          the best and second-best logit at each step

Run:  /usr/bin/python3 tools/hf_gpt2_reference.py   (needs Debian's python3-torch and
the shared GPT-2 vocabulary). CI never runs this; the outputs are committed.
"""
import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_reference import forward, param_shapes, write_safetensors  # noqa: E402  (the same plain-torch GPT-2)

ROOT = os.path.join(HERE, "..")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2_tiny")
REF_FILE = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2_tiny_reference.json")
VOCAB_DIR = os.path.join(ROOT, "..", "shared", "data", "gpt2")

CONFIG = dict(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=32,
              position_encoding="learned", tie_word_embeddings=True)
TEXT = ("The quick brown fox jumps over the lazy dog. In the beginning God created "
        "the heaven and the earth, and gpt.cpp reads what Hugging Face writes.")
PROBES = list(range(0, 50257, 1621))[:32]


def gpt2_ids(text):
    """GPT-2 ids from the build's `gpt tokenize encode` (torch has no BPE); that encoder
    is proven id-for-id equal to tiktoken by tests/fixtures/gpt2_bpe_cases.json."""
    import subprocess
    exe = os.path.join(ROOT, "build", "gpt")
    out = subprocess.run([exe, "tokenize", "encode", "--tokenizer", VOCAB_DIR],
                         input=text.encode(), capture_output=True, check=True).stdout.decode()
    return [int(t) for t in out.split()]


def main():
    c = CONFIG
    gen = torch.Generator().manual_seed(7)
    params = {}
    for name, shape in param_shapes(c):
        if name.endswith(("ln_1.weight", "ln_2.weight")) or name == "ln_f.weight":
            t = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=gen)
        elif name == "wte.weight":
            t = 0.5 * torch.randn(shape, generator=gen)  # wide: logits far from uniform
        else:
            t = 0.2 * torch.randn(shape, generator=gen)
        params[name] = t.half()  # what is stored; the reference computes on exactly these values

    os.makedirs(OUT_DIR, exist_ok=True)
    tensors = {}
    for name, t in params.items():
        tensors[name] = t
        if name.endswith("ln_1.weight"):  # hub checkpoints carry the causal mask as a buffer
            layer = name.split(".")[1]
            T = c["block_size"]
            tensors[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T).half()
    write_safetensors(os.path.join(OUT_DIR, "model.safetensors"), tensors, {"format": "pt"})
    hf_config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
                 "vocab_size": c["vocab_size"], "n_positions": c["block_size"], "n_ctx": c["block_size"],
                 "n_embd": c["n_embd"], "n_layer": c["n_layer"], "n_head": c["n_head"], "n_inner": None,
                 "layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256,
                 "torch_dtype": "float16"}
    with open(os.path.join(OUT_DIR, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    shutil.copyfile(os.path.join(VOCAB_DIR, "encoder.json"), os.path.join(OUT_DIR, "vocab.json"))
    shutil.copyfile(os.path.join(VOCAB_DIR, "vocab.bpe"), os.path.join(OUT_DIR, "merges.txt"))

    p = {k: v.double() for k, v in params.items()}
    ids = gpt2_ids(TEXT)
    assert len(ids) < c["block_size"], len(ids)
    tokens = torch.tensor([ids])
    with torch.no_grad():
        logits = forward(c, p, tokens)[0]
        loss = F.cross_entropy(logits[:-1], tokens[0, 1:]).item()
        rows = []
        for t in range(len(ids)):
            top = torch.topk(logits[t], 8)
            rows.append({"logsumexp": torch.logsumexp(logits[t], 0).item(),
                         "top_ids": top.indices.tolist(), "top_logits": top.values.tolist(),
                         "probe_logits": logits[t, PROBES].tolist()})
        seq = tokens[0, :8].clone()
        margins = []
        for _ in range(24):
            last = forward(c, p, seq[None, :])[0, -1]
            top2 = torch.topk(last, 2).values
            margins.append((top2[0] - top2[1]).item())
            seq = torch.cat([seq, last.argmax().view(1)])
    ref = {"text": TEXT, "ids": ids, "loss": loss, "probe_ids": PROBES, "rows": rows,
           "greedy": {"prompt": ids[:8], "tokens": seq[8:].tolist(), "margins": margins},
           "torch_version": torch.__version__}
    with open(REF_FILE + ".tmp", "w") as f:
        json.dump(ref, f)
    os.replace(REF_FILE + ".tmp", REF_FILE)
    print(f"{len(ids)} tokens, loss {loss:.5f}, logit std {logits.std().item():.3f}, "
          f"smallest greedy margin {min(margins):.4f}")


if __name__ == "__main__":
    main()
