#include "gpt/kernels/kquants.h"

#include <algorithm>
#include <cstddef>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/neon.h"
#include "gpt/kernels/quantize.h"
#include "gpt/util/error.h"
#include "gpt/util/half.h"

namespace gpt {
namespace {

constexpr int64_t kBlock = 32;  // the legacy types' block

// ---- unpacking: the formats' definitions, one weight at a time ---------------
// Each gives a super-block's (or block's) integer weights q[] and per-sub-block
// integer scales; dequantizing and the reference products are built on them.

void unpack_q2k(const BlockQ2_K& b, int8_t* q) {
  for (int e = 0; e < 256; ++e) q[e] = static_cast<int8_t>((b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
}
void unpack_q3k(const BlockQ3_K& b, int8_t* q) {
  for (int e = 0; e < 256; ++e) {
    const int low = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    q[e] = static_cast<int8_t>(low - ((b.hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4));
  }
}
void unpack_q4k(const BlockQ4_K& b, int8_t* q) {
  for (int e = 0; e < 256; ++e) q[e] = static_cast<int8_t>((b.qs[32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 0xF);
}
void unpack_q5k(const BlockQ5_K& b, int8_t* q) {
  for (int e = 0; e < 256; ++e) {
    const int low = (b.qs[32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 0xF;
    q[e] = static_cast<int8_t>(low | (((b.qh[e % 32] >> (e / 32)) & 1) << 4));
  }
}
void unpack_q6k(const BlockQ6_K& b, int8_t* q) {
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (b.ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0xF;
    const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
    q[e] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
}
uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void unpack_q4_1(const BlockQ4_1& b, int8_t* q) {
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(b.qs[j] & 0xF);
    q[j + 16] = static_cast<int8_t>(b.qs[j] >> 4);
  }
}
template <class B>
void unpack_q5(const B& b, int8_t* q, int offset) {
  const uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(((b.qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset);
    q[j + 16] = static_cast<int8_t>(((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
  }
}

// ---- packing: the inverse of the above ---------------------------------------

void set_bit_planes(const uint8_t* L, int bit, uint8_t* out) {  // Q3_K's hmask, Q5_K's qh: bit e/32 of byte e%32
  std::memset(out, 0, 32);
  for (int e = 0; e < 256; ++e)
    if (L[e] & bit) out[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
}
void pack_2bit(const uint8_t* low2, uint8_t* qs) {  // Q2_K / Q3_K low bits
  std::memset(qs, 0, 64);
  for (int e = 0; e < 256; ++e) qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>((low2[e] & 3) << (2 * ((e % 128) / 32)));
}
void pack_4bit_k(const uint8_t* low4, uint8_t* qs) {  // Q4_K / Q5_K low bits
  std::memset(qs, 0, 128);
  for (int e = 0; e < 256; ++e) qs[32 * (e / 64) + e % 32] |= static_cast<uint8_t>((low4[e] & 0xF) << (4 * ((e % 64) / 32)));
}
void pack_scale_min_k4(const uint8_t* sc, const uint8_t* m, uint8_t* out) {  // 8 6-bit scales and mins
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}
void pack_q3k_scales(const int* sc, uint8_t* out) {  // 16 signed scales in [-32, 31]
  std::memset(out, 0, 12);
  for (int j = 0; j < 16; ++j) {
    const int v = sc[j] + 32;
    if (j < 8) out[j] |= static_cast<uint8_t>(v & 0xF);
    else out[j - 8] |= static_cast<uint8_t>((v & 0xF) << 4);
    out[8 + j % 4] |= static_cast<uint8_t>(((v >> 4) & 3) << (2 * (j / 4)));
  }
}

// ---- quantizers ---------------------------------------------------------------
// Weighted least squares, from the formats' definitions: each sub-block's
// integers are chosen for a few candidate scales, the scale (and offset) refitted
// to them in closed form, and the fit with the least weighted squared error kept.
// The weights favour large-magnitude values (w = rms + |x|, as llama.cpp's
// reference quantizers weigh them without an importance matrix).

// Rounded to the nearest integer; NaN gives 0 and the clamp keeps the cast defined
// (callers clamp to their level range after).
int nearest(float v) {
  if (!(v == v)) return 0;
  return static_cast<int>(std::nearbyint(std::clamp(v, -1e9f, 1e9f)));
}

// A scale as stored: float16, kept finite (weights beyond float16's range
// saturate rather than write a file that no reader takes).
uint16_t scale_to_half(float v) {
  if (!(v == v)) return 0;
  return float_to_half(std::clamp(v, -65504.0f, 65504.0f));
}

// x ≈ scale * L - min with L in [0, nmax], min >= 0 unless `free_offset`.
// Returns the scale; *min receives the subtracted offset.
float fit_scale_min(const float* x, const float* w, int n, int nmax, uint8_t* L, float* min, bool free_offset) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (!free_offset) lo = std::min(lo, 0.0f);
  if (!(hi - lo > 1e-30f)) {  // constant (or too narrow for a finite inverse scale)
    std::fill(L, L + n, 0);
    *min = -lo;
    return 0.0f;
  }
  double sw = 0, sx = 0;
  for (int i = 0; i < n; ++i) {
    sw += w[i];
    sx += static_cast<double>(w[i]) * x[i];
  }
  float best_scale = (hi - lo) / static_cast<float>(nmax), best_offset = lo;
  double best_err = std::numeric_limits<double>::infinity();
  uint8_t cand[256];
  for (int step = -10; step <= 10; ++step) {
    const float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / (hi - lo);
    double sl = 0, sll = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(iscale * (x[i] - lo)), 0, nmax);
      cand[i] = static_cast<uint8_t>(l);
      sl += static_cast<double>(w[i]) * l;
      sll += static_cast<double>(w[i]) * l * l;
      sxl += static_cast<double>(w[i]) * l * x[i];
    }
    const double det = sw * sll - sl * sl;
    if (det <= 0) continue;
    double a = (sw * sxl - sx * sl) / det, b = (sll * sx - sl * sxl) / det;
    if (!free_offset && b > 0) {  // the offset may only be subtracted
      b = 0;
      a = sxl / sll;
    }
    if (a < 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double diff = a * cand[i] + b - x[i];
      err += w[i] * diff * diff;
    }
    if (err < best_err) {
      best_err = err;
      best_scale = static_cast<float>(a);
      best_offset = static_cast<float>(b);
      std::copy(cand, cand + n, L);
    }
  }
  if (!std::isfinite(best_err)) {  // no fit (all weights zero): plain min-max
    for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(std::clamp(nearest((x[i] - lo) / best_scale), 0, nmax));
  }
  *min = -best_offset;
  return best_scale;
}

// x ≈ scale * L with L in [lo, hi] (lo < 0 < hi, |lo| >= hi). Returns the scale.
float fit_scale(const float* x, const float* w, int n, int lo, int hi) {
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      vmax = x[i];
    }
  }
  if (amax < 1e-30f) return 0.0f;
  float best = vmax / static_cast<float>(lo);
  double best_score = -1;
  for (int step = -9; step <= 9; ++step) {
    // The value of largest magnitude goes to (about) the level of largest magnitude, lo.
    const float iscale = (static_cast<float>(lo) - 0.1f * static_cast<float>(step)) / vmax;
    double sxl = 0, sll = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(iscale * x[i]), lo, hi);
      sxl += static_cast<double>(w[i]) * x[i] * l;
      sll += static_cast<double>(w[i]) * l * l;
    }
    // Error sum w (x - s l)^2 at the best s = sxl / sll is sum w x^2 - sxl^2 / sll.
    if (sll > 0 && sxl * sxl / sll > best_score) {
      best_score = sxl * sxl / sll;
      best = static_cast<float>(sxl / sll);
    }
  }
  return best;
}

void importance(const float* x, int n, float* w) {
  double s2 = 0;
  for (int i = 0; i < n; ++i) s2 += static_cast<double>(x[i]) * x[i];
  const auto rms = static_cast<float>(std::sqrt(s2 / n));
  for (int i = 0; i < n; ++i) w[i] = rms + std::fabs(x[i]);
}

// Scale-and-min K types (Q2_K: 16 x 16, 4-bit scales; Q4_K, Q5_K: 8 x 32, 6-bit scales).
// Fills the quantized weights (0..nmax), the sub-block scales and mins, d and dmin.
void quantize_scale_min_k(const float* x, int sub, int nmax, int scale_max, uint8_t* L, uint8_t* sc, uint8_t* mn,
                          float* d_out, float* dmin_out) {
  float w[256], scales[16], mins[16];
  importance(x, 256, w);
  const int subs = 256 / sub;
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < subs; ++j) {
    scales[j] = fit_scale_min(x + sub * j, w + sub * j, sub, nmax, L + sub * j, &mins[j], false);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float d = half_to_float(scale_to_half(max_scale / static_cast<float>(scale_max)));
  const float dmin = half_to_float(scale_to_half(max_min / static_cast<float>(scale_max)));
  *d_out = d;
  *dmin_out = dmin;
  for (int j = 0; j < subs; ++j) {
    sc[j] = static_cast<uint8_t>(d > 0 ? std::clamp(nearest(scales[j] / d), 0, scale_max) : 0);
    mn[j] = static_cast<uint8_t>(dmin > 0 ? std::clamp(nearest(mins[j] / dmin), 0, scale_max) : 0);
    // The weights again, against the scale and min as stored.
    const float ds = d * sc[j], dm = dmin * mn[j];
    if (ds == 0.0f) continue;
    for (int i = 0; i < sub; ++i) L[sub * j + i] = static_cast<uint8_t>(std::clamp(nearest((x[sub * j + i] + dm) / ds), 0, nmax));
  }
}

// Symmetric K types (Q3_K: q in [-4, 3], 6-bit signed scales; Q6_K: q in [-32, 31],
// 8-bit signed scales), 16 sub-blocks of 16. Fills q and the scales; returns d.
float quantize_symmetric_k(const float* x, int lo, int hi, int scale_lo, int scale_hi, int* q, int* sc) {
  float w[256], scales[16];
  importance(x, 256, w);
  float amax = 0, vmax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = fit_scale(x + 16 * j, w + 16 * j, 16, lo, hi);
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      vmax = scales[j];
    }
  }
  std::fill(q, q + 256, 0);
  if (amax == 0.0f) {
    std::fill(sc, sc + 16, 0);
    return 0.0f;
  }
  // The largest scale goes to the level of largest magnitude, scale_lo.
  const float d = half_to_float(scale_to_half(vmax / static_cast<float>(scale_lo)));
  for (int j = 0; j < 16; ++j) {
    sc[j] = d != 0.0f ? std::clamp(nearest(scales[j] / d), scale_lo, scale_hi) : 0;
    const float ds = d * static_cast<float>(sc[j]);
    if (ds == 0.0f) continue;
    for (int i = 0; i < 16; ++i) q[16 * j + i] = std::clamp(nearest(x[16 * j + i] / ds), lo, hi);
  }
  return d;
}

void quantize_q3k(const float* x, BlockQ3_K* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 256) {
    int q[256], sc[16];
    const float d = quantize_symmetric_k(x, -4, 3, -32, 31, q, sc);
    uint8_t u[256];  // q + 4 in 0..7: bit 2 is the high bit, set for q >= 0
    for (int e = 0; e < 256; ++e) u[e] = static_cast<uint8_t>(q[e] + 4);
    set_bit_planes(u, 4, y[b].hmask);
    pack_2bit(u, y[b].qs);
    pack_q3k_scales(sc, y[b].scales);
    y[b].d = float_to_half(d);
  }
}

// The bits of the scale-and-min types, from their integers.
void pack(BlockQ2_K& y, const uint8_t* L, const uint8_t* sc, const uint8_t* mn) {
  for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<uint8_t>(sc[j] | (mn[j] << 4));
  pack_2bit(L, y.qs);
}
void pack(BlockQ4_K& y, const uint8_t* L, const uint8_t* sc, const uint8_t* mn) {
  pack_scale_min_k4(sc, mn, y.scales);
  pack_4bit_k(L, y.qs);
}
void pack(BlockQ5_K& y, const uint8_t* L, const uint8_t* sc, const uint8_t* mn) {
  pack_scale_min_k4(sc, mn, y.scales);
  pack_4bit_k(L, y.qs);
  set_bit_planes(L, 16, y.qh);
}

// Q2_K (16 x 16, 2-bit, 4-bit scales), Q4_K and Q5_K (8 x 32, 4 or 5 bits, 6-bit scales).
template <class B, int kSub, int kMax>
void quantize_scale_min(const float* x, B* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 256) {
    uint8_t L[256], sc[16], mn[16];
    float d, dmin;
    quantize_scale_min_k(x, kSub, kMax, kSub == 16 ? 15 : 63, L, sc, mn, &d, &dmin);
    pack(y[b], L, sc, mn);
    y[b].d = float_to_half(d);
    y[b].dmin = float_to_half(dmin);
  }
}

void quantize_q6k(const float* x, BlockQ6_K* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 256) {
    int q[256], sc[16];
    const float d = quantize_symmetric_k(x, -32, 31, -128, 127, q, sc);
    std::memset(y[b].ql, 0, 128);
    std::memset(y[b].qh, 0, 64);
    for (int e = 0; e < 256; ++e) {
      const int u = q[e] + 32, h = e / 128, k = (e % 128) / 32, l = e % 32;
      y[b].ql[64 * h + 32 * (k & 1) + l] |= static_cast<uint8_t>((u & 0xF) << (4 * (k >> 1)));
      y[b].qh[32 * h + l] |= static_cast<uint8_t>((u >> 4) << (2 * k));
    }
    for (int j = 0; j < 16; ++j) y[b].scales[j] = static_cast<int8_t>(sc[j]);
    y[b].d = float_to_half(d);
  }
}

template <class B, bool kFive>
void quantize_q_1(const float* x, B* y, int64_t nb) {  // Q4_1, Q5_1
  for (int64_t b = 0; b < nb; ++b, x += kBlock) {
    float w[kBlock], mn;
    uint8_t L[kBlock];
    importance(x, kBlock, w);
    float d = fit_scale_min(x, w, kBlock, kFive ? 31 : 15, L, &mn, true);
    y[b].d = scale_to_half(d);
    y[b].m = scale_to_half(-mn);
    // Against the stored scale and offset.
    const float ds = half_to_float(y[b].d), m = half_to_float(y[b].m);
    if (ds > 0)
      for (int i = 0; i < kBlock; ++i) L[i] = static_cast<uint8_t>(std::clamp(nearest((x[i] - m) / ds), 0, kFive ? 31 : 15));
    for (int j = 0; j < 16; ++j) y[b].qs[j] = static_cast<uint8_t>((L[j] & 0xF) | ((L[j + 16] & 0xF) << 4));
    if constexpr (kFive) {
      uint32_t qh = 0;
      for (int j = 0; j < kBlock; ++j) qh |= static_cast<uint32_t>((L[j] >> 4) & 1) << j;
      std::memcpy(y[b].qh, &qh, 4);
    }
  }
}

void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += kBlock) {
    float w[kBlock];
    importance(x, kBlock, w);
    y[b].d = scale_to_half(fit_scale(x, w, kBlock, -16, 15));
    const float d = half_to_float(y[b].d);
    uint32_t qh = 0;
    uint8_t u[kBlock];
    for (int i = 0; i < kBlock; ++i) {
      u[i] = static_cast<uint8_t>((d != 0.0f ? std::clamp(nearest(x[i] / d), -16, 15) : 0) + 16);
      qh |= static_cast<uint32_t>(u[i] >> 4) << i;
    }
    for (int j = 0; j < 16; ++j) y[b].qs[j] = static_cast<uint8_t>((u[j] & 0xF) | ((u[j + 16] & 0xF) << 4));
    std::memcpy(y[b].qh, &qh, 4);
  }
}

