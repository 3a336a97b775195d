#!/usr/bin/python3
"""Reference fixtures for gpt.cpp's tests, computed by PyTorch in float64.

Builds the GPT-2 architecture, and the Llama family from Hugging Face's
LlamaForCausalLM equations (RMSNorm, rotate-half RoPE, SwiGLU, grouped-query
attention with repeated K/V heads; Qwen2's q/k/v biases), from plain tensor
operations (no gpt.cpp code, no transformers library) for tiny configurations,
and writes one safetensors file per configuration to tests/fixtures/:

  param.<name>   initial parameters (float32 values; Hugging Face names/layouts)
  tokens, targets   int32 (B, T)
  logits         (B, T, V) of the initial model
  loss           (1,) mean cross-entropy
  grad.<name>    gradient of the loss for every parameter
  losses         (3,) loss before each of 3 AdamW steps (same batch every step)
  grad_norms     (3,) global gradient norm before clipping, per step
  step3.<name>   parameters after the 3 AdamW steps with global-norm clipping
  greedy.prompt, greedy.tokens   int32: a prompt and the 12 tokens greedy decoding
                 of the initial model appends to it (the whole sequence fits the context)
  greedy.margin  (12,) gap between the best and second-best logit at each step

Everything is computed in float64, so the fixture is the exact answer to float32
inputs and the C++ tests measure gpt.cpp's own float32 error.

Run:  /usr/bin/python3 tools/torch_reference.py   (needs Debian's python3-torch)
CI never runs this; the fixtures are committed.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

CONFIGS = {
    "tiny_learned_tied": dict(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32,
                              position_encoding="learned", tie_word_embeddings=True, B=4, T=16, seed=1),
    "tiny_sinusoidal_untied": dict(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=24,
                                   position_encoding="sinusoidal", tie_word_embeddings=False, B=3, T=13, seed=2),
}
# Llama family: head widths 8/12/16, GQA and not, tied and untied, Qwen2's biases.
LLAMA_CONFIGS = {
    "tiny_llama_gqa_tied": dict(arch="llama", vocab_size=64, block_size=16, n_layer=2, n_head=4, n_kv_head=2,
                                n_embd=32, ffn_hidden=48, rope_theta=10000.0, rms_norm_eps=1e-5,
                                tie_word_embeddings=True, attention_bias=False, B=3, T=16, seed=11),
    "tiny_llama_untied": dict(arch="llama", vocab_size=61, block_size=16, n_layer=2, n_head=2, n_kv_head=2,
                              n_embd=24, ffn_hidden=40, rope_theta=500.0, rms_norm_eps=1e-6,
                              tie_word_embeddings=False, attention_bias=False, B=2, T=13, seed=12),
    # Past the trained context: Hugging Face's linear and yarn rope_scaling (the
    # model trained on 8 positions, run on 16).
    "tiny_llama_linear_x2": dict(arch="llama", vocab_size=40, block_size=16, n_layer=1, n_head=2, n_kv_head=1,
                                 n_embd=32, ffn_hidden=40, rope_theta=10000.0, rms_norm_eps=1e-5,
                                 tie_word_embeddings=True, attention_bias=False, B=2, T=16, seed=14,
                                 rope_scaling=dict(rope_type="linear", factor=2.0, original_max_position_embeddings=8)),
    "tiny_llama_yarn_x2": dict(arch="llama", vocab_size=40, block_size=16, n_layer=2, n_head=2, n_kv_head=2,
                               n_embd=64, ffn_hidden=40, rope_theta=10000.0, rms_norm_eps=1e-5,
                               tie_word_embeddings=True, attention_bias=False, B=2, T=16, seed=15,
                               # betas for 8 positions: pairs 0-4 kept, 10-15 interpolated, a ramp between
                               rope_scaling=dict(rope_type="yarn", factor=2.0, original_max_position_embeddings=8,
                                                 beta_fast=0.05, beta_slow=0.005)),
    "tiny_qwen2_bias_mqa": dict(arch="llama", vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=1,
                                n_embd=64, ffn_hidden=72, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                tie_word_embeddings=True, attention_bias=True, B=2, T=15, seed=13),
}
LRS = [1e-2, 6e-3, 3e-3]
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1


def llama_param_shapes(c):
    """Hugging Face LlamaForCausalLM names; nn.Linear weights are (out, in)."""
    V, C, F = c["vocab_size"], c["n_embd"], c["ffn_hidden"]
    KV = c["n_kv_head"] * (C // c["n_head"])
    shapes = [("model.embed_tokens.weight", (V, C))]
    for l in range(c["n_layer"]):
        p = f"model.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (C,)),
                   (p + "self_attn.q_proj.weight", (C, C)), (p + "self_attn.k_proj.weight", (KV, C)),
                   (p + "self_attn.v_proj.weight", (KV, C))]
        if c["attention_bias"]:
            shapes += [(p + "self_attn.q_proj.bias", (C,)), (p + "self_attn.k_proj.bias", (KV,)),
                       (p + "self_attn.v_proj.bias", (KV,))]
        shapes += [(p + "self_attn.o_proj.weight", (C, C)), (p + "post_attention_layernorm.weight", (C,)),
                   (p + "mlp.gate_proj.weight", (F, C)), (p + "mlp.up_proj.weight", (F, C)),
                   (p + "mlp.down_proj.weight", (C, F))]
    shapes.append(("model.norm.weight", (C,)))
    if not c["tie_word_embeddings"]:
        shapes.append(("lm_head.weight", (V, C)))
    return shapes


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_inv_freq(c, hs):
    """Hugging Face's RoPE frequencies (modeling_rope_utils): default, linear, yarn."""
    base = c["rope_theta"]
    pos_freqs = base ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    s = c.get("rope_scaling")
    if s is None:
        return 1.0 / pos_freqs, 1.0
    factor = s["factor"]
    if s["rope_type"] == "linear":
        return 1.0 / pos_freqs / factor, 1.0
    assert s["rope_type"] == "yarn"
    orig = s["original_max_position_embeddings"]
    mscale = 0.1 * math.log(factor) + 1.0

    def correction_dim(rotations):
        return (hs * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(correction_dim(s["beta_fast"])), 0)
    high = min(math.ceil(correction_dim(s["beta_slow"])), hs - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(hs // 2, dtype=torch.float64) - low) / (high - low), 0, 1)
    extrapolation_factor = 1 - ramp
    inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_factor) + (1.0 / pos_freqs) * extrapolation_factor
    return inv, mscale


def llama_forward(c, p, tokens):
    """LlamaForCausalLM's forward (eager attention), float64."""
    B, T = tokens.shape
    C, NH, NKV, eps = c["n_embd"], c["n_head"], c["n_kv_head"], c["rms_norm_eps"]
    hs = C // NH
    inv_freq, mscale = rope_inv_freq(c, hs)
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos() * mscale, emb.sin() * mscale
    x = p["model.embed_tokens.weight"][tokens]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))

    def proj(h, name):
        y = h @ p[name + ".weight"].T
        return y + p[name + ".bias"] if name + ".bias" in p else y

    for l in range(c["n_layer"]):
        q = f"model.layers.{l}."
        h = rms_norm(x, p[q + "input_layernorm.weight"], eps)
        qq = proj(h, q + "self_attn.q_proj").view(B, T, NH, hs).transpose(1, 2)
        kk = proj(h, q + "self_attn.k_proj").view(B, T, NKV, hs).transpose(1, 2)
        vv = proj(h, q + "self_attn.v_proj").view(B, T, NKV, hs).transpose(1, 2)
        qq = qq * cos + rotate_half(qq) * sin
        kk = kk * cos + rotate_half(kk) * sin
        kk = kk.repeat_interleave(NH // NKV, dim=1)
        vv = vv.repeat_interleave(NH // NKV, dim=1)
        att = (qq @ kk.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ vv).transpose(1, 2).reshape(B, T, C)
        x = x + proj(y, q + "self_attn.o_proj")
        h = rms_norm(x, p[q + "post_attention_layernorm.weight"], eps)
        x = x + proj(F.silu(proj(h, q + "mlp.gate_proj")) * proj(h, q + "mlp.up_proj"), q + "mlp.down_proj")
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if c["tie_word_embeddings"] else p["lm_head.weight"]
    return x @ head.T


def llama_config_json(c):
    """The config.json keys gpt.cpp reads for the Llama family."""
    return {"model_type": "qwen2" if c["attention_bias"] else "llama", "vocab_size": c["vocab_size"],
            "max_position_embeddings": c["block_size"], "hidden_size": c["n_embd"],
            "intermediate_size": c["ffn_hidden"], "num_hidden_layers": c["n_layer"],
            "num_attention_heads": c["n_head"], "num_key_value_heads": c["n_kv_head"],
            "rms_norm_eps": c["rms_norm_eps"], "rope_theta": c["rope_theta"],
            "tie_word_embeddings": c["tie_word_embeddings"], "attention_bias": c["attention_bias"],
            "hidden_act": "silu", "rope_scaling": c.get("rope_scaling")}


def param_shapes(c):
    if c.get("arch") == "llama":
        return llama_param_shapes(c)
    V, T, C = c["vocab_size"], c["block_size"], c["n_embd"]
    shapes = [("wte.weight", (V, C))]
    if c["position_encoding"] == "learned":
        shapes.append(("wpe.weight", (T, C)))
    for l in range(c["n_layer"]):
        p = f"h.{l}."
        shapes += [(p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
                   (p + "attn.c_attn.weight", (C, 3 * C)), (p + "attn.c_attn.bias", (3 * C,)),
                   (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
                   (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
                   (p + "mlp.c_fc.weight", (C, 4 * C)), (p + "mlp.c_fc.bias", (4 * C,)),
                   (p + "mlp.c_proj.weight", (4 * C, C)), (p + "mlp.c_proj.bias", (C,))]
    shapes += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    if not c["tie_word_embeddings"]:
        shapes.append(("lm_head.weight", (V, C)))
    return shapes


def init_params(c, gen):
    """Spread-out random weights (not GPT-2's 0.02) so outputs are far from uniform
    and every gradient is well above float32 noise."""
    params = {}
    norms = ("ln_1.weight", "ln_2.weight", "ln_f.weight", "layernorm.weight", "model.norm.weight")
    for name, shape in param_shapes(c):
        if name.endswith(norms):
            t = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=gen)
        else:
            t = 0.15 * torch.randn(shape, generator=gen)
        params[name] = t.float().double().requires_grad_(True)
    return params


def sinusoid(T, C):
    pe = torch.zeros(T, C, dtype=torch.float64)
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    i = torch.arange(0, C, 2, dtype=torch.float64)
    freq = torch.pow(10000.0, -i / C)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


M64 = (1 << 64) - 1


def mix64(x):
    """gpt.cpp's SplitMix64 finaliser (util/rng.h) on numpy uint64 arrays."""
    import numpy as np
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(M64)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(M64)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(M64)
    return x ^ (x >> np.uint64(31))


def dropout_mask(drop, site, index):
    """Scaled keep-mask (0 or 1/(1-p)) of the elements `index` (uint64 array) of a
    dropout site, drawn as kernels/dropout.h draws it."""
    import numpy as np
    with np.errstate(over="ignore"):
        site_seed = mix64(np.uint64(drop["seed"]) ^ np.uint64(0xD20F000000000000 | site))
        h = mix64(site_seed ^ mix64(index)) >> np.uint64(32)
    p32 = float(np.float32(drop["p"]))
    threshold = int(p32 * 4294967296.0)
    keep = h >= np.uint64(threshold)
    return torch.tensor(keep.astype("float64") / (1.0 - p32))


def token_mask(drop, site, B, T, width):
    """(B, T, width): index ((row * row_stride + t) * width + k), row = first_row + b."""
    import numpy as np
    b = np.arange(B, dtype=np.uint64)[:, None, None] + np.uint64(drop["first_row"])
    t = np.arange(T, dtype=np.uint64)[None, :, None]
    k = np.arange(width, dtype=np.uint64)[None, None, :]
    return dropout_mask(drop, site, (b * np.uint64(drop["row_stride"]) + t) * np.uint64(width) + k)


def attention_mask(drop, site, B, NH, T):
    """(B, NH, T, T): index ((row * NH + h) * row_stride + t) * row_stride + s."""
    import numpy as np
    rs = np.uint64(drop["row_stride"])
    b = np.arange(B, dtype=np.uint64)[:, None, None, None] + np.uint64(drop["first_row"])
    h = np.arange(NH, dtype=np.uint64)[None, :, None, None]
    t = np.arange(T, dtype=np.uint64)[None, None, :, None]
    s = np.arange(T, dtype=np.uint64)[None, None, None, :]
    return dropout_mask(drop, site, ((b * np.uint64(NH) + h) * rs + t) * rs + s)


def forward(c, p, tokens, lora=None, hidden=False, dropout=None):
    """lora: None, or dict(scale, A/B per "h.{l}.{module}" and "tokens_begin" + "token_rows").
    dropout: None, or dict(p, seed, first_row, row_stride): nanoGPT's dropout sites
    (embeddings; per layer the attention weights and both residual branches) with
    gpt.cpp's hashed masks."""
    if c.get("arch") == "llama":
        assert lora is None and not hidden and dropout is None
        return llama_forward(c, p, tokens)
    B, T = tokens.shape
    C, NH = c["n_embd"], c["n_head"]
    hs = C // NH
    pos = p["wpe.weight"][:T] if c["position_encoding"] == "learned" else sinusoid(T, C)
    wte = p["wte.weight"]
    if lora is not None and "token_rows" in lora:  # PEFT's trainable tokens: the rows replaced
        wte = torch.cat([wte[:lora["tokens_begin"]], lora["token_rows"]], dim=0)
    x = wte[tokens] + pos
    if dropout is not None:
        x = x * token_mask(dropout, 0, B, T, C)

    def linear(h, l, module):
        y = h @ p[f"h.{l}.{module}.weight"]
        key = f"h.{l}.{module}"
        if lora is not None and key in lora["A"]:
            y = y + lora["scale"] * (h @ lora["A"][key].T) @ lora["B"][key].T
        return y + p[f"h.{l}.{module}.bias"]

    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(c["n_layer"]):
        q = f"h.{l}."
        h = F.layer_norm(x, (C,), p[q + "ln_1.weight"], p[q + "ln_1.bias"], eps=1e-5)
        qkv = linear(h, l, "attn.c_attn")
        qq, kk, vv = qkv.split(C, dim=2)
        qq = qq.view(B, T, NH, hs).transpose(1, 2)
        kk = kk.view(B, T, NH, hs).transpose(1, 2)
        vv = vv.view(B, T, NH, hs).transpose(1, 2)
        att = (qq @ kk.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        if dropout is not None:
            att = att * attention_mask(dropout, 1 + 3 * l, B, NH, T)
        y = (att @ vv).transpose(1, 2).reshape(B, T, C)
        branch = linear(y, l, "attn.c_proj")
        x = x + (branch if dropout is None else branch * token_mask(dropout, 2 + 3 * l, B, T, C))
        h = F.layer_norm(x, (C,), p[q + "ln_2.weight"], p[q + "ln_2.bias"], eps=1e-5)
        h = F.gelu(linear(h, l, "mlp.c_fc"), approximate="tanh")
        branch = linear(h, l, "mlp.c_proj")
        x = x + (branch if dropout is None else branch * token_mask(dropout, 3 + 3 * l, B, T, C))
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps=1e-5)
    if hidden:
        return x
    head = wte if c["tie_word_embeddings"] else p["lm_head.weight"]
    return x @ head.T


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.dtype == torch.float64:
            t = t.float()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits as int16
            dtype, data = "BF16", t.view(torch.int16).numpy().tobytes()
        else:
            dtype = {torch.float32: "F32", torch.float16: "F16", torch.int32: "I32"}[t.dtype]
            data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def make_fixture(name, c):
    gen = torch.Generator().manual_seed(c["seed"])
    p = init_params(c, gen)
    B, T, V = c["B"], c["T"], c["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    out = {f"param.{k}": v.detach().clone() for k, v in p.items()}
    out["tokens"] = tokens.int()
    out["targets"] = targets.int()

    logits = forward(c, p, tokens)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
    loss.backward()
    out["logits"] = logits

    # Greedy continuation, recomputing the whole sequence each step (no cache).
    with torch.no_grad():
        seq = tokens[0, :4].clone()
        margins = []
        for _ in range(12):
            last = forward(c, p, seq[None, :])[0, -1]
            top2 = torch.topk(last, 2).values
            margins.append((top2[0] - top2[1]).item())
            seq = torch.cat([seq, last.argmax().view(1)])
    out["greedy.prompt"] = tokens[0, :4].int()
    out["greedy.tokens"] = seq[4:].int()
    out["greedy.margin"] = torch.tensor(margins)
    out["loss"] = loss.detach().view(1)
    for k, v in p.items():
        out[f"grad.{k}"] = v.grad.clone()
    first_norm = torch.sqrt(sum((v.grad ** 2).sum() for v in p.values())).item()
    clip = 0.5 * first_norm  # so that clipping really happens on the first step

    decay = [v for k, v in p.items() if v.dim() >= 2]
    no_decay = [v for k, v in p.items() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LRS[0], betas=BETAS, eps=EPS)
    losses, norms = [], []
    for lr in LRS:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        l = F.cross_entropy(forward(c, p, tokens).view(-1, V), targets.view(-1))
        l.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(list(p.values()), clip).item())
        losses.append(l.item())
        opt.step()
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    for k, v in p.items():
        out[f"step3.{k}"] = v.detach().clone()
    if c.get("arch") == "llama":
        cfg = llama_config_json(c)
    else:  # Hugging Face GPT-2 config keys, as gpt.cpp's config.json uses them.
        cfg = {k: c[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd", "position_encoding",
                                 "tie_word_embeddings")}
        cfg["n_positions"] = c["block_size"]
    meta = {"config": json.dumps(cfg), "lrs": json.dumps(LRS), "betas": json.dumps(list(BETAS)),
            "eps": repr(EPS), "weight_decay": repr(WEIGHT_DECAY), "grad_clip": repr(clip),
            "torch_version": torch.__version__}
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, out, meta)
    print(f"{path}: loss {loss.item():.6f}, grad norm {first_norm:.4f}, clip {clip:.4f}, losses {losses}, "
          f"smallest greedy margin {min(margins):.2e}")


LORA_CONFIG = dict(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16, position_encoding="learned",
                   tie_word_embeddings=True, B=3, T=12, seed=3, rank=4, alpha=8.0, tokens_begin=37,
                   targets=["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"])


def make_lora_fixture(name, c):
    """Fine-tuning: targets masked as a chat's prompt is (-1: ignored, the mean over
    the rest), for the whole model and for a LoRA adapter (rank r, alpha, all four
    products, the last vocabulary rows trainable as PEFT's trainable tokens), then 3
    AdamW steps of the adapter alone.

      param.<name>, tokens, targets (int32, -1 = ignored)
      loss, logits, grad.<name>                the whole model, masked loss
      lora.<peft name>                         the adapter's initial values (B nonzero)
      lora_logits, lora_loss, lora_grad.<peft name>
      lora_losses (3,), lora_step3.<peft name> after 3 AdamW steps (clipped)
    """
    gen = torch.Generator().manual_seed(c["seed"])
    p = init_params(c, gen)
    for v in p.values():  # away from the init's symmetries
        v.data += 0.1 * torch.randn(v.shape, generator=gen)
    B, T, V, C = c["B"], c["T"], c["vocab_size"], c["n_embd"]
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    tokens[0, 2], tokens[1, 5], targets[2, 3] = V - 1, V - 2, V - 3  # the trainable tokens in use
    ignored = torch.rand(B, T, generator=gen) < 0.4
    targets[ignored] = -1
    out = {f"param.{k}": v.detach().clone() for k, v in p.items()}
    out["tokens"], out["targets"] = tokens.int(), targets.int()

    logits = forward(c, p, tokens)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)
    loss.backward()
    out["logits"], out["loss"] = logits, loss.detach().view(1)
    for k, v in p.items():
        out[f"grad.{k}"] = v.grad.clone()
        v.grad = None
        v.requires_grad_(False)

    r, scale = c["rank"], c["alpha"] / c["rank"]
    lora = {"scale": scale, "A": {}, "B": {}, "tokens_begin": c["tokens_begin"]}
    names = {}
    for l in range(c["n_layer"]):
        for m in c["targets"]:
            key = f"h.{l}.{m}"
            w = p[key + ".weight"]
            fan_in, fan_out = w.shape
            lora["A"][key] = ((torch.rand(r, fan_in, generator=gen) * 2 - 1) / math.sqrt(fan_in)).requires_grad_()
            lora["B"][key] = (0.2 * torch.randn(fan_out, r, generator=gen)).requires_grad_()
            names[f"base_model.model.transformer.{key}.lora_A.weight"] = lora["A"][key]
            names[f"base_model.model.transformer.{key}.lora_B.weight"] = lora["B"][key]
    rows = p["wte.weight"][c["tokens_begin"]:].clone() + 0.05 * torch.randn(V - c["tokens_begin"], C, generator=gen)
    lora["token_rows"] = rows.requires_grad_()
    names["base_model.model.transformer.wte.token_adapter.trainable_tokens_delta"] = lora["token_rows"]
    for k, v in names.items():
        out[f"lora.{k}"] = v.detach().clone()

    lora_logits = forward(c, p, tokens, lora)
    lora_loss = F.cross_entropy(lora_logits.view(-1, V), targets.view(-1), ignore_index=-1)
    lora_loss.backward()
    out["lora_logits"], out["lora_loss"] = lora_logits, lora_loss.detach().view(1)
    for k, v in names.items():
        out[f"lora_grad.{k}"] = v.grad.clone()
    first_norm = torch.sqrt(sum((v.grad ** 2).sum() for v in names.values())).item()
    clip = 0.5 * first_norm
    decay = [v for k, v in names.items() if "lora_" in k]
    no_decay = [v for k, v in names.items() if "lora_" not in k]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LRS[0], betas=BETAS, eps=EPS)
    losses = []
    for lr in LRS:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        l = F.cross_entropy(forward(c, p, tokens, lora).view(-1, V), targets.view(-1), ignore_index=-1)
        l.backward()
        torch.nn.utils.clip_grad_norm_(list(names.values()), clip)
        losses.append(l.item())
        opt.step()
    out["lora_losses"] = torch.tensor(losses, dtype=torch.float64)
    for k, v in names.items():
        out[f"lora_step3.{k}"] = v.detach().clone()
    cfg = {k: c[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd", "position_encoding", "tie_word_embeddings")}
    cfg["n_positions"] = c["block_size"]
    meta = {"config": json.dumps(cfg), "lrs": json.dumps(LRS), "betas": json.dumps(list(BETAS)), "eps": repr(EPS),
            "weight_decay": repr(WEIGHT_DECAY), "grad_clip": repr(clip), "rank": str(r), "alpha": repr(c["alpha"]),
            "tokens_begin": str(c["tokens_begin"]), "torch_version": torch.__version__}
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, out, meta)
    print(f"{path}: masked loss {loss.item():.6f} ({int((~ignored).sum())} of {B * T} targets), "
          f"LoRA loss {lora_loss.item():.6f}, losses {losses}")


PREF_CONFIG = dict(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16, position_encoding="learned",
                   tie_word_embeddings=True, pairs=3, beta=0.3, seed=4)


def make_preference_fixture(name, c):
    """Preference losses on pairs of sequences (each with a response mask):
    DPO — -log sigma(beta * ((lp(c) - ref(c)) - (lp(r) - ref(r)))), lp the summed
    log-probability of the response tokens (inputs ids[:-1], targets ids[1:]),
    the reference's values given — and Bradley-Terry on a reward head over the
    last token's final hidden state. Means over pairs; gradients of every parameter
    (and of the head).

      param.<name>, pairs.ids (2P, L) int32 (-1 past a sequence), pairs.response (2P, L) int32,
      ref (2P,) reference scores, dpo_loss, dpo_grad.<name>, dpo_z (P,),
      head (C,), bt_loss, bt_grad.<name>, bt_grad_head, bt_rewards (2P,)
    """
    gen = torch.Generator().manual_seed(c["seed"])
    p = init_params(c, gen)
    for v in p.values():
        v.data += 0.1 * torch.randn(v.shape, generator=gen)
    V, C, P = c["vocab_size"], c["n_embd"], c["pairs"]
    seqs, masks = [], []
    for i in range(2 * P):
        n = 5 + (i * 3) % 7  # lengths 5..11, within the context
        prompt = 2 + i % 3
        seqs.append(torch.randint(0, V, (n,), generator=gen))
        masks.append(torch.tensor([0] * prompt + [1] * (n - prompt)))
    L = max(len(s) for s in seqs)
    ids = torch.full((2 * P, L), -1, dtype=torch.int32)
    resp = torch.zeros((2 * P, L), dtype=torch.int32)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)] = s.int()
        resp[i, :len(s)] = m.int()
    ref = torch.randn(2 * P, generator=gen) * 2 - 8
    out = {f"param.{k}": v.detach().clone() for k, v in p.items()}
    out["pairs.ids"], out["pairs.response"], out["ref"] = ids, resp, ref

    def seq_logp(s, m):
        logits = forward(c, p, s[None, :-1])[0]
        lp = torch.log_softmax(logits, dim=-1).gather(1, s[1:, None])[:, 0]
        return (lp * m[1:]).sum()

    beta = c["beta"]
    scores = [seq_logp(s, m) for s, m in zip(seqs, masks)]
    z = torch.stack([beta * ((scores[2 * i] - ref[2 * i]) - (scores[2 * i + 1] - ref[2 * i + 1])) for i in range(P)])
    loss = F.softplus(-z).mean()
    loss.backward()
    out["dpo_loss"], out["dpo_z"] = loss.detach().view(1), z.detach()
    for k, v in p.items():
        out[f"dpo_grad.{k}"] = v.grad.clone()
        v.grad = None

    head = (0.3 * torch.randn(C, generator=gen)).requires_grad_()
    rewards = torch.stack([forward(c, p, s[None, :], hidden=True)[0, -1] @ head for s in seqs])
    bt = F.softplus(-(rewards[0::2] - rewards[1::2])).mean()
    bt.backward()
    out["head"], out["bt_loss"], out["bt_rewards"] = head.detach().clone(), bt.detach().view(1), rewards.detach()
    out["bt_grad_head"] = head.grad.clone()
    for k, v in p.items():
        out[f"bt_grad.{k}"] = v.grad.clone()
    cfg = {k: c[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd", "position_encoding", "tie_word_embeddings")}
    cfg["n_positions"] = c["block_size"]
    meta = {"config": json.dumps(cfg), "beta": repr(beta), "torch_version": torch.__version__}
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, out, meta)
    print(f"{path}: DPO loss {loss.item():.6f}, Bradley-Terry loss {bt.item():.6f}")


def make_ppo_fixture(name, seed=5, n=40):
    """The PPO / GRPO objective on token values (no model): the clipped surrogate
    -min(A r, A clip(r, 1-e, 1+e)), r = exp(new - old); the clipped value loss
    0.5 max((V - R)^2, (V_old + clip(V - V_old, -ev, ev) - R)^2); the k3 KL
    exp(ref - new) - (ref - new) - 1 — each a mean over tokens — with the gradients
    by autograd; and GAE (gamma, lambda) over one answer's rewards and values.

      ppo.*  (values, no KL): new, old, adv, v, v_old, ret -> loss, d_new, d_v, clip_fraction
      grpo.* (KL, no values): new, old, adv, ref -> loss, d_new
      gae.*  rewards, values -> advantages, returns
    """
    gen = torch.Generator().manual_seed(seed)
    eps, ev, vf, kl_coef, gamma, lam = 0.2, 0.2, 0.1, 0.05, 0.97, 0.9
    old = -torch.rand(n, generator=gen) * 4
    new = (old + torch.randn(n, generator=gen) * 0.3).requires_grad_()  # ratios on both sides of the clip
    adv = torch.randn(n, generator=gen)
    v_old = torch.randn(n, generator=gen)
    v = (v_old + torch.randn(n, generator=gen) * 0.3).requires_grad_()
    ret = torch.randn(n, generator=gen)
    ratio = torch.exp(new - old)
    pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps)).mean()
    v_clip = v_old + torch.clamp(v - v_old, -ev, ev)
    vl = 0.5 * torch.max((v - ret) ** 2, (v_clip - ret) ** 2).mean()
    loss = pg + vf * vl
    loss.backward()
    clip_fraction = ((-adv * torch.clamp(ratio, 1 - eps, 1 + eps)) > (-adv * ratio)).double().mean()
    out = {"ppo.new": new.detach().clone(), "ppo.old": old, "ppo.adv": adv, "ppo.v": v.detach().clone(),
           "ppo.v_old": v_old, "ppo.ret": ret, "ppo.loss": loss.detach().view(1), "ppo.d_new": new.grad.clone(),
           "ppo.d_v": v.grad.clone(), "ppo.clip_fraction": clip_fraction.view(1)}

    new2 = (old + torch.randn(n, generator=gen) * 0.3).requires_grad_()
    ref = old + torch.randn(n, generator=gen) * 0.2
    ratio2 = torch.exp(new2 - old)
    pg2 = torch.max(-adv * ratio2, -adv * torch.clamp(ratio2, 1 - eps, 1 + eps)).mean()
    kl = (torch.exp(ref - new2) - (ref - new2) - 1).mean()
    loss2 = pg2 + kl_coef * kl
    loss2.backward()
    out.update({"grpo.new": new2.detach().clone(), "grpo.ref": ref, "grpo.loss": loss2.detach().view(1),
                "grpo.d_new": new2.grad.clone()})

    rewards = torch.randn(12, generator=gen)
    values = torch.randn(12, generator=gen)
    advantages = torch.zeros(12)
    last = 0.0
    for t in reversed(range(12)):
        next_value = values[t + 1] if t + 1 < 12 else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    out.update({"gae.rewards": rewards, "gae.values": values, "gae.advantages": advantages,
                "gae.returns": advantages + values})
    meta = {"clip_range": repr(eps), "value_clip": repr(ev), "vf_coef": repr(vf), "kl_coef": repr(kl_coef),
            "gamma": repr(gamma), "lam": repr(lam), "torch_version": torch.__version__}
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, out, meta)
    print(f"{path}: PPO loss {loss.item():.6f} (clip fraction {clip_fraction.item():.2f}), GRPO loss {loss2.item():.6f}")


