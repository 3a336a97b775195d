// Rows of IEEE float16 <-> float32, for data stored at half the bytes (the KV
// cache of compact models). F16C instructions where the CPU has them, else the
// bit-exact portable conversions of util/half.h; both round to nearest even.
#pragma once
#include <cstdint>

namespace gpt {

void halves_to_floats(const uint16_t* in, float* out, int64_t n);
void floats_to_halves(const float* in, uint16_t* out, int64_t n);

// Whether the F16C path runs (not on CPUs without it, nor under GPT_PORTABLE_KERNELS=1).
bool float16_uses_f16c();

}  // namespace gpt