// ---- decoded blocks: what dequantizing and the portable products share ---------------
// A K super-block as 256 integers with a scale and a min for each 16 (types with
// 32-weight sub-blocks repeat them): weight = (d * scale) * q - dmin * min, in
// llama.cpp's order of operations.
struct DecodedK {
  int8_t q[256];
  int16_t scale[16], min[16];
  float d, dmin;
};

void decode(const BlockQ2_K& b, DecodedK& k) {
  unpack_q2k(b, k.q);
  for (int j = 0; j < 16; ++j) {
    k.scale[j] = b.scales[j] & 0xF;
    k.min[j] = b.scales[j] >> 4;
  }
  k.d = half_to_float(b.d);
  k.dmin = half_to_float(b.dmin);
}
void decode(const BlockQ3_K& b, DecodedK& k) {
  unpack_q3k(b, k.q);
  for (int j = 0; j < 16; ++j) {
    k.scale[j] = static_cast<int16_t>(q3k_scale(b.scales, j));
    k.min[j] = 0;
  }
  k.d = half_to_float(b.d);
  k.dmin = 0;
}
template <class B>
void decode_q45k(const B& b, DecodedK& k) {
  if constexpr (std::is_same_v<B, BlockQ4_K>) unpack_q4k(b, k.q);
  else unpack_q5k(b, k.q);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, mn;
    get_scale_min(j, b.scales, sc, mn);
    k.scale[2 * j] = k.scale[2 * j + 1] = sc;
    k.min[2 * j] = k.min[2 * j + 1] = mn;
  }
  k.d = half_to_float(b.d);
  k.dmin = half_to_float(b.dmin);
}
void decode(const BlockQ4_K& b, DecodedK& k) { decode_q45k(b, k); }
void decode(const BlockQ5_K& b, DecodedK& k) { decode_q45k(b, k); }
void decode(const BlockQ6_K& b, DecodedK& k) {
  unpack_q6k(b, k.q);
  for (int j = 0; j < 16; ++j) {
    k.scale[j] = b.scales[j];
    k.min[j] = 0;
  }
  k.d = half_to_float(b.d);
  k.dmin = 0;
}

template <class B>
void dequantize_k(const B* x, float* y, int64_t nb) {
  DecodedK k;
  for (int64_t b = 0; b < nb; ++b, y += 256) {
    decode(x[b], k);
    for (int j = 0; j < 16; ++j) {
      const float dl = k.d * k.scale[j], ml = k.dmin * k.min[j];
      for (int i = 0; i < 16; ++i) y[16 * j + i] = dl * k.q[16 * j + i] - ml;
    }
  }
}

// Integer sums per 16 weights, scaled once per super-block; the AVX-512 and NEON
// kernels compute the same integers.
template <class B>
float dot_k(const uint8_t* row, const BlockQ8_K* a, int64_t nb) {
  const auto* w = reinterpret_cast<const B*>(row);
  DecodedK k;
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    decode(w[b], k);
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t s = 0;
      for (int i = 0; i < 16; ++i) s += k.q[16 * j + i] * a[b].qs[16 * j + i];
      sumi += k.scale[j] * s;
      summ += k.min[j] * a[b].bsums[j];
    }
    sum += a[b].d * (k.d * static_cast<float>(sumi) - k.dmin * static_cast<float>(summ));
  }
  return sum;
}

