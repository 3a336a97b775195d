#!/usr/bin/python3
"""Training throughput of gpt.cpp and PyTorch side by side, one config at a time
in separate processes (so each peak RSS is its own), same threads and batch:
tokens/s, the ratio, model FLOPs utilisation and peak memory, fp32 and bf16.

    /usr/bin/python3 bench/train_step_vs_torch.py [--threads 2] [--configs baby,shakespeare-char,shakespeare-char-b64,gpt2-124M,gpt2-124M-T1024]

FLOPs per token: 6 N + 12 L C T (PaLM's count; N = parameters without the
position table). MFU is against the machine's measured FP32 peak: the best of
oneDNN sgemm on 2048^3 and 4096x768x3072 products with the same threads
(bench_train_step's peak_sgemm), a lower bound of the true peak, so MFU is an
upper bound. PyTorch runs in its fastest configuration here: OpenBLAS's OpenMP
build with OPENBLAS_CORETYPE=SkylakeX; bf16 is torch.autocast.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {  # name: vocab, block, layers, heads, width, batch, gpt.cpp benchmark
    "baby": (65, 64, 4, 4, 128, 12, "BM_baby"),
    "shakespeare-char": (65, 256, 6, 6, 384, 16, "BM_shakespeare_char"),
    "shakespeare-char-b64": (65, 256, 6, 6, 384, 64, "BM_shakespeare_char_b64"),
    "gpt2-124M": (50257, 256, 12, 12, 768, 4, "BM_gpt2_124M_b4_t256"),
    "gpt2-124M-T1024": (50257, 1024, 12, 12, 768, 1, "BM_gpt2_124M_b1_t1024"),
    # The Llama architecture at the same FLOPs per token (SwiGLU 8C/3 wide, tied head).
    "llama-124M": (50257, 256, 12, 12, 768, 4, "BM_llama_124M_b4_t256"),
    "llama-shakespeare-char-b64": (65, 256, 6, 6, 384, 64, "BM_llama_shakespeare_char_b64"),
}


def run_ours(bench, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(["/usr/bin/time", "-f", "RSS %M", os.path.join(ROOT, "build", "bench", "bench_train_step"),
                          "--benchmark_filter=^" + bench + "(/|$)", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True, env=env)
    rss = int(out.stderr.strip().splitlines()[-1].split()[1]) / 1024
    b = json.loads(out.stdout)["benchmarks"][0]
    return b["tokens/s"], rss


def run_torch(cfg, dtype, threads):
    V, T, L, NH, C, B, _ = cfg
    env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX", OMP_NUM_THREADS=str(threads))
    arch = "llama" if cfg[6].startswith("BM_llama") else "gpt2"
    out = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_train_step.py"), "--vocab", str(V),
                          "--block-size", str(T), "--n-layer", str(L), "--n-head", str(NH), "--n-embd", str(C),
                          "--batch-size", str(B), "--dtype", dtype, "--threads", str(threads), "--arch", arch],
                         check=True, capture_output=True, text=True, env=env, cwd=os.path.join(ROOT, "bench"))
    j = json.loads(out.stdout)
    return j["tokens_per_sec"], j["peak_rss_mb"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    peak = json.loads(subprocess.run([os.path.join(ROOT, "build", "bench", "bench_train_step"),
                                      "--benchmark_filter=peak_sgemm", "--benchmark_format=json"],
                                     check=True, capture_output=True, text=True, env=env).stdout)
    peak_gflops = max(b["GFLOP/s"] for b in peak["benchmarks"])
    print(f"{a.threads} threads; measured FP32 peak (best oneDNN sgemm) {peak_gflops:.0f} GFLOP/s")
    print(f"{'config':17} {'dtype':5} {'gpt.cpp tok/s':>13} {'PyTorch tok/s':>13} {'ratio':>6} "
          f"{'MFU ours':>8} {'MFU torch':>9} {'RSS ours MB':>11} {'RSS torch MB':>12}")
    for name in a.configs.split(","):
        cfg = CONFIGS[name]
        V, T, L, NH, C, B, bench = cfg
        n_params = V * C + L * (12 * C * C + 13 * C) + 2 * C
        flops_per_token = 6 * n_params + 12 * L * C * T
        for dtype in ("fp32", "bf16"):
            ours, ours_rss = run_ours(bench + ("_bf16" if dtype == "bf16" else ""), a.threads)
            theirs, theirs_rss = run_torch(cfg, dtype, a.threads)
            mfu = lambda tps: 100 * tps * flops_per_token / (peak_gflops * 1e9)
            print(f"{name:17} {dtype:5} {ours:13.0f} {theirs:13.0f} {ours / theirs:5.2f}x {mfu(ours):7.0f}% "
                  f"{mfu(theirs):8.0f}% {ours_rss:11.0f} {theirs_rss:12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
