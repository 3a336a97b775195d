#!/usr/bin/python3
"""GPT-2 BPE encoding: gpt.cpp against js-tiktoken (the package that made the
parity fixtures), same text, one after the other; plus gpt.cpp's parallel
scaling and its BPE training time.

    mkdir -p /tmp/jst && (cd /tmp/jst && npm install js-tiktoken@1.0.21)
    /usr/bin/python3 bench/tokenizer_vs_tiktoken.py [--text FILE] [--node-modules /tmp/jst/node_modules]

Default text (5.5 MB): the King James Bible (Debian's bible-kjv), Tiny Shakespeare and
the Korean seed text, concatenated.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text")
    ap.add_argument("--gpt2", default=os.path.join(ROOT, "..", "shared", "data", "gpt2"))
    ap.add_argument("--node-modules", default="/tmp/jst/node_modules")
    ap.add_argument("--train-vocab", type=int, default=32000)
    a = ap.parse_args()
    text = a.text
    if text is None:
        text = os.path.join(ROOT, "out", "bench-text.txt")
        os.makedirs(os.path.dirname(text), exist_ok=True)
        with open(text, "wb") as f:
            if shutil.which("bible"):
                f.write(subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True).stdout)
            for extra in ("data/tinyshakespeare.txt", "seed/llm-how-it-works.ko.txt"):
                with open(os.path.join(ROOT, "..", "shared", extra), "rb") as g:
                    f.write(g.read())
    ours = json.loads(subprocess.run([os.path.join(ROOT, "build", "bench", "bench_tokenizer_speed"), "--gpt2", a.gpt2,
                                      "--text", text, "--train-vocab", str(a.train_vocab)],
                                     check=True, capture_output=True, text=True).stdout)
    env = dict(os.environ, NODE_PATH=a.node_modules)
    theirs = json.loads(subprocess.run(["node", os.path.join(ROOT, "bench", "tiktoken_speed.mjs"), text],
                                       check=True, capture_output=True, text=True, env=env).stdout)
    same = ours["tokens"] == theirs["tokens"] and ours["ids_fnv"] == theirs["ids_fnv"]
    print(f"text: {text}, {ours['bytes'] / 1e6:.1f} MB, {ours['tokens']} tokens "
          f"({'identical ids to' if same else 'DIFFERENT ids from'} js-tiktoken)")
    print(f"encode, 1 thread: gpt.cpp {ours['encode_mb_per_s_1t']:.2f} MB/s, js-tiktoken {theirs['encode_mb_per_s']:.2f} MB/s"
          f" -> {ours['encode_mb_per_s_1t'] / theirs['encode_mb_per_s']:.2f}x")
    scaling = ", ".join(f"{k.split('_')[-1]}: {v:.2f} MB/s" for k, v in ours.items() if k.startswith("encode_mb_per_s_"))
    print(f"gpt.cpp encode by threads: {scaling}")
    print(f"BPE training to {ours['train_vocab']} tokens: {ours['train_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