// A legacy 32-weight block: weight = d * q + m.
struct Decoded32 {
  int8_t q[kBlock];
  float d, m;
};
void decode(const BlockQ4_1& b, Decoded32& k) {
  unpack_q4_1(b, k.q);
  k.d = half_to_float(b.d);
  k.m = half_to_float(b.m);
}
void decode(const BlockQ5_0& b, Decoded32& k) {
  unpack_q5(b, k.q, 16);
  k.d = half_to_float(b.d);
  k.m = 0;
}
void decode(const BlockQ5_1& b, Decoded32& k) {
  unpack_q5(b, k.q, 0);
  k.d = half_to_float(b.d);
  k.m = half_to_float(b.m);
}

template <class B>
void dequantize_32(const B* x, float* y, int64_t nb) {
  Decoded32 k;
  for (int64_t b = 0; b < nb; ++b) {
    decode(x[b], k);
    for (int i = 0; i < kBlock; ++i) y[kBlock * b + i] = k.q[i] * k.d + k.m;
  }
}

// Against 32-value int8 input blocks (the min times the block's scaled input sum).
template <class B>
float dot_32(const uint8_t* row, const ExtraInput& in, int64_t nb) {
  const auto* w = reinterpret_cast<const B*>(row);
  Decoded32 k;
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    decode(w[b], k);
    int32_t s = 0;
    for (int i = 0; i < kBlock; ++i) s += k.q[i] * in.qs[kBlock * b + i];
    sum += k.d * in.d[b] * static_cast<float>(s) + k.m * in.dsum[b];
  }
  return sum;
}

template <float (*Dot)(const uint8_t*, const BlockQ8_K*, int64_t)>
void rows_k(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t n, const ExtraInput& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = Dot(w + row_bytes * static_cast<size_t>(r), in.k, n / kSuperBlock);
}
template <float (*Dot)(const uint8_t*, const ExtraInput&, int64_t)>
void rows_legacy(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t n, const ExtraInput& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = Dot(w + row_bytes * static_cast<size_t>(r), in, n / kBlock);
}

// ---- AVX-512 kernels ----------------------------------------------------------------
// The same integers as the portable loops: 4- or 6-bit weights (unsigned) times
// int8 inputs in pairs (VPMADDUBSW: no overflow, at most 2 * 63 * 127), each
// pair-sum multiplied by its sub-block's scale and summed into int32 lanes
// (VPDPWSSD); the offsets (Q4_K's mins, Q6_K's -32) come from the input's sums
// of 16 (bsums). One float multiply-add per super-block.
#if defined(__x86_64__)
#define GPT_KQ_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
GPT_AVX512_WARNINGS_OFF


// int16 lane i of the result = v[idx[i]]: the scale each pair of weights takes.
GPT_KQ_TARGET inline __m512i lanes_of(int a, int b) {  // lanes 0-15 take a, 16-31 take b
  return _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(a)), _mm256_set1_epi16(static_cast<int16_t>(b)), 1);
}

// Q4_K/Q5_K's 12 bytes of 6-bit scales and mins as 16 int16 lanes: scales 0-7, mins 0-7
// (get_scale_min's arithmetic, four at a time in 32-bit words).
GPT_KQ_TARGET inline __m256i scales_mins_k4(const uint8_t* p) {
  uint32_t s[3];
  std::memcpy(s, p, 12);
  const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, top2 = 0x03030303;
  const uint32_t sc_lo = s[0] & low6, mn_lo = s[1] & low6;
  const uint32_t sc_hi = (s[2] & low4) | (((s[0] >> 6) & top2) << 4);
  const uint32_t mn_hi = ((s[2] >> 4) & low4) | (((s[1] >> 6) & top2) << 4);
  return _mm256_cvtepu8_epi16(_mm_set_epi32(static_cast<int>(mn_hi), static_cast<int>(mn_lo), static_cast<int>(sc_hi),
                                            static_cast<int>(sc_lo)));
}

// Int16 lane i of the result = v[idx(i)] for lanes 0-15 taking v[a] and 16-31 v[b].
GPT_KQ_TARGET inline __m512i halves_of(const __m512i& v, int a, int b) {
  const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(a)), _mm256_set1_epi16(static_cast<int16_t>(b)), 1);
  return _mm512_permutexvar_epi16(idx, v);
}

// R input rows against one weight row: each super-block's weights and scales are
// unpacked once for all R (a prompt's rows, four at a time).
template <bool kFive, int R>
GPT_KQ_TARGET void dot_q45k_rows(const uint8_t* row, const BlockQ8_K* const* a, int64_t nb, float* out) {
  using B = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  const auto* w = reinterpret_cast<const B*>(row);
  const __m512i nibble = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(0x01);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  // Mins pair with the input's sums of 16: lane j of 16 takes min j / 2.
  const __m256i pair_idx = _mm256_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  __m512 acc_min[R];
  for (int i = 0; i < R; ++i) acc_min[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i sm = scales_mins_k4(w[b].scales);
    const __m512i sm512 = _mm512_zextsi256_si512(sm);
    const __m256i mins16 = _mm256_permutexvar_epi16(pair_idx, sm);
    __m512i qh = _mm512_setzero_si512();
    if constexpr (kFive) qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh)));
    __m512i sumi[R];
    for (int i = 0; i < R; ++i) sumi[i] = _mm512_setzero_si512();
    for (int k = 0; k < 2; ++k) {
      const __m512i q = _mm512_loadu_si512(w[b].qs + 64 * k);
      __m512i lo = _mm512_and_si512(q, nibble);                          // sub-blocks 4k, 4k+2
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), nibble);   // sub-blocks 4k+1, 4k+3
      if constexpr (kFive) {  // qh[l] bit s: the fifth bit of sub-block s's weight l
        lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, lanes_of(4 * k, 4 * k + 2)), one), 4));
        hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, lanes_of(4 * k + 1, 4 * k + 3)), one), 4));
      }
      const __m512i slo = halves_of(sm512, 4 * k, 4 * k + 2), shi = halves_of(sm512, 4 * k + 1, 4 * k + 3);
      // The input comes with each 128 values' middle quarters swapped
      // (k_input_swapped): the low nibbles' inputs, then the high nibbles'.
      for (int i = 0; i < R; ++i) {
        const int8_t* x = a[i][b].qs + 128 * k;
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(lo, _mm512_loadu_si512(x)), slo);
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(hi, _mm512_loadu_si512(x + 64)), shi);
      }
    }
    const float d = half_to_float(w[b].d), dmin = half_to_float(w[b].dmin);
    for (int i = 0; i < R; ++i) {
      const __m256i summ = _mm256_madd_epi16(mins16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][b].bsums)));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[i]), _mm512_set1_ps(d * a[i][b].d), acc[i]);
      acc_min[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(summ)), _mm512_set1_ps(dmin * a[i][b].d), acc_min[i]);
    }
  }
  for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[i], acc_min[i]));
}

template <int R>
GPT_KQ_TARGET void dot_q6k_rows(const uint8_t* row, const BlockQ8_K* const* a, int64_t nb, float* out) {
  const auto* w = reinterpret_cast<const BlockQ6_K*>(row);
  const __m512i nibble = _mm512_set1_epi8(0x0F), two = _mm512_set1_epi8(0x03);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* sc = w[b].scales;
    __m512i sumi[R];
    for (int i = 0; i < R; ++i) sumi[i] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i l = _mm512_loadu_si512(w[b].ql + 64 * h);
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh + 32 * h));
      // High bits: planes 0/1 for weights 0-63 of this half, 2/3 (>> 4) for 64-127.
      const __m512i h01 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
      const __m512i h23 = _mm512_srli_epi16(h01, 4);
      const __m512i q01 = _mm512_or_si512(_mm512_and_si512(l, nibble), _mm512_slli_epi16(_mm512_and_si512(h01, two), 4));
      const __m512i q23 =
          _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), nibble), _mm512_slli_epi16(_mm512_and_si512(h23, two), 4));
      // 16-weight sub-blocks: 8 int16 lanes each.
      const int s = 8 * h;
      const __m512i s01 = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16(sc[s + 1]), _mm_set1_epi16(sc[s]))),
          _mm256_set_m128i(_mm_set1_epi16(sc[s + 3]), _mm_set1_epi16(sc[s + 2])), 1);
      const __m512i s23 = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16(sc[s + 5]), _mm_set1_epi16(sc[s + 4]))),
          _mm256_set_m128i(_mm_set1_epi16(sc[s + 7]), _mm_set1_epi16(sc[s + 6])), 1);
      for (int i = 0; i < R; ++i) {
        const int8_t* x = a[i][b].qs + 128 * h;
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(q01, _mm512_loadu_si512(x)), s01);
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(q23, _mm512_loadu_si512(x + 64)), s23);
      }
    }
    // The stored q are q + 32: take 32 * sum of scale * (sum of 16 inputs) off.
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    const float d = half_to_float(w[b].d);
    for (int i = 0; i < R; ++i) {
      const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][b].bsums)));
      sumi[i] = _mm512_sub_epi32(sumi[i], _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5)));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[i]), _mm512_set1_ps(d * a[i][b].d), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
}

