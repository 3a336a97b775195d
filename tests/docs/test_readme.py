#!/usr/bin/python3
"""The README cannot drift from the program:
  - every ```sh runnable block of README.md runs as written (bash -e, pipefail) in a
    scratch directory where build/ is the build being tested;
  - every `build/gpt ...` command in any sh block of README.md and docs/*.md parses
    (GPT_PARSE_ONLY=1: gpt checks its command line and stops), so flags and
    subcommands that no longer exist are caught even where a block cannot run.
Usage: test_readme.py SOURCE_DIR BUILD_DIR   (exit 77: skipped, with the reason)"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

source, build = sys.argv[1], sys.argv[2]
gpt = os.path.join(build, "gpt")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(path):
    with open(path, encoding="utf-8") as f:
        for m in FENCE.finditer(f.read()):
            info = m.group(1).split()
            if info and info[0] in ("sh", "bash"):
                yield info[1:], m.group(2)


def commands(script):
    """The `build/gpt ...` invocations of a shell block, continuation lines joined."""
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        # The gpt part of a pipeline (`echo ... | build/gpt ...`), after a launcher (mpirun -np 2).
        if "|" in words:
            words = words[len(words) - words[::-1].index("|"):]
        if words[:1] == ["mpirun"]:
            words = words[3:]
        if words[:1] == ["build/gpt"]:
            yield line.strip(), words[1:]


failures = []
checked = 0
docs = [os.path.join(source, "README.md")] + sorted(
    os.path.join(source, "docs", f) for f in os.listdir(os.path.join(source, "docs")) if f.endswith(".md"))
for path in docs:
    for _, script in blocks(path):
        for line, args in commands(script):
            r = subprocess.run([gpt] + args, env=dict(os.environ, GPT_PARSE_ONLY="1"), capture_output=True, text=True,
                               cwd=build)
            checked += 1
            if r.returncode != 0:
                failures.append(f"{os.path.relpath(path, source)}: `{line}` does not parse: {r.stderr.strip()}")
print(f"{checked} commands in README.md and docs/*.md parse" if not failures else "\n".join(failures))
if checked < 20:
    failures.append(f"only {checked} gpt commands found in README.md and docs/*.md: is the extraction broken?")

runnable = [script for info, script in blocks(os.path.join(source, "README.md")) if "runnable" in info]
if not runnable:
    failures.append("README.md has no ```sh runnable block")
if failures:
    sys.exit(1)
if shutil.which("bible") is None:
    print("SKIPPED running README.md's blocks: they need `bible` (Debian's bible-kjv; scripts/install-deps.sh --demo)")
    sys.exit(77)

with tempfile.TemporaryDirectory() as scratch:
    os.symlink(os.path.abspath(build), os.path.join(scratch, "build"))
    for i, script in enumerate(runnable):
        start = time.time()
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=scratch, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            print(f"README.md runnable block {i + 1} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
            sys.exit(1)
        print(f"README.md runnable block {i + 1}: ran in {time.time() - start:.1f} s; "
              f"its output ends:\n{r.stdout[-400:]}")
    made = sorted(os.listdir(scratch))
    print("files made:", " ".join(made))
