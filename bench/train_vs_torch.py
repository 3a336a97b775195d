#!/usr/bin/python3
"""Trains the same model with gpt.cpp and with PyTorch, one after the other on the
same machine and threads, and prints a table of their times and losses.

    /usr/bin/python3 bench/train_vs_torch.py [--max-iters 2000] [--threads 2]

Default: nanoGPT's CPU config on Tiny Shakespeare (char-level, 4 layers, 4 heads,
width 128, block 64, batch 12, 2000 steps). PyTorch runs in its fastest
configuration here: OpenBLAS's OpenMP build with OPENBLAS_CORETYPE=SkylakeX (the
script says which BLAS torch loaded).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--gpt", default=os.path.join(ROOT, "build", "gpt"))
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    config = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--batch-size", "12",
              "--max-iters", str(a.max_iters), "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-iters", "100"]

    out = os.path.join(ROOT, "out", "bench-train")
    gpt = subprocess.run([a.gpt, "train", "--data", a.data, "--out", out, "--threads", str(a.threads), "--quiet",
                          "--eval-interval", str(a.max_iters), "--eval-iters", "200"] + config,
                         check=True, capture_output=True, text=True)
    ours = json.loads(gpt.stdout.strip().splitlines()[-1])

    env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX", OMP_NUM_THREADS=str(a.threads))
    torch_run = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_train.py"), "--data", a.data,
                                "--threads", str(a.threads)] + config,
                               check=True, capture_output=True, text=True, env=env)
    theirs = json.loads(torch_run.stdout.strip().splitlines()[-1])
    blas_line = "BLAS " + ", ".join(theirs.get("blas", [])) or "unknown BLAS"

    print(f"config: {' '.join(config)}, {a.threads} threads; PyTorch: {blas_line}, OPENBLAS_CORETYPE=SkylakeX")
    print(f"{'':10} {'seconds':>9} {'tokens/s':>10} {'train loss':>11} {'val loss':>9}")
    for name, r in (("gpt.cpp", ours), ("PyTorch", theirs)):
        print(f"{name:10} {r['seconds']:9.1f} {r['tokens_per_sec']:10.0f} {r['loss']:11.4f} {r['val_loss']:9.4f}")
    print(f"time ratio PyTorch / gpt.cpp: {theirs['seconds'] / ours['seconds']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
