#include "gpt/kernels/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/fast_math.h"
#include "gpt/kernels/float16.h"

namespace gpt {
namespace {

// One query's head over its pages: online softmax a page at a time.
GPT_MULTIVERSION void attend_head(const PagedQuery& query, const PagedKv& kv, int64_t h, int64_t hs, float* acc,
                                  float* scores, float* k_wide, float* v_wide) {
  const float* q = query.q + h * hs;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t P = kv.page_size, head_offset = h * P * hs;
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

}  // namespace

void paged_attention(const PagedQuery* queries, int64_t n, const PagedKv& kv, int64_t C, int64_t NH) {
  const int64_t hs = C / NH, tasks = n * NH;
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
