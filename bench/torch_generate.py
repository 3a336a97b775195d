#!/usr/bin/python3
"""PyTorch's KV-cache decoding of a GPT-2-shaped model with random weights: the
yardstick for bench_generate_speed. Prints one JSON line."""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-head", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--block-size", type=int, default=1024)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    L, NH, C, V, T = a.n_layer, a.n_head, a.n_embd, a.vocab, a.block_size
    hs = C // NH
    w = lambda *s: torch.randn(*s) * 0.02
    wte, wpe = w(V, C), w(T, C)
    layers = [dict(ln1=(torch.ones(C), torch.zeros(C)), attn=(w(C, 3 * C), torch.zeros(3 * C)),
                   proj=(w(C, C), torch.zeros(C)), ln2=(torch.ones(C), torch.zeros(C)),
                   fc=(w(C, 4 * C), torch.zeros(4 * C)), fc2=(w(4 * C, C), torch.zeros(C))) for _ in range(L)]
    lnf = (torch.ones(C), torch.zeros(C))
    kc = torch.zeros(L, NH, T, hs)
    vc = torch.zeros(L, NH, T, hs)

    def step(ids, p0):
        n = ids.numel()
        x = wte[ids] + wpe[p0:p0 + n]
        mask = torch.ones(n, p0 + n).tril(diagonal=p0).bool()
        for l, P in enumerate(layers):
            h = F.layer_norm(x, (C,), *P["ln1"])
            q, k, v = torch.addmm(P["attn"][1], h, P["attn"][0]).split(C, dim=1)
            kc[l, :, p0:p0 + n] = k.view(n, NH, hs).transpose(0, 1)
            vc[l, :, p0:p0 + n] = v.view(n, NH, hs).transpose(0, 1)
            q = q.view(n, NH, hs).transpose(0, 1)
            att = (q @ kc[l, :, :p0 + n].transpose(1, 2)) / math.sqrt(hs)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            y = (att @ vc[l, :, :p0 + n]).transpose(0, 1).reshape(n, C)
            x = x + torch.addmm(P["proj"][1], y, P["proj"][0])
            h = F.layer_norm(x, (C,), *P["ln2"])
            x = x + torch.addmm(P["fc2"][1], F.gelu(torch.addmm(P["fc"][1], h, P["fc"][0]), approximate="tanh"), P["fc2"][0])
        return F.layer_norm(x[-1:], (C,), *lnf) @ wte.T

    ids = torch.arange(a.prompt_tokens) * 7919 % V
    with torch.no_grad():
        step(ids[:8], 0)  # warm up
        t0 = time.time()
        step(ids, 0)
        prefill = time.time() - t0
        t0 = time.time()
        for i in range(a.decode_tokens):
            step(torch.tensor([i * 104729 % V]), a.prompt_tokens + i)
        dec = time.time() - t0
    print(json.dumps({"prefill_tokens_per_sec": a.prompt_tokens / prefill, "decode_tokens_per_sec": a.decode_tokens / dec}))


if __name__ == "__main__":
    main()