// Int16 scale lanes for 16-weight sub-blocks: lanes 8i .. 8i+7 take s[first + i], i < 4.
GPT_KQ_TARGET inline __m512i sixteen_lanes(const __m512i& s16, int first) {
  const __m512i idx = _mm512_add_epi16(_mm512_set1_epi16(static_cast<int16_t>(first)),
                                       _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
                                                                          18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                                                          4, 3, 2, 1, 0),
                                                         3));
  return _mm512_permutexvar_epi16(idx, s16);
}

// Q2_K and Q3_K: 2-bit planes of 32 bytes per half (weights 32p + l take bits 2p
// of byte l). `high` adds Q3_K's third bit from hmask (bit 4h + p of byte l).
template <bool kThree>
GPT_KQ_TARGET inline void planes_2bit(const uint8_t* qs, const uint8_t* hmask, int h, __m512i& q01, __m512i& q23) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * h));
  const __m512i three = _mm512_set1_epi8(0x03);
  const __m512i all = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 2), 1);  // planes 0 | 1
  q01 = _mm512_and_si512(all, three);
  q23 = _mm512_and_si512(_mm512_srli_epi16(all, 4), three);  // planes 2 | 3
  if constexpr (kThree) {
    const __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(hmask)));
    const __m512i one = _mm512_set1_epi8(0x01);
    const __m512i h01 = _mm512_and_si512(_mm512_srlv_epi16(hm, lanes_of(4 * h, 4 * h + 1)), one);
    const __m512i h23 = _mm512_and_si512(_mm512_srlv_epi16(hm, lanes_of(4 * h + 2, 4 * h + 3)), one);
    q01 = _mm512_or_si512(q01, _mm512_slli_epi16(h01, 2));  // u = q + 4, in 0..7
    q23 = _mm512_or_si512(q23, _mm512_slli_epi16(h23, 2));
  }
}

// R input rows against one weight row (as dot_q45k_rows): each super-block's
// planes and scales unpacked once for all R.
template <int R>
GPT_KQ_TARGET void dot_q2k_rows(const uint8_t* row, const BlockQ8_K* const* a, int64_t nb, float* out) {
  const auto* w = reinterpret_cast<const BlockQ2_K*>(row);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales));
    const __m256i sc = _mm256_cvtepu8_epi16(_mm_and_si128(packed, _mm_set1_epi8(0x0F)));
    const __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
    const __m512i sc16 = _mm512_zextsi256_si512(sc);
    __m512i sumi[R];
    for (int i = 0; i < R; ++i) sumi[i] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      __m512i q01, q23;
      planes_2bit<false>(w[b].qs, nullptr, h, q01, q23);
      const __m512i s01 = sixteen_lanes(sc16, 8 * h), s23 = sixteen_lanes(sc16, 8 * h + 4);
      for (int i = 0; i < R; ++i) {
        const int8_t* x = a[i][b].qs + 128 * h;
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(q01, _mm512_loadu_si512(x)), s01);
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(q23, _mm512_loadu_si512(x + 64)), s23);
      }
    }
    const float d = half_to_float(w[b].d), dmin = half_to_float(w[b].dmin);
    for (int i = 0; i < R; ++i) {
      const __m256i summ = _mm256_madd_epi16(mn, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][b].bsums)));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[i]), _mm512_set1_ps(d * a[i][b].d), acc[i]);
      acc[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(summ)), _mm512_set1_ps(dmin * a[i][b].d), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
}

template <int R>
GPT_KQ_TARGET void dot_q3k_rows(const uint8_t* row, const BlockQ8_K* const* a, int64_t nb, float* out) {
  const auto* w = reinterpret_cast<const BlockQ3_K*>(row);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    // q3k_scale's arithmetic, four scales at a time in 32-bit words.
    uint32_t s[3];
    std::memcpy(s, w[b].scales, 12);
    const uint32_t low4 = 0x0f0f0f0f, top2 = 0x03030303;
    const uint32_t w0 = (s[0] & low4) | ((s[2] & top2) << 4), w1 = (s[1] & low4) | (((s[2] >> 2) & top2) << 4);
    const uint32_t w2 = ((s[0] >> 4) & low4) | (((s[2] >> 4) & top2) << 4);
    const uint32_t w3 = ((s[1] >> 4) & low4) | (((s[2] >> 6) & top2) << 4);
    const __m128i biased = _mm_set_epi32(static_cast<int>(w3), static_cast<int>(w2), static_cast<int>(w1), static_cast<int>(w0));
    const __m256i sc = _mm256_cvtepi8_epi16(_mm_sub_epi8(biased, _mm_set1_epi8(32)));
    const __m512i sc16 = _mm512_zextsi256_si512(sc);
    __m512i sumi[R];
    for (int i = 0; i < R; ++i) sumi[i] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      __m512i q01, q23;
      planes_2bit<true>(w[b].qs, w[b].hmask, h, q01, q23);
      const __m512i s01 = sixteen_lanes(sc16, 8 * h), s23 = sixteen_lanes(sc16, 8 * h + 4);
      for (int i = 0; i < R; ++i) {
        const int8_t* x = a[i][b].qs + 128 * h;
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(q01, _mm512_loadu_si512(x)), s01);
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], _mm512_maddubs_epi16(q23, _mm512_loadu_si512(x + 64)), s23);
      }
    }
    // The weights were taken as q + 4: take 4 * sum of scale * (sum of 16 inputs) off.
    const float d = half_to_float(w[b].d);
    for (int i = 0; i < R; ++i) {
      const __m256i corr = _mm256_madd_epi16(sc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][b].bsums)));
      sumi[i] = _mm512_sub_epi32(sumi[i], _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 2)));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[i]), _mm512_set1_ps(d * a[i][b].d), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
}


// Q4_1, Q5_0, Q5_1 against 32-value int8 input blocks: a block's 32 weights as
// unsigned bytes (low nibbles, then high; Q5's fifth bits set from qh's 32 bits),
// one VPDPBUSD with the input, the block's scales applied in float.
template <GgmlType kType>
GPT_KQ_TARGET float dot_legacy_avx512(const uint8_t* row, const ExtraInput& in, int64_t nb) {
  constexpr size_t kBytes = kType == GgmlType::kQ4_1 ? sizeof(BlockQ4_1) : kType == GgmlType::kQ5_0 ? sizeof(BlockQ5_0)
                                                                                                       : sizeof(BlockQ5_1);
  constexpr int kQs = kType == GgmlType::kQ4_1 ? 4 : kType == GgmlType::kQ5_0 ? 6 : 8;  // offset of qs
  const __m128i nibble = _mm_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float offsets = 0;  // the mins (Q4_1, Q5_1) or the -16 (Q5_0), times the block's input sum
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + kBytes * static_cast<size_t>(b);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kQs));
    __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), nibble), _mm_and_si128(q, nibble));
    if constexpr (kType != GgmlType::kQ4_1) {
      uint32_t qh;
      std::memcpy(&qh, blk + (kType == GgmlType::kQ5_0 ? 2 : 4), 4);
      u = _mm256_or_si256(u, _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10)));
    }
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in.qs + 32 * b));
    const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x);
    uint16_t dh, mh = 0;
    std::memcpy(&dh, blk, 2);
    const float d = half_to_float(dh);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * in.d[b]), acc);
    if constexpr (kType == GgmlType::kQ5_0) {
      offsets -= 16.0f * d * in.dsum[b];
    } else {
      std::memcpy(&mh, blk + 2, 2);
      offsets += half_to_float(mh) * in.dsum[b];
    }
  }
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1))) + offsets;
}

template <GgmlType kType>
GPT_KQ_TARGET void rows_legacy_avx512(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t n, const ExtraInput& in,
                                      float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_legacy_avx512<kType>(w + row_bytes * static_cast<size_t>(r), in, n / kBlock);
}

template <void (*Rows)(const uint8_t*, const BlockQ8_K* const*, int64_t, float*)>
GPT_KQ_TARGET float one_row(const uint8_t* row, const BlockQ8_K* a, int64_t nb) {
  float out;
  Rows(row, &a, nb, &out);
  return out;
}

// Four input rows at a time: out[i * rows + r].
template <void (*Rows4)(const uint8_t*, const BlockQ8_K* const*, int64_t, float*)>
GPT_KQ_TARGET void rows4_k_avx512(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t n, const ExtraInput* in,
                                  float* out) {
  const BlockQ8_K* a[4] = {in[0].k, in[1].k, in[2].k, in[3].k};
  for (int64_t r = 0; r < rows; ++r) {
    float o[4];
    Rows4(w + row_bytes * static_cast<size_t>(r), a, n / kSuperBlock, o);
    for (int i = 0; i < 4; ++i) out[i * rows + r] = o[i];
  }
}

template <float (*Dot)(const uint8_t*, const BlockQ8_K*, int64_t)>
GPT_KQ_TARGET void rows_k_avx512(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t n, const ExtraInput& in,
                                 float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = Dot(w + row_bytes * static_cast<size_t>(r), in.k, n / kSuperBlock);
}

