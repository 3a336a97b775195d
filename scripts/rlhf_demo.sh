#!/usr/bin/env bash
# The whole assistant recipe on a task whose "human" is a rule, so its effect is
# measured, not eyeballed. The task: "Shout: <word>" is answered well by the word
# in capitals ("Shout: light" -> "LIGHT"). The demonstrations the model is
# fine-tuned on are right only half the time (the other half echo the word as it
# is), as human demonstrations are imperfect; the rule labels preference pairs
# (the word in capitals over the echo, another word shouted, or the word
# misspelled) and scores answers.
#   1. pretrain a small byte-level GPT on the King James Bible (Debian's bible-kjv)
#   2. SFT on the noisy demonstrations
#   3. a reward model on rule-labelled pairs; its held-out pairwise accuracy
#   4. PPO against the reward model; DPO on the pairs; GRPO against the reward model
# It prints the rule's score on held-out prompts (words never seen in training)
# after each stage, the reward model's held-out accuracy and each policy's KL to
# the SFT model.
#   scripts/rlhf_demo.sh [WORK=out/rlhf-demo] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-out/rlhf-demo}
threads=${2:-2}
gpt=${GPT:-build/gpt}
[[ -x $gpt ]] || { echo "build first: scripts/build.sh" >&2; exit 1; }
command -v bible >/dev/null || { echo "needs bible-kjv (apt-get install bible-kjv)" >&2; exit 1; }
mkdir -p "$work"
start=$(date +%s)
stage() { echo "== $1 ($(( $(date +%s) - start )) s)"; }

stage "data"
bible -f Gen1:1-Rev22:21 | sed -E 's/^[^ ]+ //' > "$work/bible.txt"
/usr/bin/python3 - "$work" <<'PY'
import json, random, re, sys
work = sys.argv[1]
words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{3,8}", open(f"{work}/bible.txt").read())})
random.Random(1).shuffle(words)
held_out, train = words[:150], words[150:3150]
rng = random.Random(2)
def chat(word, answer):
    return {"messages": [{"role": "user", "content": f"Shout: {word}"}, {"role": "assistant", "content": answer}]}
with open(f"{work}/sft.jsonl", "w") as f:  # demonstrations: half right, half a plain echo
    for w in train:
        f.write(json.dumps(chat(w, w.upper() if rng.random() < 0.5 else w)) + "\n")
def wrong(w, rng):  # what the rule rejects: the echo, another word shouted, the word misspelled
    kind = rng.random()
    if kind < 0.4:
        return w
    if kind < 0.7:
        return rng.choice([x for x in train if x != w]).upper()
    i = rng.randrange(len(w))
    return (w[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz".replace(w[i], "")) + w[i + 1:]).upper()
with open(f"{work}/prefs.jsonl", "w") as f:  # the rule prefers the word in capitals
    for w in train:
        prompt = [{"role": "user", "content": f"Shout: {w}"}]
        f.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": w.upper()}],
                            "rejected": [{"role": "assistant", "content": wrong(w, rng)}]}) + "\n")
with open(f"{work}/prompts.jsonl", "w") as f:
    for w in train:
        f.write(json.dumps({"prompt": [{"role": "user", "content": f"Shout: {w}"}]}) + "\n")
with open(f"{work}/heldout_words.txt", "w") as f:
    f.write("\n".join(held_out) + "\n")
with open(f"{work}/heldout_prompts.jsonl", "w") as f:  # for gpt kl
    for w in held_out:
        f.write(json.dumps({"prompt": [{"role": "user", "content": f"Shout: {w}"}]}) + "\n")
with open(f"{work}/heldout_prefs.jsonl", "w") as f:
    for w in held_out:
        prompt = [{"role": "user", "content": f"Shout: {w}"}]
        f.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": w.upper()}],
                            "rejected": [{"role": "assistant", "content": wrong(w, rng)}]}) + "\n")
PY

# The rule's score of a model on the held-out words: the share of its answers that
# are the word in capitals — answers sampled from the policy (temperature 1, three
# seeds: the distribution RLHF changes), and its greedy answers.
sed 's/^/Shout: /' "$work/heldout_words.txt" > "$work/heldout_prompts.txt"
rule_score() {  # $1 = model args; prints "sampled greedy"
  local answers=$work/answers.txt
  : > "$answers"
  for seed in 1 2 3; do
    $gpt chat $1 --messages "$work/heldout_prompts.txt" --temperature 1 --seed $seed --max-tokens 12 --threads "$threads" >> "$answers"
  done
  $gpt chat $1 --messages "$work/heldout_prompts.txt" --greedy --max-tokens 12 --threads "$threads" > "$answers.greedy"
  /usr/bin/python3 - "$work/heldout_words.txt" "$answers" "$answers.greedy" <<'PY'
import sys
words = open(sys.argv[1]).read().split()
def score(path, repeats):
    answers = open(path, encoding="utf-8", errors="replace").read().split("\n")[:len(words) * repeats]
    return 100 * sum(a == w.upper() for a, w in zip(answers, words * repeats)) / len(answers)
print(f"{score(sys.argv[2], 3):.1f} {score(sys.argv[3], 1):.1f}")
PY
}
kl_to_sft() {  # $1 = model; KL(model || SFT) per answer on the held-out prompts, sampled (T = 1, 3 each)
  $gpt kl --model "$1" --reference "$work/sft" --prompts "$work/heldout_prompts.jsonl" --samples 3 --max-new-tokens 12 \
    --threads "$threads" | python3 -c 'import json,sys; e=json.load(sys.stdin); print("%.2f ± %.2f" % (e["kl"], e["kl_std_error"]))'
}

