#!/usr/bin/python3
"""Prefill and decode tokens/s of gpt.cpp and PyTorch (both with a KV cache) on a
GPT-2-124M-shaped model with random weights, same threads, one after the other.

    /usr/bin/python3 bench/generate_vs_torch.py [--threads 2] [--prompt-tokens 128] [--decode-tokens 64]

PyTorch runs with OpenBLAS's OpenMP build and OPENBLAS_CORETYPE=SkylakeX, its fastest
configuration here. The bandwidth bound is weight bytes / measured DRAM bandwidth.
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
    ap.add_argument("--bandwidth-gbs", type=float, default=22.0, help="measured DRAM read bandwidth")
    a = ap.parse_args()
    common = ["--threads", str(a.threads), "--prompt-tokens", str(a.prompt_tokens), "--decode-tokens", str(a.decode_tokens)]
    ours = json.loads(subprocess.run([os.path.join(ROOT, "build", "bench", "bench_generate_speed")] + common,
                                     check=True, capture_output=True, text=True).stdout)
    env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX", OMP_NUM_THREADS=str(a.threads))
    theirs = json.loads(subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_generate.py")] + common,
                                       check=True, capture_output=True, text=True, env=env).stdout)
    bound = a.bandwidth_gbs * 1e9 / ours["weight_bytes"]
    print(f"GPT-2 124M shape, fp32, random weights, {a.threads} threads, prompt {a.prompt_tokens}, decode {a.decode_tokens}")
    print(f"{'':10} {'prefill tok/s':>14} {'decode tok/s':>13}")
    print(f"{'gpt.cpp':10} {ours['prefill_tokens_per_sec']:14.1f} {ours['decode_tokens_per_sec']:13.2f}")
    print(f"{'PyTorch':10} {theirs['prefill_tokens_per_sec']:14.1f} {theirs['decode_tokens_per_sec']:13.2f}")
    print(f"ratio gpt.cpp / PyTorch: prefill {ours['prefill_tokens_per_sec'] / theirs['prefill_tokens_per_sec']:.2f}x, "
          f"decode {ours['decode_tokens_per_sec'] / theirs['decode_tokens_per_sec']:.2f}x")
    print(f"decode bandwidth bound ({ours['weight_bytes'] / 1e6:.0f} MB of weights per token at {a.bandwidth_gbs} GB/s): "
          f"{bound:.1f} tok/s; gpt.cpp reaches {100 * ours['decode_tokens_per_sec'] / bound:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