DROPOUT_CONFIG = dict(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, position_encoding="learned",
                      tie_word_embeddings=True, B=3, T=8, seed=6, p=0.25, dropout_seed=0x5EED5EED12345678,
                      first_row=5)


def make_dropout_fixture(name, c):
    """nanoGPT's dropout with gpt.cpp's masks: the loss and every gradient of a
    training pass (batch rows first_row.. of a larger batch), and the loss without
    dropout (what evaluation sees)."""
    gen = torch.Generator().manual_seed(c["seed"])
    p = init_params(c, gen)
    B, T, V = c["B"], c["T"], c["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    drop = dict(p=c["p"], seed=c["dropout_seed"], first_row=c["first_row"], row_stride=c["block_size"])
    out = {f"param.{k}": v.detach().clone() for k, v in p.items()}
    out["tokens"] = tokens.int()
    out["targets"] = targets.int()
    loss = F.cross_entropy(forward(c, p, tokens, dropout=drop).view(-1, V), targets.view(-1))
    loss.backward()
    out["loss"] = loss.detach().view(1)
    for k, v in p.items():
        out[f"grad.{k}"] = v.grad.clone()
    with torch.no_grad():
        out["eval_loss"] = F.cross_entropy(forward(c, p, tokens).view(-1, V), targets.view(-1)).view(1)
    cfg = {k: c[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd", "position_encoding", "tie_word_embeddings")}
    cfg["n_positions"] = c["block_size"]
    meta = {"config": json.dumps(cfg), "dropout": repr(c["p"]), "dropout_seed": str(c["dropout_seed"]),
            "first_row": str(c["first_row"]), "torch_version": torch.__version__}
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, out, meta)
    print(f"{path}: loss with dropout {loss.item():.6f}, without {out['eval_loss'].item():.6f}")


MUON = dict(lr=0.02, momentum=0.95, weight_decay=0.01, ns_steps=5, steps=3, seed=9,
            shapes={"wide": (16, 48), "tall": (64, 16)})


def newton_schulz(G, steps):
    """Muon's quintic Newton-Schulz iteration (Keller Jordan's zeropower_via_newtonschulz5), float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = G.size(0) > G.size(1)
    X = G.T if tall else G
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if tall else X


def make_muon_fixture(name, m):
    """Muon on two matrices in GPT-2's (in, out) layout, one wide and one tall: three
    steps of Nesterov momentum (EMA form), Newton-Schulz, decoupled weight decay and
    the max(1, out/in)^0.5 scale; the parameters after each step."""
    gen = torch.Generator().manual_seed(m["seed"])
    out = {}
    for key, (rows, cols) in m["shapes"].items():
        w = (0.1 * torch.randn(rows, cols, generator=gen)).float().double()
        out[f"{key}.w0"] = w.clone()
        buf = torch.zeros_like(w)
        for step in range(m["steps"]):
            g = torch.randn(rows, cols, generator=gen).float().double()
            out[f"{key}.grad{step}"] = g
            buf = m["momentum"] * buf + (1 - m["momentum"]) * g
            u = (1 - m["momentum"]) * g + m["momentum"] * buf
            o = newton_schulz(u, m["ns_steps"])
            w = w * (1 - m["lr"] * m["weight_decay"]) - m["lr"] * max(1.0, cols / rows) ** 0.5 * o
            out[f"{key}.w{step + 1}"] = w.clone()
        out[f"{key}.ns"] = newton_schulz(out[f"{key}.grad0"], m["ns_steps"])
    meta = {k: repr(m[k]) for k in ("lr", "momentum", "weight_decay", "ns_steps", "steps")}
    meta["torch_version"] = torch.__version__
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, out, meta)
    sv = torch.linalg.svdvals(out["wide.ns"])
    print(f"{path}: singular values after Newton-Schulz {sv.min().item():.3f}..{sv.max().item():.3f}")


def main():
    torch.set_default_dtype(torch.float64)
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, c in CONFIGS.items():
        make_fixture(name, c)
    for name, c in LLAMA_CONFIGS.items():
        make_fixture(name, c)
    make_lora_fixture("tiny_lora_sft", LORA_CONFIG)
    make_preference_fixture("tiny_preference", PREF_CONFIG)
    make_ppo_fixture("ppo_objective")
    make_dropout_fixture("tiny_dropout", DROPOUT_CONFIG)
    make_muon_fixture("muon_update", MUON)
    return 0


if __name__ == "__main__":
    sys.exit(main())