// Q4_K and Q5_K in groups (kquants.h): 8 rows x R input rows per pass. A 64-byte
// load holds 8 bytes of each of the 8 rows; its low nibbles (sub-block 2p) and
// high nibbles (2p + 1) each meet one broadcast 8-byte word of an input in a
// VPMADDUBSW, whose int16 pair sums add up over the sub-block's four quarters (at
// most 4 * 2 * 31 * 127) before one VPDPWSSD applies the rows' scales. Int32 lanes
// 2r and 2r + 1 hold row r; they are added at the end, so no horizontal sum is
// taken per output. The mins meet the input's sums of 32 in one more VPDPWSSD
// pair; the 6-bit scales and mins of the 8 rows unpack in one pass. Q5_K's fifth
// bits are tested out of qh (a quarter of its 32 bytes per row per load).
GPT_KQ_TARGET inline __m512i scale_pick(int j) {  // VPSHUFB control: int16 lanes 4r..4r+3 take lane 4r + j
  alignas(16) int8_t c[16];
  for (int k = 0; k < 8; ++k) {
    const int from = (k < 4 ? 0 : 8) + 2 * j;
    c[2 * k] = static_cast<int8_t>(from);
    c[2 * k + 1] = static_cast<int8_t>(from + 1);
  }
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(c)));
}

// Lanes 2r and 2r + 1 -> row r: add each pair, keep the low 32 bits of each 64.
GPT_KQ_TARGET inline void store_row_pairs(__m512 acc, float* out) {
  const __m512 pairs = _mm512_add_ps(acc, _mm512_permute_ps(acc, 0xB1));
  _mm256_storeu_ps(out, _mm256_castsi256_ps(_mm512_cvtepi64_epi32(_mm512_castps_si512(pairs))));
}

template <bool kFive, int R>
GPT_KQ_TARGET void q45k_half_rows(const uint8_t* half, int64_t nb, const BlockQ8_K* const* a, float* out) {
  using B = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  constexpr int kQs = kFive ? 384 : 128;  // where the weights start (kquants.cpp's pieces_of)
  const __m512i nibble = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(0x10);
  const __m512i pick[4] = {scale_pick(0), scale_pick(1), scale_pick(2), scale_pick(3)};
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m256i low6 = _mm256_set1_epi32(0x3f3f3f3f), low4 = _mm256_set1_epi32(0x0f0f0f0f),
                top2 = _mm256_set1_epi32(0x03030303);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* g = half + static_cast<size_t>(b) * 8 * sizeof(B);
    const __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32));
    const __m256i s1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 64));
    const __m256i s2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 96));
    // get_scale_min's arithmetic for 8 rows at once: byte 4r + j of each is row r's j-th.
    const __m256i sc_lo = _mm256_and_si256(s0, low6), mn_lo = _mm256_and_si256(s1, low6);
    const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(s2, low4),
                                          _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(s0, 6), top2), 4));
    const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(s2, 4), low4),
                                          _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(s1, 6), top2), 4));
    const __m512 d = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(
                                                    _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g)))));
    const __m512 dmin = _mm512_permutexvar_ps(
        dup, _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16)))));
    {  // The mins times the input's sums of each sub-block (bsums in order).
      const __m512i mn_lo16 = _mm512_cvtepu8_epi16(mn_lo), mn_hi16 = _mm512_cvtepu8_epi16(mn_hi);
      for (int i = 0; i < R; ++i) {
        const __m256i sums = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][b].bsums)),
                                               _mm256_set1_epi16(1));
        const __m256i packed = _mm256_packs_epi32(sums, sums);  // sub-blocks 0-3 in the low 8 bytes, 4-7 at byte 16
        const __m512i m = _mm512_dpwssd_epi32(
            _mm512_dpwssd_epi32(_mm512_setzero_si512(), mn_lo16, _mm512_broadcastq_epi64(_mm256_castsi256_si128(packed))),
            mn_hi16, _mm512_broadcastq_epi64(_mm256_extracti128_si256(packed, 1)));
        acc[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmin, _mm512_set1_ps(a[i][b].d)), acc[i]);
      }
    }
    const __m512i sc16[2] = {_mm512_cvtepu8_epi16(sc_lo), _mm512_cvtepu8_epi16(sc_hi)};
    __m512i isum[R];
    for (int i = 0; i < R; ++i) isum[i] = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) {
      // The input's middle quarters of each 128 are swapped (k_input_swapped):
      // sub-block 2p's 32 values lie at xo, 2p + 1's at xo + 64.
      const int xo = 128 * (p / 2) + 32 * (p % 2);
      __m512i lo_sum[R], hi_sum[R];
      for (int c = 0; c < 4; ++c) {
        const __m512i q = _mm512_loadu_si512(g + kQs + 64 * (4 * p + c));
        __m512i lo = _mm512_and_si512(q, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), nibble);
        if constexpr (kFive) {  // qh[l] bit s: the fifth bit of sub-block s's weight l
          const __m512i qh = _mm512_loadu_si512(g + 128 + 64 * c);
          lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(qh, _mm512_set1_epi8(static_cast<char>(1 << (2 * p)))), lo, sixteen);
          hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(qh, _mm512_set1_epi8(static_cast<char>(2 << (2 * p)))), hi, sixteen);
        }
        for (int i = 0; i < R; ++i) {
          const int8_t* x = a[i][b].qs + xo + 8 * c;
          int64_t xl, xh;
          std::memcpy(&xl, x, 8);
          std::memcpy(&xh, x + 64, 8);
          const __m512i pl = _mm512_maddubs_epi16(lo, _mm512_set1_epi64(xl));
          const __m512i ph = _mm512_maddubs_epi16(hi, _mm512_set1_epi64(xh));
          lo_sum[i] = c == 0 ? pl : _mm512_add_epi16(lo_sum[i], pl);
          hi_sum[i] = c == 0 ? ph : _mm512_add_epi16(hi_sum[i], ph);
        }
      }
      const __m512i s_lo = _mm512_shuffle_epi8(sc16[p / 2], pick[(2 * p) % 4]);
      const __m512i s_hi = _mm512_shuffle_epi8(sc16[p / 2], pick[(2 * p + 1) % 4]);
      for (int i = 0; i < R; ++i) isum[i] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(isum[i], lo_sum[i], s_lo), hi_sum[i], s_hi);
    }
    for (int i = 0; i < R; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(d, _mm512_set1_ps(a[i][b].d)), acc[i]);
  }
  for (int i = 0; i < R; ++i) store_row_pairs(acc[i], out + 16 * i);
}

// Shared by the 16-weight sub-block kernels (Q6_K, Q2_K, Q3_K), whose scales come
// as s16[k]: int16 lanes 4r + m = row r's scale of sub-block 4k + m.
// The scales times one input's sums of 16 (bsums): row r in int32 lanes 2r, 2r + 1.
#define GPT_KQ_INLINE GPT_KQ_TARGET inline __attribute__((always_inline))
GPT_KQ_INLINE __m512i scales_times_sums(const __m512i (&s16)[4], const int16_t* bsums) {
  const __m128i bs0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bsums));
  const __m128i bs1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bsums + 8));
  __m512i o = _mm512_dpwssd_epi32(_mm512_setzero_si512(), s16[0], _mm512_broadcastq_epi64(bs0));
  o = _mm512_dpwssd_epi32(o, s16[1], _mm512_broadcastq_epi64(_mm_unpackhi_epi64(bs0, bs0)));
  o = _mm512_dpwssd_epi32(o, s16[2], _mm512_broadcastq_epi64(bs1));
  return _mm512_dpwssd_epi32(o, s16[3], _mm512_broadcastq_epi64(_mm_unpackhi_epi64(bs1, bs1)));
}
// One quarter c of half n: the four weight registers w[k] (input values 128n + 32k +
// 8c ..) against each input's broadcast 8 bytes; the first quarter of a pair sets
// sum[i][k], the second adds to it.
template <int R>
GPT_KQ_INLINE void quarter_products(const __m512i (&w)[4], const BlockQ8_K* const* a, int64_t b, int n, int c, bool first,
                                    __m512i (&sum)[R][4]) {
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    const int8_t* x = a[i][b].qs + 128 * n + 8 * c;
#pragma GCC unroll 8
    for (int k = 0; k < 4; ++k) {
      int64_t xv;
      std::memcpy(&xv, x + 32 * k, 8);
      const __m512i pr = _mm512_maddubs_epi16(w[k], _mm512_set1_epi64(xv));
      sum[i][k] = first ? pr : _mm512_add_epi16(sum[i][k], pr);
    }
  }
}
// Quarters 2t and 2t + 1 of half n make sub-blocks 8n + 2k + t: their sums times
// the 8 rows' scales, into isum.
template <int R>
GPT_KQ_INLINE void apply_scales(const __m512i (&sum)[R][4], const __m512i (&s16)[4], const __m512i (&pick)[4], int n, int t,
                                __m512i (&isum)[R]) {
#pragma GCC unroll 8
  for (int k = 0; k < 4; ++k) {
    const int j = 8 * n + 2 * k + t;
    const __m512i s = _mm512_shuffle_epi8(s16[j / 4], pick[j % 4]);
    for (int i = 0; i < R; ++i) isum[i] = _mm512_dpwssd_epi32(isum[i], sum[i][k], s);
  }
}

