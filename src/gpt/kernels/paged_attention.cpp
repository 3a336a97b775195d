#include "gpt/kernels/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gpt/kernels/avx512.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/fast_math.h"
#include "gpt/kernels/float16.h"
#include "gpt/kernels/neon.h"


namespace gpt {
namespace {

// A kernel for one query's head with its width built in (scores: a page's worth).
using AttendHead = void (*)(const PagedQuery&, const PagedKv&, int64_t, float*);

// One query's head over its pages: online softmax a page at a time.
GPT_MULTIVERSION void attend_head(const PagedQuery& query, const PagedKv& kv, int64_t h, int64_t hs, float* acc,
                                  float* scores, float* k_wide, float* v_wide) {
  const float* q = query.q + h * hs;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t P = kv.page_size, head_offset = h / kv.group * P * hs;
  float m = -std::numeric_limits<float>::infinity();
  double sum = 0.0;
  std::fill(acc, acc + hs, 0.0f);
  for (int64_t p0 = 0; p0 <= query.position; p0 += P) {
    const int64_t page = query.pages[p0 / P], count = std::min(P, query.position + 1 - p0);
    const int64_t at = page * kv.page_stride + head_offset;
    const float *k, *v;
    if (kv.float16) {
      halves_to_floats(static_cast<const uint16_t*>(kv.k_base) + at, k_wide, count * hs);
      halves_to_floats(static_cast<const uint16_t*>(kv.v_base) + at, v_wide, count * hs);
      k = k_wide;
      v = v_wide;
    } else {
      k = static_cast<const float*>(kv.k_base) + at;
      v = static_cast<const float*>(kv.v_base) + at;
    }
    float block_max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < count; ++j) {
      const float* kj = k + j * hs;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < hs; ++i) s += q[i] * kj[i];
      scores[j] = s * scale;
      block_max = std::max(block_max, scores[j]);
    }
    const float m_new = std::max(m, block_max);
    if (m != m_new && sum > 0.0) {  // rescale what was summed against the old maximum
      const float c = exp_nonpositive(m - m_new);
      sum *= c;
#pragma omp simd
      for (int64_t i = 0; i < hs; ++i) acc[i] *= c;
    }
    m = m_new;
    for (int64_t j = 0; j < count; ++j) {
      const float e = exp_nonpositive(scores[j] - m);
      sum += e;
      const float* vj = v + j * hs;
#pragma omp simd
      for (int64_t i = 0; i < hs; ++i) acc[i] += e * vj[i];
    }
  }
  const auto inv = static_cast<float>(1.0 / sum);
  float* out = query.out + h * hs;
#pragma omp simd
  for (int64_t i = 0; i < hs; ++i) out[i] = acc[i] * inv;
}

#if defined(__x86_64__)
GPT_AVX512_WARNINGS_OFF

// attend_head with the query and the running output in NQ = hs / 16 registers,
// keys and values read in place (float16 widened per vector), online softmax a
// page at a time. At 16 sequences x ~160 positions, 12 layers, the portable
// loop (its output row stored and reloaded per key) took a fifth of a step.
template <int NQ, typename T>
GPT_AVX512_TARGET void attend_head_simd(const PagedQuery& query, const PagedKv& kv, int64_t h, float* scores) {
  constexpr int64_t hs = 16 * NQ;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  __m512 qv[NQ], acc[NQ];
  for (int c = 0; c < NQ; ++c) {
    qv[c] = _mm512_mul_ps(_mm512_loadu_ps(query.q + h * hs + 16 * c), _mm512_set1_ps(scale));
    acc[c] = _mm512_setzero_ps();
  }
  const int64_t P = kv.page_size, head_offset = h / kv.group * P * hs;
  float m = kNegInf, sum = 0.0f;
  for (int64_t p0 = 0; p0 <= query.position; p0 += P) {
    const int64_t page = query.pages[p0 / P], count = std::min(P, query.position + 1 - p0);
    const int64_t at = page * kv.page_stride + head_offset;
    const T* k = static_cast<const T*>(kv.k_base) + at;
    const T* v = static_cast<const T*>(kv.v_base) + at;
    float block_max = kNegInf;
    for (int64_t j = 0; j < count; ++j) {
      __m512 dot = _mm512_mul_ps(qv[0], load16(k + j * hs));
      for (int c = 1; c < NQ; ++c) dot = _mm512_fmadd_ps(qv[c], load16(k + j * hs + 16 * c), dot);
      scores[j] = _mm512_reduce_add_ps(dot);
      block_max = std::max(block_max, scores[j]);
    }
    const float m_new = std::max(m, block_max);
    if (m_new > m) {  // rescale what was summed against the old maximum
      const float shrink = m == kNegInf ? 0.0f : exp_nonpositive(m - m_new);
      sum *= shrink;
      for (int c = 0; c < NQ; ++c) acc[c] = _mm512_mul_ps(acc[c], _mm512_set1_ps(shrink));
      m = m_new;
    }
    for (int64_t j = 0; j < count; ++j) {
      const float e = exp_nonpositive(scores[j] - m);
      sum += e;
      const __m512 a = _mm512_set1_ps(e);
      for (int c = 0; c < NQ; ++c) acc[c] = _mm512_fmadd_ps(a, load16(v + j * hs + 16 * c), acc[c]);
    }
  }
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  float* out = query.out + h * hs;
  for (int c = 0; c < NQ; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], inv));
}

GPT_AVX512_WARNINGS_ON
#endif

