#!/usr/bin/python3
"""One training step (forward, backward, AdamW) of the PyTorch model in
torch_train.py, timed after one warm-up step: the yardstick for
bench_train_step. Prints one JSON line: tokens_per_sec, peak RSS.

    /usr/bin/python3 bench/torch_train_step.py --vocab 65 --block-size 64 --n-layer 4 --n-head 4 \
        --n-embd 128 --batch-size 12 [--dtype fp32|bf16] [--steps 5] [--threads 2] [--arch gpt2|llama]
"""
import argparse
import json
import resource
import time

import torch

from torch_train import GPT, Llama


def main():
    ap = argparse.ArgumentParser()
    for k, v in (("vocab", 65), ("block-size", 64), ("n-layer", 4), ("n-head", 4), ("n-embd", 128),
                 ("batch-size", 12), ("steps", 5), ("threads", 2)):
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--arch", default="gpt2", choices=["gpt2", "llama"])
    ap.add_argument("--n-kv-head", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.arch == "llama":
        model = Llama(a.vocab, a.block_size, a.n_layer, a.n_head, a.n_embd, a.n_kv_head or a.n_head)
    else:
        model = GPT(a.vocab, a.block_size, a.n_layer, a.n_head, a.n_embd)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)
    x = torch.randint(0, a.vocab, (a.batch_size, a.block_size))
    y = torch.randint(0, a.vocab, (a.batch_size, a.block_size))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print(json.dumps({"tokens_per_sec": a.steps * a.batch_size * a.block_size / dt,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__, "blas": torch.__config__.show().count("OpenBLAS") > 0}))


if __name__ == "__main__":
    main()