// Q6_K in groups: per half n of 128 weights and quarter c of qh's 32 bytes, one
// load of qh and two of ql give four registers of 6-bit weights (+32) for 8 rows:
// weights 128n + 8c + {0, 32, 64, 96} + 0..7, i.e. sub-blocks 8n + c/2 + {0, 2, 4, 6}.
// Two quarters' VPMADDUBSW sums (at most 2 * 2 * 63 * 127) make a sub-block's;
// VPDPWSSD applies the 8 rows' signed scales. The +32 comes off as 32 * (the
// scales times the input's sums of 16), four VPDPWSSD per super-block.
template <int R>
GPT_KQ_TARGET void q6k_half_rows(const uint8_t* half, int64_t nb, const BlockQ8_K* const* a, float* out) {
  const __m512i nibble = _mm512_set1_epi8(0x0F), three = _mm512_set1_epi8(0x03);
  const __m512i pick[4] = {scale_pick(0), scale_pick(1), scale_pick(2), scale_pick(3)};
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* g = half + static_cast<size_t>(b) * 8 * sizeof(BlockQ6_K);
    // Scales of sub-blocks 4k .. 4k + 3 as int16 lanes 4r + m (row r, sub-block 4k + m).
    __m512i sc16[4];
    for (int k = 0; k < 4; ++k) sc16[k] = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32 * k)));
    __m512i isum[R];
    for (int i = 0; i < R; ++i)  // -32 * sum of scale * (sum of the sub-block's 16 inputs)
      isum[i] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(scales_times_sums(sc16, a[i][b].bsums), 5));
#pragma GCC unroll 8
    for (int n = 0; n < 2; ++n) {
#pragma GCC unroll 8
      for (int t = 0; t < 2; ++t) {  // quarters 2t and 2t + 1: sub-blocks 8n + t + {0, 2, 4, 6}
        __m512i sum[R][4];
#pragma GCC unroll 8
        for (int c = 2 * t; c < 2 * t + 2; ++c) {
          const uint8_t* at = g + 144 + 192 * (4 * n + c);
          const __m512i h = _mm512_loadu_si512(at);
          const __m512i l0 = _mm512_loadu_si512(at + 64);   // ql bytes 8c..: weights +0 and +64
          const __m512i l1 = _mm512_loadu_si512(at + 128);  // ql bytes 32 + 8c..: +32 and +96
          const __m512i q[4] = {
              _mm512_or_si512(_mm512_and_si512(l0, nibble), _mm512_slli_epi16(_mm512_and_si512(h, three), 4)),
              _mm512_or_si512(_mm512_and_si512(l1, nibble), _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 2), three), 4)),
              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l0, 4), nibble),
                              _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 4), three), 4)),
              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l1, 4), nibble),
                              _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 6), three), 4))};
          quarter_products<R>(q, a, b, n, c, c == 2 * t, sum);
        }
        apply_scales<R>(sum, sc16, pick, n, t, isum);
      }
    }
    const __m512 d = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_cvtph_ps(
                                                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 128)))));
    for (int i = 0; i < R; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(d, _mm512_set1_ps(a[i][b].d)), acc[i]);
  }
  for (int i = 0; i < R; ++i) store_row_pairs(acc[i], out + 16 * i);
}

// Q2_K and Q3_K in groups: per half n of 128 weights and quarter c of its 32 qs
// bytes, one load gives the 8 rows' 2-bit planes k = 0..3: weights 128n + 32k +
// 8c + 0..7, sub-block 8n + 2k + c/2 (Q3_K: plus 4 where hmask's bit 4n + k is
// set, so u = q + 4 in 0..7). Two quarters make a sub-block's VPMADDUBSW sums;
// VPDPWSSD applies the rows' scales. Q2_K's mins and Q3_K's -4 meet the input's
// sums of 16 in four VPDPWSSD per super-block, as Q6_K's -32.
template <bool kThree, int R>
GPT_KQ_TARGET void q23k_half_rows(const uint8_t* half, int64_t nb, const BlockQ8_K* const* a, float* out) {
  constexpr size_t kHalf = 8 * (kThree ? sizeof(BlockQ3_K) : sizeof(BlockQ2_K));
  const __m512i three = _mm512_set1_epi8(0x03), four = _mm512_set1_epi8(0x04);
  const __m512i pick[4] = {scale_pick(0), scale_pick(1), scale_pick(2), scale_pick(3)};
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* g = half + static_cast<size_t>(b) * kHalf;
    // Scales of sub-blocks 4k .. 4k + 3 as int16 lanes 4r + m (row r, sub-block 4k + m).
    __m512i sc16[4], off16[4];  // off16: Q2_K's mins; Q3_K: the scales again (times -4 below)
    if constexpr (kThree) {  // q3k_scale's arithmetic for 8 rows: byte 4r + m of each word array
      const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
      const __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g));
      const __m256i s1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32));
      const __m256i s2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 64));
      const __m256i low[4] = {_mm256_and_si256(s0, low4), _mm256_and_si256(s1, low4),
                              _mm256_and_si256(_mm256_srli_epi16(s0, 4), low4), _mm256_and_si256(_mm256_srli_epi16(s1, 4), low4)};
      for (int k = 0; k < 4; ++k) {
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(s2, 2 * k), low2);
        const __m256i u = _mm256_or_si256(low[k], _mm256_slli_epi16(high, 4));
        sc16[k] = _mm512_sub_epi16(_mm512_cvtepu8_epi16(u), _mm512_set1_epi16(32));
        off16[k] = sc16[k];
      }
    } else {
      for (int k = 0; k < 4; ++k) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32 * k));
        sc16[k] = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, _mm256_set1_epi8(0x0F)));
        off16[k] = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F)));
      }
    }
    const __m512 d = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_cvtph_ps(
                                                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + (kThree ? 96 : 128))))));
    __m512i isum[R], osum[R];
    for (int i = 0; i < R; ++i) {  // the offsets times the input's sums of 16
      osum[i] = scales_times_sums(off16, a[i][b].bsums);
      isum[i] = kThree ? _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(osum[i], 2)) : _mm512_setzero_si512();
    }
#pragma GCC unroll 8
    for (int n = 0; n < 2; ++n) {
#pragma GCC unroll 8
      for (int t = 0; t < 2; ++t) {  // quarters 2t and 2t + 1: sub-blocks 8n + 2k + t
        __m512i sum[R][4];
#pragma GCC unroll 8
        for (int c = 2 * t; c < 2 * t + 2; ++c) {
          const uint8_t* qs = kThree ? (n == 0 ? g + 112 + 128 * c + 64 : g + 624 + 64 * c) : g + 160 + 64 * (4 * n + c);
          const __m512i q = _mm512_loadu_si512(qs);
          __m512i hm = _mm512_setzero_si512();
          if constexpr (kThree) hm = _mm512_loadu_si512(g + 112 + 128 * c);
          __m512i u[4];
#pragma GCC unroll 8
          for (int k = 0; k < 4; ++k) {
            u[k] = _mm512_and_si512(_mm512_srli_epi16(q, 2 * k), three);
            if constexpr (kThree)
              u[k] = _mm512_mask_add_epi8(u[k], _mm512_test_epi8_mask(hm, _mm512_set1_epi8(static_cast<char>(1 << (4 * n + k)))),
                                          u[k], four);
          }
          quarter_products<R>(u, a, b, n, c, c == 2 * t, sum);
        }
        apply_scales<R>(sum, sc16, pick, n, t, isum);
      }
    }
    for (int i = 0; i < R; ++i) {
      const __m512 di = _mm512_set1_ps(a[i][b].d);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(d, di), acc[i]);
      if constexpr (!kThree) {
        const __m512 dmin = _mm512_permutexvar_ps(
            dup, _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 144)))));
        acc[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(osum[i]), _mm512_mul_ps(dmin, di), acc[i]);
      }
    }
  }
  for (int i = 0; i < R; ++i) store_row_pairs(acc[i], out + 16 * i);
}

template <GgmlType kType, int R>
GPT_KQ_TARGET void k_half_rows(const uint8_t* half, int64_t nb, const BlockQ8_K* const* in, float* out) {
  if constexpr (kType == GgmlType::kQ6_K) q6k_half_rows<R>(half, nb, in, out);
  else if constexpr (kType == GgmlType::kQ2_K || kType == GgmlType::kQ3_K) q23k_half_rows<kType == GgmlType::kQ3_K, R>(half, nb, in, out);
  else q45k_half_rows<kType == GgmlType::kQ5_K, R>(half, nb, in, out);
}

template <GgmlType kType>
GPT_KQ_TARGET void k_group_avx512(const uint8_t* group, int64_t nb, const BlockQ8_K* const* in, int count, float* out) {
  constexpr size_t kHalf = 8 * (kType == GgmlType::kQ2_K   ? sizeof(BlockQ2_K)
                                : kType == GgmlType::kQ3_K ? sizeof(BlockQ3_K)
                                : kType == GgmlType::kQ4_K ? sizeof(BlockQ4_K)
                                : kType == GgmlType::kQ5_K ? sizeof(BlockQ5_K)
                                                           : sizeof(BlockQ6_K));
  for (int h = 0; h < 2; ++h) {
    const uint8_t* half = group + static_cast<size_t>(h * nb) * kHalf;
    switch (count) {
      case 1: k_half_rows<kType, 1>(half, nb, in, out + 8 * h); break;
      case 2: k_half_rows<kType, 2>(half, nb, in, out + 8 * h); break;
      case 3: k_half_rows<kType, 3>(half, nb, in, out + 8 * h); break;
      default: k_half_rows<kType, 4>(half, nb, in, out + 8 * h); break;
    }
  }
}

