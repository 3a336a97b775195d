// The straightforward attention the blocked kernels are tested against: one query
// at a time, the whole (B,NH,T,T) softmax matrix stored for backward (gpt.cpp's
// own implementation until the blocked one replaced it).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace gpt::testing {

// One query against keys 0 .. n_keys-1: row <- softmax(q . k / sqrt(hs)), out <- sum_t row[t] v_t.
inline void reference_attend_one_query(float* out, float* row, const float* q, const float* keys,
                                       const float* values, int64_t stride, int64_t n_keys, int64_t hs,
                                       float scale) {
  float maxval = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n_keys; ++t) {
    float dot = 0.0f;
    for (int64_t i = 0; i < hs; ++i) dot += q[i] * keys[t * stride + i];
    row[t] = dot * scale;
    maxval = std::max(maxval, row[t]);
  }
  float sum = 0.0f;
  for (int64_t t = 0; t < n_keys; ++t) {
    row[t] = std::exp(row[t] - maxval);
    sum += row[t];
  }
  for (int64_t i = 0; i < hs; ++i) out[i] = 0.0f;
  for (int64_t t = 0; t < n_keys; ++t) {
    row[t] /= sum;
    for (int64_t i = 0; i < hs; ++i) out[i] += row[t] * values[t * stride + i];
  }
}

inline void reference_attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T,
                                        int64_t C, int64_t NH) {
  const int64_t hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const float* q = qkv + (b * T + t) * C3 + h * hs;
        const float* keys = qkv + b * T * C3 + C + h * hs;
        float* row = att + ((b * NH + h) * T + t) * T;
        reference_attend_one_query(out + (b * T + t) * C + h * hs, row, q, keys, keys + C, C3, t + 1, hs, scale);
        for (int64_t t2 = t + 1; t2 < T; ++t2) row[t2] = 0.0f;  // the causal mask
      }
    }
  }
}

inline void reference_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int64_t B, int64_t T, int64_t C, int64_t NH, float* scratch,
                        int scratch_threads) {
  const int64_t hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int threads = std::max(1, std::min(omp_get_max_threads(), scratch_threads));
  // One (b, h) pair per task: row t writes dk and dv of every earlier row, so rows
  // of one head cannot run in parallel without races.
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      float* datt = scratch + static_cast<int64_t>(omp_get_thread_num()) * T;
      for (int64_t t = 0; t < T; ++t) {
        float* d = dqkv + (b * T + t) * C3 + h * hs;
        std::memset(d, 0, sizeof(float) * static_cast<size_t>(hs));
        std::memset(d + C, 0, sizeof(float) * static_cast<size_t>(hs));
        std::memset(d + 2 * C, 0, sizeof(float) * static_cast<size_t>(hs));
      }
      for (int64_t t = 0; t < T; ++t) {
        const float* row = att + ((b * NH + h) * T + t) * T;
        const float* dout_t = dout + (b * T + t) * C + h * hs;
        const float* q = qkv + (b * T + t) * C3 + h * hs;
        float* dq = dqkv + (b * T + t) * C3 + h * hs;
        // out_t = sum_t2 att[t2] v_t2  =>  datt[t2] = dout_t . v_t2, dv_t2 += att[t2] dout_t
        float dot_sum = 0.0f;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* v = qkv + (b * T + t2) * C3 + 2 * C + h * hs;
          float* dv = dqkv + (b * T + t2) * C3 + 2 * C + h * hs;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < hs; ++i) {
            dot += dout_t[i] * v[i];
            dv[i] += row[t2] * dout_t[i];
          }
          datt[t2] = dot;
          dot_sum += row[t2] * dot;
        }
        // softmax backward: dpre = att * (datt - sum(att * datt)), then the scale.
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float dpre = row[t2] * (datt[t2] - dot_sum) * scale;
          const float* k = qkv + (b * T + t2) * C3 + C + h * hs;
          float* dk = dqkv + (b * T + t2) * C3 + C + h * hs;
#pragma omp simd
          for (int64_t i = 0; i < hs; ++i) {
            dq[i] += dpre * k[i];
            dk[i] += dpre * q[i];
          }
        }
      }
    }
  }
}

}  // namespace gpt::testing