stage "1. pretrain (byte-level, 4 layers x 128)"
$gpt train --data "$work/bible.txt" --out "$work/base" --tokenizer byte --n-layer 4 --n-head 4 --n-embd 128 \
  --block-size 64 --batch-size 16 --max-iters 600 --lr 2e-3 --threads "$threads" --quiet >/dev/null
stage "2. SFT on demonstrations (half of them right)"
$gpt sft --init-from "$work/base" --data "$work/sft.jsonl" --out "$work/sft" --max-iters 1500 --batch-size 32 \
  --lr 2e-3 --threads "$threads" --quiet >/dev/null
stage "3. reward model on rule-labelled pairs"
$gpt reward train --init-from "$work/sft" --data "$work/prefs.jsonl" --out "$work/rm" --max-iters 400 \
  --batch-size 16 --lr 3e-4 --threads "$threads" --quiet >/dev/null
rm_acc=$($gpt reward score --model "$work/rm" --data "$work/heldout_prefs.jsonl" --threads "$threads" |
  python3 -c 'import json,sys; print("%.1f" % (100 * json.load(sys.stdin)["accuracy"]))')
stage "4a. PPO against the reward model"
$gpt rlhf --policy "$work/sft" --reward "$work/rm" --prompts "$work/prompts.jsonl" --out "$work/ppo" --max-iters 30 \
  --batch-size 32 --minibatch 16 --max-new-tokens 12 --lr 5e-5 --kl-coef 0.6 --threads "$threads" --quiet >/dev/null
stage "4b. DPO on the pairs"
$gpt dpo --policy "$work/sft" --data "$work/prefs.jsonl" --out "$work/dpo" --max-iters 150 --batch-size 16 \
  --lr 2e-4 --beta 0.25 --threads "$threads" --quiet >/dev/null
stage "4c. GRPO against the reward model"
$gpt rlhf --algo grpo --group 8 --policy "$work/sft" --reward "$work/rm" --prompts "$work/prompts.jsonl" \
  --out "$work/grpo" --max-iters 30 --batch-size 8 --minibatch 16 --max-new-tokens 12 --lr 5e-5 --kl-coef 0.3 \
  --threads "$threads" --quiet >/dev/null
stage "scoring held-out prompts"
read -r base_s base_g < <(rule_score "--model $work/base")  # no chat format yet: the prompt continued as text
read -r sft_s sft_g < <(rule_score "--model $work/sft")
read -r ppo_s ppo_g < <(rule_score "--model $work/ppo")
read -r dpo_s dpo_g < <(rule_score "--model $work/dpo")
read -r grpo_s grpo_g < <(rule_score "--model $work/grpo")
ppo_kl=$(kl_to_sft "$work/ppo") dpo_kl=$(kl_to_sft "$work/dpo") grpo_kl=$(kl_to_sft "$work/grpo")
stage "done"
cat <<TABLE

Held-out prompts (150 words never seen in training); the rule's score: answers that are the word in capitals
| model | sampled answers % (T = 1, 3 each) | greedy answers % | KL to SFT per answer, nats (gpt kl, held-out) |
|---|---|---|---|
| pretrained, before SFT (the prompt continued as text) | $base_s | $base_g | |
| SFT (demonstrations half right) | $sft_s | $sft_g | |
| PPO vs the reward model | $ppo_s | $ppo_g | $ppo_kl |
| DPO on the pairs | $dpo_s | $dpo_g | $dpo_kl |
| GRPO vs the reward model | $grpo_s | $grpo_g | $grpo_kl |

Reward model: held-out pairwise accuracy $rm_acc %
Total time: $(( $(date +%s) - start )) s on $threads threads ($(lscpu | sed -n 's/^Model name: *//p'))
TABLE
# The targets: the reward model >= 90% held out; PPO, DPO and GRPO each >= 15 points over
# SFT (sampled answers); each KL to SFT under the bound we state, 2 nats per answer (on
# held-out words SFT shouts about half the time, so a policy that always shouts pays
# ln 2 = 0.69 nats on the first letter alone; the rest covers the letters after it).
/usr/bin/python3 - "$rm_acc" "$sft_s" "$ppo_s" "$dpo_s" "$grpo_s" "$ppo_kl" "$dpo_kl" "$grpo_kl" <<'PY'
import sys
rm, sft, ppo, dpo, grpo = map(float, sys.argv[1:6])
kls = [float(k.split()[0]) for k in sys.argv[6:9]]
checks = [("reward model >= 90% held-out accuracy", rm >= 90)]
for name, score, kl in zip(("PPO", "DPO", "GRPO"), (ppo, dpo, grpo), kls):
    checks.append((f"{name} >= SFT + 15 points ({score - sft:+.1f})", score >= sft + 15))
    checks.append((f"{name} KL to SFT < 2 nats per answer ({kl:.2f})", kl < 2))
for what, ok in checks:
    print(f"{'met    ' if ok else 'NOT MET'}  {what}")
PY