// quantize_row_q8_k with 16 values per vector: the same operations in the same
// order (amax, d = amax / 127, x * (1 / d) rounded to nearest even, NaN to 0), so
// the same bytes; written with the middle quarters swapped when asked.
GPT_KQ_TARGET void quantize_q8_k_avx512(const float* x, BlockQ8_K* y, int64_t n, bool swapped) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < n / kSuperBlock; ++b, x += kSuperBlock) {
    __m512 amax = _mm512_setzero_ps();
    // MAXPS gives its second operand where either is NaN: NaNs never win, as in std::max.
    for (int i = 0; i < kSuperBlock; i += 16) amax = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + i), abs_mask), amax);
    const float am = _mm512_reduce_max_ps(amax);
    const float d = am / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = d;
    const __m512 vid = _mm512_set1_ps(id), big = _mm512_set1_ps(1e9f);
    for (int j = 0; j < kSuperBlock / 16; ++j) {
      const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), vid);
      const __m512 clamped = _mm512_min_ps(_mm512_max_ps(v, _mm512_sub_ps(_mm512_setzero_ps(), big)), big);
      __m512i q = _mm512_cvtps_epi32(clamped);  // the current rounding mode: nearest even, as std::nearbyint
      q = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), q);
      q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
      y[b].bsums[j] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
      int at = 16 * j;
      if (swapped && (at % 128) >= 32 && (at % 128) < 96) at += (at % 128) < 64 ? 32 : -32;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs + at), _mm512_cvtepi32_epi8(q));
    }
  }
}
GPT_AVX512_WARNINGS_ON
#endif

// ---- NEON kernels (AArch64) -----------------------------------------------------
// kquants_neon.inc, compiled twice as quantize.cpp compiles its group kernel: for
// plain ARMv8 NEON and, each function carrying the extension as its target, for
// CPUs with the dot-product instructions.
#if defined(__aarch64__)
#define GPT_NEON_TARGET
namespace neon_plain {
constexpr bool kDot = false;
#include "gpt/kernels/kquants_neon.inc"
}  // namespace neon_plain
#undef GPT_NEON_TARGET
#define GPT_NEON_TARGET GPT_NEON_DOT_TARGET
namespace neon_dot {
constexpr bool kDot = true;
#include "gpt/kernels/kquants_neon.inc"
}  // namespace neon_dot
#undef GPT_NEON_TARGET

template <class B>
ExtraRowsDot rows_k_neon(QuantKernels level) {
  return level == QuantKernels::kNeonDot ? neon_dot::rows_k_neon<B> : neon_plain::rows_k_neon<B>;
}
template <class B>
ExtraRowsDot4 rows4_k_neon(QuantKernels level) {
  return level == QuantKernels::kNeonDot ? neon_dot::rows4_k_neon<B> : neon_plain::rows4_k_neon<B>;
}
template <class B>
ExtraRowsDot rows_legacy_neon(QuantKernels level) {
  return level == QuantKernels::kNeonDot ? neon_dot::rows_legacy_neon<B> : neon_plain::rows_legacy_neon<B>;
}
bool is_neon(QuantKernels level) { return level == QuantKernels::kNeon || level == QuantKernels::kNeonDot; }
#endif

GgmlType as_type(uint32_t t) { return static_cast<GgmlType>(t); }

}  // namespace

bool is_k_type(uint32_t type) {
  switch (as_type(type)) {
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K: return true;
    default: return false;
  }
}

bool is_extra_type(uint32_t type) {
  const GgmlType t = as_type(type);
  return is_k_type(type) || t == GgmlType::kQ4_1 || t == GgmlType::kQ5_0 || t == GgmlType::kQ5_1;
}

void quantize_row_extra(uint32_t type, const float* x, void* out, int64_t n) {
  const int64_t nk = n / kSuperBlock, nl = n / kBlock;
  switch (as_type(type)) {
    case GgmlType::kQ2_K: return quantize_scale_min<BlockQ2_K, 16, 3>(x, static_cast<BlockQ2_K*>(out), nk);
    case GgmlType::kQ3_K: return quantize_q3k(x, static_cast<BlockQ3_K*>(out), nk);
    case GgmlType::kQ4_K: return quantize_scale_min<BlockQ4_K, 32, 15>(x, static_cast<BlockQ4_K*>(out), nk);
    case GgmlType::kQ5_K: return quantize_scale_min<BlockQ5_K, 32, 31>(x, static_cast<BlockQ5_K*>(out), nk);
    case GgmlType::kQ6_K: return quantize_q6k(x, static_cast<BlockQ6_K*>(out), nk);
    case GgmlType::kQ4_1: return quantize_q_1<BlockQ4_1, false>(x, static_cast<BlockQ4_1*>(out), nl);
    case GgmlType::kQ5_0: return quantize_q5_0(x, static_cast<BlockQ5_0*>(out), nl);
    case GgmlType::kQ5_1: return quantize_q_1<BlockQ5_1, true>(x, static_cast<BlockQ5_1*>(out), nl);
    default: throw Error("quantize_row_extra: not a K or legacy type");
  }
}

void dequantize_row_extra(uint32_t type, const void* in, float* y, int64_t n) {
  const int64_t nk = n / kSuperBlock, nl = n / kBlock;
  switch (as_type(type)) {
    case GgmlType::kQ2_K: return dequantize_k(static_cast<const BlockQ2_K*>(in), y, nk);
    case GgmlType::kQ3_K: return dequantize_k(static_cast<const BlockQ3_K*>(in), y, nk);
    case GgmlType::kQ4_K: return dequantize_k(static_cast<const BlockQ4_K*>(in), y, nk);
    case GgmlType::kQ5_K: return dequantize_k(static_cast<const BlockQ5_K*>(in), y, nk);
    case GgmlType::kQ6_K: return dequantize_k(static_cast<const BlockQ6_K*>(in), y, nk);
    case GgmlType::kQ4_1: return dequantize_32(static_cast<const BlockQ4_1*>(in), y, nl);
    case GgmlType::kQ5_0: return dequantize_32(static_cast<const BlockQ5_0*>(in), y, nl);
    case GgmlType::kQ5_1: return dequantize_32(static_cast<const BlockQ5_1*>(in), y, nl);
    default: throw Error("dequantize_row_extra: not a K or legacy type");
  }
}

void quantize_row_q8_k(const float* x, BlockQ8_K* y, int64_t n) {
  for (int64_t b = 0; b < n / kSuperBlock; ++b, x += kSuperBlock) {
    float amax = 0;
    for (int i = 0; i < kSuperBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = d;
    for (int j = 0; j < kSuperBlock / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) {
        const int v = std::clamp(nearest(x[16 * j + i] * id), -127, 127);
        y[b].qs[16 * j + i] = static_cast<int8_t>(v);
        sum += v;
      }
      y[b].bsums[j] = static_cast<int16_t>(sum);
    }
  }
}

bool extra_has_fast_kernel(uint32_t type, QuantKernels level) {
#if defined(__x86_64__)
  return level == QuantKernels::kVnni && is_extra_type(type);
#elif defined(__aarch64__)
  return is_neon(level) && is_extra_type(type);
#else
  (void)type;
  (void)level;
  return false;
#endif
}

bool k_input_swapped(uint32_t type, QuantKernels level) {
#if defined(__x86_64__)
  return level == QuantKernels::kVnni && (as_type(type) == GgmlType::kQ4_K || as_type(type) == GgmlType::kQ5_K);
#else
  (void)type;
  (void)level;
  return false;
#endif
}

void swap_middle_quarters(BlockQ8_K* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b)
    for (int c = 0; c < kSuperBlock; c += 128) {
      int8_t tmp[32];
      std::memcpy(tmp, y[b].qs + c + 32, 32);
      std::memcpy(y[b].qs + c + 32, y[b].qs + c + 64, 32);
      std::memcpy(y[b].qs + c + 64, tmp, 32);
    }
}

bool k_row_interleaved(uint32_t type) {
#if defined(__x86_64__)
  return is_k_type(type);  // Q2_K .. Q6_K
#else
  (void)type;
  return false;
#endif
}