#if defined(__aarch64__)
// The same kernel for AArch64's NEON: the query and the running output in
// 4 * NQ vectors of 4 floats each (up to hs = 48 all in registers; wider heads
// spill some to the stack, a tuning item for ARM hardware), keys and values read
// in place (a float16 page widened 4 at a time by FCVTL), online softmax a page
// at a time. A key's score sums its products in two chains (even and odd
// vectors) as the contiguous NEON kernel in attention.cpp does, then across
// lanes.
template <int NQ, typename T>
void attend_head_simd(const PagedQuery& query, const PagedKv& kv, int64_t h, float* scores) {
  constexpr int64_t hs = 16 * NQ;
  constexpr int kVectors = 4 * NQ;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  float32x4_t qv[kVectors], acc[kVectors];
  for (int c = 0; c < kVectors; ++c) {
    qv[c] = vmulq_n_f32(vld1q_f32(query.q + h * hs + 4 * c), scale);
    acc[c] = vdupq_n_f32(0.0f);
  }
  const int64_t P = kv.page_size, head_offset = h / kv.group * P * hs;
  float m = kNegInf, sum = 0.0f;
  for (int64_t p0 = 0; p0 <= query.position; p0 += P) {
    const int64_t page = query.pages[p0 / P], count = std::min(P, query.position + 1 - p0);
    const int64_t at = page * kv.page_stride + head_offset;
    const T* k = static_cast<const T*>(kv.k_base) + at;
    const T* v = static_cast<const T*>(kv.v_base) + at;
    float block_max = kNegInf;
    for (int64_t j = 0; j < count; ++j) {
      const T* kj = k + j * hs;
      float32x4_t d0 = vmulq_f32(qv[0], load4(kj)), d1 = vmulq_f32(qv[1], load4(kj + 4));
      for (int c = 2; c < kVectors; c += 2) {
        d0 = vfmaq_f32(d0, qv[c], load4(kj + 4 * c));
        d1 = vfmaq_f32(d1, qv[c + 1], load4(kj + 4 * c + 4));
      }
      scores[j] = vaddvq_f32(vaddq_f32(d0, d1));
      block_max = std::max(block_max, scores[j]);
    }
    const float m_new = std::max(m, block_max);
    if (m_new > m) {  // rescale what was summed against the old maximum
      const float shrink = m == kNegInf ? 0.0f : exp_nonpositive(m - m_new);
      sum *= shrink;
      for (int c = 0; c < kVectors; ++c) acc[c] = vmulq_n_f32(acc[c], shrink);
      m = m_new;
    }
    for (int64_t j = 0; j < count; ++j) {
      const float e = exp_nonpositive(scores[j] - m);
      sum += e;
      const T* vj = v + j * hs;
      for (int c = 0; c < kVectors; ++c) acc[c] = vfmaq_n_f32(acc[c], load4(vj + 4 * c), e);
    }
  }
  const float inv = 1.0f / sum;
  float* out = query.out + h * hs;
  for (int c = 0; c < kVectors; ++c) vst1q_f32(out + 4 * c, vmulq_n_f32(acc[c], inv));
}
#endif

#if defined(__x86_64__) || defined(__aarch64__)
// This ISA's kernel (attend_head_simd) for heads of hs = 16 * NQ.
template <typename T>
AttendHead attend_head_kernel(int64_t hs) {
  switch (hs / 16) {
    case 1: return attend_head_simd<1, T>;
    case 2: return attend_head_simd<2, T>;
    case 3: return attend_head_simd<3, T>;
    case 4: return attend_head_simd<4, T>;
    case 5: return attend_head_simd<5, T>;
    case 6: return attend_head_simd<6, T>;
    case 7: return attend_head_simd<7, T>;
    case 8: return attend_head_simd<8, T>;
    default: return nullptr;
  }
}
#endif

// The AVX-512 or NEON kernel for this head width and cache type, or null
// (portable loop).
AttendHead fast_kernel(int64_t hs, bool float16) {
#if defined(__x86_64__) || defined(__aarch64__)
#if defined(__x86_64__)
  if (!cpu_has_avx512f()) return nullptr;
#endif
  if (portable_kernels_forced() || hs % 16 != 0) return nullptr;  // every AArch64 CPU has NEON
  return float16 ? attend_head_kernel<uint16_t>(hs) : attend_head_kernel<float>(hs);
#else
  (void)hs, (void)float16;
  return nullptr;
#endif
}

}  // namespace

void paged_attention(const PagedQuery* queries, int64_t n, const PagedKv& kv, int64_t C, int64_t NH) {
  const int64_t hs = C / NH, tasks = n * NH;
  if (const AttendHead fast = fast_kernel(hs, kv.float16)) {
#pragma omp parallel if (tasks > 1)
    {
      thread_local std::vector<float> scores;
      if (scores.size() < static_cast<size_t>(kv.page_size)) scores.resize(static_cast<size_t>(kv.page_size));
#pragma omp for schedule(dynamic, 4)
      for (int64_t t = 0; t < tasks; ++t) fast(queries[t / NH], kv, t % NH, scores.data());
    }
    return;
  }
#pragma omp parallel if (tasks > 1)
  {
    // Per thread: the running output, a page's scores, a page widened from float16.
    thread_local std::vector<float> scratch;
    const auto need = static_cast<size_t>(hs + kv.page_size + 2 * kv.page_size * hs);
    if (scratch.size() < need) scratch.resize(need);
    float* acc = scratch.data();
    float* scores = acc + hs;
    float* k_wide = scores + kv.page_size;
    float* v_wide = k_wide + kv.page_size * hs;
#pragma omp for schedule(dynamic, 4)
    for (int64_t t = 0; t < tasks; ++t) attend_head(queries[t / NH], kv, t % NH, hs, acc, scores, k_wide, v_wide);
  }
}

}  // namespace gpt
