// Runtime CPU dispatch for the hand-written loops: each function marked
// GPT_MULTIVERSION is compiled three times (AVX-512, AVX2 + FMA, baseline
// x86-64) and the dynamic loader picks the best the running CPU supports (GCC
// function multiversioning). Matrix products dispatch inside oneDNN.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GPT_NO_MULTIVERSION)
#define GPT_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GPT_MULTIVERSION
#endif