namespace {
// A grouped super-block of 8 rows is the 8 rows' blocks cut into pieces: each
// piece (`len` bytes at `src` in a row's block) goes to dst + len * (row % 8), so
// the 8 rows' copies of a piece lie side by side (kquants.h).
struct Piece {
  int src, dst, len;
};
std::vector<Piece> pieces_of(GgmlType t) {
  std::vector<Piece> v;
  if (t == GgmlType::kQ4_K || t == GgmlType::kQ5_K) {
    const int qs = t == GgmlType::kQ4_K ? 16 : 48, qs_dst = t == GgmlType::kQ4_K ? 128 : 384;
    v.push_back({0, 0, 2});   // d
    v.push_back({2, 16, 2});  // dmin
    for (int w = 0; w < 3; ++w) v.push_back({4 + 4 * w, 32 + 32 * w, 4});  // scale bytes 4w .. 4w + 3
    if (t == GgmlType::kQ5_K)
      for (int c = 0; c < 4; ++c) v.push_back({16 + 8 * c, 128 + 64 * c, 8});  // qh, a quarter at a time
    for (int p = 0; p < 4; ++p)
      for (int c = 0; c < 4; ++c) v.push_back({qs + 32 * p + 8 * c, qs_dst + 64 * (4 * p + c), 8});
  } else if (t == GgmlType::kQ2_K) {  // scales (low nibble) and mins (high) by fours, d, dmin, qs by quarters
    for (int g = 0; g < 4; ++g) v.push_back({4 * g, 32 * g, 4});
    v.push_back({80, 128, 2});
    v.push_back({82, 144, 2});
    for (int n = 0; n < 2; ++n)
      for (int c = 0; c < 4; ++c) v.push_back({16 + 32 * n + 8 * c, 160 + 64 * (4 * n + c), 8});
  } else if (t == GgmlType::kQ3_K) {  // scale bytes 0-3, 4-7, 8-11, d, then per quarter c of
                                      // hmask: its 8 bytes and the first half's qs quarter; the second half's qs
    for (int w = 0; w < 3; ++w) v.push_back({96 + 4 * w, 32 * w, 4});
    v.push_back({108, 96, 2});
    for (int c = 0; c < 4; ++c) {
      v.push_back({8 * c, 112 + 128 * c, 8});
      v.push_back({32 + 8 * c, 112 + 128 * c + 64, 8});
    }
    for (int c = 0; c < 4; ++c) v.push_back({64 + 8 * c, 624 + 64 * c, 8});
  } else {  // Q6_K, in the order the kernel reads it: the scales (by fours), d, then
             // per half n and quarter c of qh, qh's quarter and the two ql quarters it completes
    for (int g = 0; g < 4; ++g) v.push_back({192 + 4 * g, 32 * g, 4});
    v.push_back({208, 128, 2});
    for (int n = 0; n < 2; ++n)
      for (int c = 0; c < 4; ++c) {
        const int at = 144 + 192 * (4 * n + c);
        v.push_back({128 + 32 * n + 8 * c, at, 8});
        v.push_back({64 * n + 8 * c, at + 64, 8});
        v.push_back({64 * n + 32 + 8 * c, at + 128, 8});
      }
  }
  return v;
}
const std::vector<Piece>& pieces(GgmlType t) {
  static const std::vector<Piece> q2 = pieces_of(GgmlType::kQ2_K), q3 = pieces_of(GgmlType::kQ3_K),
                                   q4 = pieces_of(GgmlType::kQ4_K), q5 = pieces_of(GgmlType::kQ5_K),
                                   q6 = pieces_of(GgmlType::kQ6_K);
  switch (t) {
    case GgmlType::kQ2_K: return q2;
    case GgmlType::kQ3_K: return q3;
    case GgmlType::kQ4_K: return q4;
    case GgmlType::kQ5_K: return q5;
    default: return q6;
  }
}
// Where row r's (0-15) super-block b starts in a group.
size_t group_block_at(GgmlType t, int64_t nb, int64_t r, int64_t b) {
  return static_cast<size_t>((r / 8) * nb + b) * 8 * static_cast<size_t>(ggml_block_bytes(t));
}
}  // namespace

void interleave_k_group(uint32_t type, const uint8_t* rows, size_t row_bytes, int64_t nb, uint8_t* group) {
  GPT_CHECK(k_row_interleaved(type), "interleave_k_group: not a grouped type");
  const GgmlType t = as_type(type);
  const auto bb = static_cast<size_t>(ggml_block_bytes(t));
  for (int64_t r = 0; r < kKGroupRows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = rows + static_cast<size_t>(r) * row_bytes + static_cast<size_t>(b) * bb;
      uint8_t* g = group + group_block_at(t, nb, r, b);
      for (const Piece& pc : pieces(t)) std::memcpy(g + pc.dst + pc.len * (r % 8), blk + pc.src, static_cast<size_t>(pc.len));
    }
}

void deinterleave_k_row(uint32_t type, const uint8_t* group, int64_t nb, int64_t r, uint8_t* row) {
  GPT_CHECK(k_row_interleaved(type), "deinterleave_k_row: not a grouped type");
  const GgmlType t = as_type(type);
  const auto bb = static_cast<size_t>(ggml_block_bytes(t));
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* g = group + group_block_at(t, nb, r, b);
    uint8_t* blk = row + static_cast<size_t>(b) * bb;
    for (const Piece& pc : pieces(t)) std::memcpy(blk + pc.src, g + pc.dst + pc.len * (r % 8), static_cast<size_t>(pc.len));
  }
}

KGroupDot k_group_dot(uint32_t type, QuantKernels level) {
#if defined(__x86_64__)
  if (level == QuantKernels::kVnni) {
    switch (as_type(type)) {
      case GgmlType::kQ2_K: return k_group_avx512<GgmlType::kQ2_K>;
      case GgmlType::kQ3_K: return k_group_avx512<GgmlType::kQ3_K>;
      case GgmlType::kQ4_K: return k_group_avx512<GgmlType::kQ4_K>;
      case GgmlType::kQ5_K: return k_group_avx512<GgmlType::kQ5_K>;
      case GgmlType::kQ6_K: return k_group_avx512<GgmlType::kQ6_K>;
      default: break;
    }
  }
#else
  (void)type;
  (void)level;
#endif
  return nullptr;
}

void quantize_row_q8_k_at(QuantKernels level, const float* x, BlockQ8_K* y, int64_t n, bool swapped) {
#if defined(__x86_64__)
  if (level == QuantKernels::kVnni) return quantize_q8_k_avx512(x, y, n, swapped);
#else
  (void)level;
#endif
  quantize_row_q8_k(x, y, n);
  if (swapped) swap_middle_quarters(y, n / kSuperBlock);
}

ExtraRowsDot4 extra_rows_dot4(uint32_t type, QuantKernels level) {
#if defined(__x86_64__)
  const bool fast = level == QuantKernels::kVnni;
  if (fast && as_type(type) == GgmlType::kQ4_K) return rows4_k_avx512<dot_q45k_rows<false, 4>>;
  if (fast && as_type(type) == GgmlType::kQ5_K) return rows4_k_avx512<dot_q45k_rows<true, 4>>;
  if (fast && as_type(type) == GgmlType::kQ6_K) return rows4_k_avx512<dot_q6k_rows<4>>;
  if (fast && as_type(type) == GgmlType::kQ3_K) return rows4_k_avx512<dot_q3k_rows<4>>;
  if (fast && as_type(type) == GgmlType::kQ2_K) return rows4_k_avx512<dot_q2k_rows<4>>;
#elif defined(__aarch64__)
  if (is_neon(level)) {
    switch (as_type(type)) {
      case GgmlType::kQ2_K: return rows4_k_neon<BlockQ2_K>(level);
      case GgmlType::kQ3_K: return rows4_k_neon<BlockQ3_K>(level);
      case GgmlType::kQ4_K: return rows4_k_neon<BlockQ4_K>(level);
      case GgmlType::kQ5_K: return rows4_k_neon<BlockQ5_K>(level);
      case GgmlType::kQ6_K: return rows4_k_neon<BlockQ6_K>(level);
      default: break;
    }
  }
#else
  (void)type;
  (void)level;
#endif
  return nullptr;
}

ExtraRowsDot extra_rows_dot(uint32_t type, QuantKernels level) {
#if defined(__x86_64__)
  const bool fast = level == QuantKernels::kVnni;
  if (fast && as_type(type) == GgmlType::kQ4_K) return rows_k_avx512<one_row<dot_q45k_rows<false, 1>>>;
  if (fast && as_type(type) == GgmlType::kQ6_K) return rows_k_avx512<one_row<dot_q6k_rows<1>>>;
  if (fast && as_type(type) == GgmlType::kQ5_K) return rows_k_avx512<one_row<dot_q45k_rows<true, 1>>>;
  if (fast && as_type(type) == GgmlType::kQ3_K) return rows_k_avx512<one_row<dot_q3k_rows<1>>>;
  if (fast && as_type(type) == GgmlType::kQ2_K) return rows_k_avx512<one_row<dot_q2k_rows<1>>>;
  if (fast && as_type(type) == GgmlType::kQ4_1) return rows_legacy_avx512<GgmlType::kQ4_1>;
  if (fast && as_type(type) == GgmlType::kQ5_0) return rows_legacy_avx512<GgmlType::kQ5_0>;
  if (fast && as_type(type) == GgmlType::kQ5_1) return rows_legacy_avx512<GgmlType::kQ5_1>;
#elif defined(__aarch64__)
  if (is_neon(level)) {
    switch (as_type(type)) {
      case GgmlType::kQ2_K: return rows_k_neon<BlockQ2_K>(level);
      case GgmlType::kQ3_K: return rows_k_neon<BlockQ3_K>(level);
      case GgmlType::kQ4_K: return rows_k_neon<BlockQ4_K>(level);
      case GgmlType::kQ5_K: return rows_k_neon<BlockQ5_K>(level);
      case GgmlType::kQ6_K: return rows_k_neon<BlockQ6_K>(level);
      case GgmlType::kQ4_1: return rows_legacy_neon<BlockQ4_1>(level);
      case GgmlType::kQ5_0: return rows_legacy_neon<BlockQ5_0>(level);
      case GgmlType::kQ5_1: return rows_legacy_neon<BlockQ5_1>(level);
      default: break;
    }
  }
#else
  (void)level;
#endif
  switch (as_type(type)) {
    case GgmlType::kQ2_K: return rows_k<dot_k<BlockQ2_K>>;
    case GgmlType::kQ3_K: return rows_k<dot_k<BlockQ3_K>>;
    case GgmlType::kQ4_K: return rows_k<dot_k<BlockQ4_K>>;
    case GgmlType::kQ5_K: return rows_k<dot_k<BlockQ5_K>>;
    case GgmlType::kQ6_K: return rows_k<dot_k<BlockQ6_K>>;
    case GgmlType::kQ4_1: return rows_legacy<dot_32<BlockQ4_1>>;
    case GgmlType::kQ5_0: return rows_legacy<dot_32<BlockQ5_0>>;
    case GgmlType::kQ5_1: return rows_legacy<dot_32<BlockQ5_1>>;
    default: throw Error("extra_rows_dot: not a K or legacy type");
  }
}

}  // namespace gpt
