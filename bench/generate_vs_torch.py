#!/usr/bin/python3
"""Prefill and decode tokens/s of gpt.cpp and PyTorch (both with a KV cache) on a
GPT-2-124M-shaped model with random weights, same threads, one after the other;
gpt.cpp for each weight type (f32, f16, bf16, q8_0, q4_0).

    /usr/bin/python3 bench/generate_vs_torch.py [--threads 2] [--prompt-tokens 128] [--decode-tokens 64]

PyTorch runs with OpenBLAS's OpenMP build and OPENBLAS_CORETYPE=SkylakeX, its fastest
configuration here. The bandwidth bound is the measured read bandwidth divided by
the weight bytes a decode step reads.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--types", default="f32,f16,bf16,q8_0,q4_0", help="gpt.cpp weight types to run")
    a = ap.parse_args()
    common = ["--threads", str(a.threads), "--prompt-tokens", str(a.prompt_tokens), "--decode-tokens", str(a.decode_tokens)]
    out = subprocess.run([os.path.join(ROOT, "build", "bench", "bench_generate_speed"), "--types", a.types] + common,
                         check=True, capture_output=True, text=True).stdout
    ours = [json.loads(line) for line in out.splitlines() if line.strip()]
    env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX", OMP_NUM_THREADS=str(a.threads))
    theirs = json.loads(subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_generate.py")] + common,
                                       check=True, capture_output=True, text=True, env=env).stdout)
    print(f"GPT-2 124M shape, random weights, {a.threads} threads, prompt {a.prompt_tokens}, decode {a.decode_tokens}; "
          f"read bandwidth: the higher of two measurements, right before and after each decode")
    print(f"{'':16} {'prefill tok/s':>14} {'decode tok/s':>13} {'KV cache':>9} {'MB/token':>9} {'GB/s':>6} "
          f"{'bound tok/s':>12} {'of bound':>9}")
    print(f"{'PyTorch fp32':16} {theirs['prefill_tokens_per_sec']:14.1f} {theirs['decode_tokens_per_sec']:13.2f}")
    for o in ours:
        print(f"{'gpt.cpp ' + o['type']:16} {o['prefill_tokens_per_sec']:14.1f} {o['decode_tokens_per_sec']:13.2f} "
              f"{o['kv_cache']:>9} {o['weight_bytes_per_token'] / 1e6:9.0f} {o['read_gb_per_s']:6.1f} "
              f"{o['bandwidth_bound_tokens_per_sec']:12.1f} "
              f"{100 * o['fraction_of_bound']:8.0f}%")
    f32 = next((o for o in ours if o["type"] == "F32"), None)
    if f32:
        print(f"fp32 ratio gpt.cpp / PyTorch: prefill {f32['prefill_tokens_per_sec'] / theirs['prefill_tokens_per_sec']:.2f}x, "
              f"decode {f32['decode_tokens_per_sec'] / theirs['decode_tokens_per_sec']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
