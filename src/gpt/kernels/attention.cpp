#include "gpt/kernels/attention.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/dropout.h"
#include "gpt/kernels/fast_math.h"

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "gpt/kernels/avx512.h"
#include "gpt/kernels/float16.h"
#include "gpt/kernels/matmul.h"
#include "gpt/kernels/neon.h"
#include "gpt/kernels/thread_share.h"

namespace gpt {
namespace {

// out[j0, j0 + W) = sum_t row[t] v_t[j0, j0 + W): W a constant, so the W
// sums stay in registers across all keys (accumulating into `out` in memory made
// every key wait for the previous key's store: ~1.4x slower at 900 keys).
template <int W>
inline void weighted_values(float* out, const float* row, const float* values, int64_t stride, int64_t n_keys,
                            int64_t j0) {
  float acc[W] = {};
  for (int64_t t = 0; t < n_keys; ++t) {
    const float a = row[t];
    const float* v = values + t * stride + j0;
#pragma omp simd
    for (int j = 0; j < W; ++j) acc[j] += a * v[j];
  }
  for (int j = 0; j < W; ++j) out[j0 + j] = acc[j];
}

// row[0, n) <- softmax of the scores it holds, whose maximum is maxval.
inline void softmax_in_place(float* row, int64_t n, float maxval) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t t = 0; t < n; ++t) {
    row[t] = exp_nonpositive(row[t] - maxval);
    sum += row[t];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) row[t] *= inv;
}

// One query against keys 0 .. n_keys-1: row <- softmax(q . k / sqrt(hs)) (the
// attention weights), out (hs) <- sum_t row[t] v_t. Keys and values are rows of
// `hs` floats, `stride` floats apart (the KV-cache path).
inline void attend_one_query(float* out, float* row, const float* q, const float* keys, const float* values,
                             int64_t stride, int64_t n_keys, int64_t hs, float scale) {
  float maxval = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n_keys; ++t) {
    const float* k = keys + t * stride;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < hs; ++i) dot += q[i] * k[i];
    row[t] = dot * scale;
    maxval = std::max(maxval, row[t]);
  }
  softmax_in_place(row, n_keys, maxval);
  int64_t j0 = 0;
  for (; j0 + 64 <= hs; j0 += 64) weighted_values<64>(out, row, values, stride, n_keys, j0);
  if (j0 + 32 <= hs) weighted_values<32>(out, row, values, stride, n_keys, j0), j0 += 32;
  if (j0 + 16 <= hs) weighted_values<16>(out, row, values, stride, n_keys, j0), j0 += 16;
  for (; j0 < hs; ++j0) weighted_values<1>(out, row, values, stride, n_keys, j0);
}

}  // namespace

// Blocked attention, flash-attention style: per (batch, head) task, queries go in
// blocks of kQueryBlock rows; a block's scores against the keys it may see are a
// small GEMM into thread-local scratch, never stored. Forward keeps only each
// row's log-sum-exp; backward recomputes the block's probabilities from it.
// Matrix products are oneDNN's sgemm (single-threaded inside the parallel loop).
namespace {

constexpr int64_t kQueryBlock = 64;

std::vector<float>& thread_scratch(int64_t n) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(n)) scratch.resize(static_cast<size_t>(n));
  return scratch;
}

// S (nq, nk) = scale * Q K^T, causal-masked, turned into probabilities P in place.
// The query of row i sees columns first[i] .. q0 + i (first null: from column 0;
// packed rows: from its own example's first token). With `lse_in` the rows'
// log-sum-exps are given (backward); else computed into lse_out.
template <bool kSegments>
__attribute__((always_inline)) inline void block_probabilities_impl(float* S, int64_t nq, int64_t nk, int64_t q0,
                                                                    const int64_t* first, const float* lse_in,
                                                                    float* lse_out) {
  constexpr int64_t kLanes = 16;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < nq; ++i) {
    float* row = S + i * nk;
    const int64_t visible = q0 + i + 1;
    const int64_t lo = kSegments ? first[i] : 0;
    // Whole blocks of 16 keys, the lanes past the causal edge masked: written as
    // fixed 16-lane loops so each block is one vector whatever the row's length
    // (the compiler's own vector loops over `visible` came with scalar tails
    // that took most of this function's time: a row sees ~nk/2 keys). Keys from
    // vec_end on (only when nk is not a multiple of 16) go one by one.
    const int64_t vec_begin = kSegments ? std::min(lo / kLanes * kLanes, nk / kLanes * kLanes) : 0;
    const int64_t vec_end = std::min((visible + kLanes - 1) / kLanes * kLanes, nk / kLanes * kLanes);
    const auto seen = [&](int64_t j) { return (!kSegments || j >= lo) && j < visible; };
    const int64_t tail = std::max(vec_end, kSegments ? lo : 0);
    float lse;
    if (lse_in != nullptr) {
      lse = lse_in[i];
    } else {
      float m[kLanes];
      for (int64_t k = 0; k < kLanes; ++k) m[k] = kNegInf;
      for (int64_t j0 = vec_begin; j0 < vec_end; j0 += kLanes) {
        for (int64_t k = 0; k < kLanes; ++k) {
          const float v = seen(j0 + k) ? row[j0 + k] : kNegInf;
          m[k] = m[k] > v ? m[k] : v;
        }
      }
      float maxval = kNegInf;
      for (int64_t k = 0; k < kLanes; ++k) maxval = std::max(maxval, m[k]);
      for (int64_t j = tail; j < visible; ++j) maxval = std::max(maxval, row[j]);
      float acc[kLanes] = {};
      for (int64_t j0 = vec_begin; j0 < vec_end; j0 += kLanes) {
        for (int64_t k = 0; k < kLanes; ++k) acc[k] += seen(j0 + k) ? exp_nonpositive(row[j0 + k] - maxval) : 0.0f;
      }
      float sum = 0.0f;
      for (int64_t k = 0; k < kLanes; ++k) sum += acc[k];
      for (int64_t j = tail; j < visible; ++j) sum += exp_nonpositive(row[j] - maxval);
      lse = maxval + std::log(sum);
      lse_out[i] = lse;
    }
    if constexpr (kSegments) std::fill(row, row + vec_begin, 0.0f);
    for (int64_t j0 = vec_begin; j0 < vec_end; j0 += kLanes) {
      for (int64_t k = 0; k < kLanes; ++k) {
        row[j0 + k] = seen(j0 + k) ? exp_nonpositive(std::min(row[j0 + k] - lse, 0.0f)) : 0.0f;
      }
    }
    for (int64_t j = vec_end; j < nk; ++j) row[j] = seen(j) ? exp_nonpositive(std::min(row[j] - lse, 0.0f)) : 0.0f;
  }
}

GPT_MULTIVERSION void block_probabilities(float* S, int64_t nq, int64_t nk, int64_t q0, const float* lse_in,
                                          float* lse_out) {
  block_probabilities_impl<false>(S, nq, nk, q0, nullptr, lse_in, lse_out);
}
GPT_MULTIVERSION void block_probabilities_segments(float* S, int64_t nq, int64_t nk, int64_t q0, const int64_t* first,
                                                   const float* lse_in, float* lse_out) {
  block_probabilities_impl<true>(S, nq, nk, q0, first, lse_in, lse_out);
}

// Packed rows: the first key block row q0 .. q0+nq-1 of a sequence needs (its
// first query's example start: examples are contiguous, so the block's earliest),
// and each query's first visible key relative to it, in `first`.
inline int64_t segment_window(const int32_t* positions, int64_t q0, int64_t nq, int64_t* first) {
  const int64_t k0 = q0 - positions[q0];
  for (int64_t i = 0; i < nq; ++i) first[i] = q0 + i - positions[q0 + i] - k0;
  return k0;
}

// Dropout on a block's attention weights P (nq, nk) — queries q0.., keys k0.. of
// batch row b, head h — in place: P~ = P * mask / (1 - p). With `grad` (the
// backward), first grad <- P * (grad * mask / (1 - p) - D): the softmax's input
// gradient from d(P~) in grad, before P becomes P~ for dV. Weights outside the
// causal or packed window are 0 and stay 0 (their gradient too). The key
// positions of unpacked rows are k0 + j: one vector loop of hashes.
GPT_MULTIVERSION void drop_block(float* P, float* grad, const float* D, int64_t nq, int64_t nk, int64_t b, int64_t h,
                                 int64_t q0, int64_t k0, int64_t T, int64_t NH, const AttentionDropout& drop) {
  const DropoutKey& key = drop.key;
  const uint32_t threshold = dropout_threshold(drop.p);
  const float scale = 1.0f / (1.0f - drop.p);
  const uint64_t seed = drop.site_seed;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t n = b * T + q0 + i;
    const uint64_t base = static_cast<uint64_t>(((dropout_row(key, n) * NH + h) * key.row_stride + dropout_position(key, n)) *
                                                key.row_stride);
    float* p = P + i * nk;
    if (key.positions == nullptr) {
      const uint64_t first = base + static_cast<uint64_t>(k0);
      if (grad != nullptr) {
        float* g = grad + i * nk;
        const float d = D[i];
#pragma omp simd
        for (int64_t j = 0; j < nk; ++j) {
          const float m = dropout_keep(seed, first + static_cast<uint64_t>(j), threshold) ? scale : 0.0f;
          g[j] = p[j] * (g[j] * m - d);
          p[j] *= m;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < nk; ++j)
          p[j] *= dropout_keep(seed, first + static_cast<uint64_t>(j), threshold) ? scale : 0.0f;
      }
      continue;
    }
    for (int64_t j = 0; j < nk; ++j) {
      const uint64_t index = base + static_cast<uint64_t>(key.positions[b * T + k0 + j]);
      const float m = dropout_keep(seed, index, threshold) ? scale : 0.0f;
      if (grad != nullptr) grad[i * nk + j] = p[j] * (grad[i * nk + j] * m - D[i]);
      p[j] *= m;
    }
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                       const int32_t* positions, const AttentionDropout* dropout, int64_t NKV) {
  if (NKV <= 0) NKV = NH;
  const int64_t hs = C / NH, KV = NKV * hs, C3 = C + 2 * KV, group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel
  {
    // Every thread sizes its scratch, tasks or not: a thread that got no task in the
    // first step would otherwise allocate in a later one.
    float* S = thread_scratch(kQueryBlock * T).data();
    int64_t first[kQueryBlock];
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < NH; ++h) {
        const float* Q = qkv + b * T * C3 + h * hs;
        const float* K = qkv + b * T * C3 + C + h / group * hs;  // the head's shared key/value head
        const float* V = K + KV;
        for (int64_t q0 = 0; q0 < T; q0 += kQueryBlock) {
          const int64_t nq = std::min(kQueryBlock, T - q0);
          // Packed rows: the block's keys start at its first query's example.
          const int64_t k0 = positions != nullptr ? segment_window(positions + b * T, q0, nq, first) : 0;
          const int64_t nk = q0 + nq - k0;
          gemm_f32(false, true, nq, nk, hs, scale, Q + q0 * C3, C3, K + k0 * C3, C3, 0.0f, S, nk);
          float* block_lse = lse + (b * NH + h) * T + q0;
          if (positions != nullptr) {
            block_probabilities_segments(S, nq, nk, q0 - k0, first, nullptr, block_lse);
          } else {
            block_probabilities(S, nq, nk, q0, nullptr, block_lse);
          }
          if (dropout != nullptr) drop_block(S, nullptr, nullptr, nq, nk, b, h, q0, k0, T, NH, *dropout);
          gemm_f32(false, false, nq, hs, nk, 1.0f, S, nk, V + k0 * C3, C3, 0.0f, out + (b * T + q0) * C + h * hs, C);
        }
      }
    }
  }
}

namespace {

// The backward of one batch row's query heads h0 .. h1-1, which share one
// key/value head: dQ into dqkv, dK and dV accumulated into dK_base / dV_base
// (row t at t * ld; the key/value head's columns of dqkv, or a scratch of its
// own). P: the calling thread's scratch.
void attention_backward_task(float* dqkv, float* dK_base, float* dV_base, int64_t ld, const float* dout,
                             const float* qkv, const float* out, const float* lse, int64_t b, int64_t h0, int64_t h1,
                             int64_t kvh, int64_t T, int64_t C, int64_t NH, int64_t KV, const int32_t* positions,
                             const AttentionDropout* dropout, float* P) {
  const int64_t hs = C / NH, C3 = C + 2 * KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  int64_t first[kQueryBlock];
  float* dP = P + kQueryBlock * T;
  float* D = dP + kQueryBlock * T;
  for (int64_t q0 = 0; q0 < T; q0 += kQueryBlock) {
    const int64_t nq = std::min(kQueryBlock, T - q0);
    const int64_t k0 = positions != nullptr ? segment_window(positions + b * T, q0, nq, first) : 0;
    const int64_t nk = q0 + nq - k0;
    const float* K = qkv + b * T * C3 + C + kvh * hs + k0 * C3;
    const float* V = K + KV;
    float* dK = dK_base + k0 * ld;
    float* dV = dV_base + k0 * ld;
    // dK and dV accumulate over query blocks and the heads. The first block's
    // first head writes its keys' rows (beta 0); a later block zeroes the rows
    // of the keys it adds first (a packed block's keys before q0 were all
    // written by earlier blocks).
    for (int64_t t = q0 == 0 ? nk : q0 - k0; t < nk; ++t) {
      std::memset(dK + t * ld, 0, sizeof(float) * static_cast<size_t>(hs));
      std::memset(dV + t * ld, 0, sizeof(float) * static_cast<size_t>(hs));
    }
    for (int64_t h = h0; h < h1; ++h) {
      const float beta = q0 == 0 && h == h0 ? 0.0f : 1.0f;
      const float* Q = qkv + b * T * C3 + h * hs;
      float* dQ = dqkv + b * T * C3 + h * hs;
      const float* dO = dout + (b * T + q0) * C + h * hs;
      const float* O = out + (b * T + q0) * C + h * hs;
      gemm_f32(false, true, nq, nk, hs, scale, Q + q0 * C3, C3, K, C3, 0.0f, P, nk);
      const float* block_lse = lse + (b * NH + h) * T + q0;
      if (positions != nullptr) {
        block_probabilities_segments(P, nq, nk, q0 - k0, first, block_lse, nullptr);
      } else {
        block_probabilities(P, nq, nk, q0, block_lse, nullptr);
      }
      // softmax: dS = P * (dP - D), D_i = sum_j P_ij dP_ij = dO_i . O_i
      for (int64_t i = 0; i < nq; ++i) {
        float d = 0.0f;
#pragma omp simd reduction(+ : d)
        for (int64_t k = 0; k < hs; ++k) d += dO[i * C + k] * O[i * C + k];
        D[i] = d;
      }
      if (dropout == nullptr) {
        // out = P V:  dV += P^T dO,  dP = dO V^T
        gemm_f32(true, false, nk, hs, nq, 1.0f, P, nk, dO, C, beta, dV, ld);
        gemm_f32(false, true, nq, nk, hs, 1.0f, dO, C, V, C3, 0.0f, dP, nk);
        for (int64_t i = 0; i < nq; ++i) {
          float* ds = dP + i * nk;
          const float* p = P + i * nk;
#pragma omp simd
          for (int64_t j = 0; j < nk; ++j) ds[j] = p[j] * (ds[j] - D[i]);
        }
      } else {
        // out = P~ V, P~ = P * mask / (1 - p):  d(P~) = dO V^T, dP = d(P~) * mask / (1 - p),
        // dV += P~^T dO. (D is unchanged: dO_i . O_i = sum_j P~_ij d(P~)_ij = sum_j P_ij dP_ij.)
        gemm_f32(false, true, nq, nk, hs, 1.0f, dO, C, V, C3, 0.0f, dP, nk);
        drop_block(P, dP, D, nq, nk, b, h, q0, k0, T, NH, *dropout);
        gemm_f32(true, false, nk, hs, nq, 1.0f, P, nk, dO, C, beta, dV, ld);
      }
      // S = scale Q K^T:  dQ = scale dS K,  dK += scale dS^T Q
      gemm_f32(false, false, nq, hs, nk, scale, dP, nk, K, C3, 0.0f, dQ + q0 * C3, C3);
      gemm_f32(true, false, nk, hs, nq, scale, dP, nk, Q + q0 * C3, C3, beta, dK, ld);
    }
  }
}

}  // namespace

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                        int64_t B, int64_t T, int64_t C, int64_t NH, const int32_t* positions,
                        const AttentionDropout* dropout, int64_t NKV) {
  if (NKV <= 0) NKV = NH;
  const int64_t hs = C / NH, KV = NKV * hs, C3 = C + 2 * KV, group = NH / NKV;
  if (group == 1) {
    // A task is a (batch row, head): its dK and dV go straight into dqkv.
#pragma omp parallel
    {
      float* P = thread_scratch(2 * kQueryBlock * T + kQueryBlock).data();  // every thread: see attention_forward
#pragma omp for collapse(2) schedule(dynamic)
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t h = 0; h < NH; ++h) {
          float* dK = dqkv + b * T * C3 + C + h * hs;
          attention_backward_task(dqkv, dK, dK + KV, C3, dout, qkv, out, lse, b, h, h + 1, h, T, C, NH, KV, positions,
                                  dropout, P);
        }
      }
    }
    return;
  }
  // Grouped-query attention: still one task per (batch row, query head), as
  // many as without groups (one per key/value head would leave threads idle at
  // NKV = 1), each head's dK and dV into a scratch of its own, then each shared
  // head's the sum of its group's, in head order (the same for any thread count).
  thread_local std::vector<float> per_head;
  const auto need = static_cast<size_t>(2 * B * NH * T * hs);
  if (per_head.size() < need) per_head.resize(need);
  float* scratch = per_head.data();
#pragma omp parallel
  {
    float* P = thread_scratch(2 * kQueryBlock * T + kQueryBlock).data();
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < NH; ++h) {
        float* dK = scratch + (b * NH + h) * 2 * T * hs;
        attention_backward_task(dqkv, dK, dK + T * hs, hs, dout, qkv, out, lse, b, h, h + 1, h / group, T, C, NH, KV,
                                positions, dropout, P);
      }
    }
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        float* row = dqkv + (b * T + t) * C3 + C;
        for (int64_t kvh = 0; kvh < NKV; ++kvh) {
          float* dk = row + kvh * hs;
          float* dv = dk + KV;
          const float* k0 = scratch + ((b * NH + kvh * group) * 2 * T + t) * hs;
          std::copy(k0, k0 + hs, dk);
          std::copy(k0 + T * hs, k0 + T * hs + hs, dv);
          for (int64_t g = 1; g < group; ++g) {
            const float* kg = k0 + g * 2 * T * hs;
#pragma omp simd
            for (int64_t i = 0; i < hs; ++i) {
              dk[i] += kg[i];
              dv[i] += kg[T * hs + i];
            }
          }
        }
      }
    }
  }
}

void attention_probabilities(float* att, const float* qkv, const float* lse, int64_t b, int64_t T, int64_t C,
                             int64_t NH, const int32_t* positions, int64_t NKV) {
  if (NKV <= 0) NKV = NH;
  const int64_t hs = C / NH, KV = NKV * hs, C3 = C + 2 * KV, group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  std::vector<int64_t> first;
  if (positions != nullptr) {
    first.resize(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) first[static_cast<size_t>(t)] = t - positions[b * T + t];
  }
  for (int64_t h = 0; h < NH; ++h) {
    const float* Q = qkv + b * T * C3 + h * hs;
    float* A = att + h * T * T;
    const float* K = qkv + b * T * C3 + C + h / group * hs;
    gemm_f32(false, true, T, T, hs, scale, Q, C3, K, C3, 0.0f, A, T);
    if (positions != nullptr) {
      block_probabilities_segments(A, T, T, 0, first.data(), lse + (b * NH + h) * T, nullptr);
    } else {
      block_probabilities(A, T, T, 0, lse + (b * NH + h) * T, nullptr);
    }
  }
}

namespace {

#if defined(__x86_64__)
GPT_AVX512_WARNINGS_OFF

// One query against keys and values read in place (fp32, or float16 widened 16
// per instruction), NQ = hs / 16 vectors of the query and of the output held in
// registers, one horizontal sum per key (at 900 cached positions, 12 layers x 12
// heads of 64, 1 thread: the portable loop 3.3-4.2 ms, an earlier two-pass
// version of this kernel on a float16 cache 1.5-1.6 ms; widening a float16 cache
// into scratch for the portable loop was slower than reading fp32). One pass,
// online softmax 16 keys at a time: a block's 16 scores, their exponentials
// against the running maximum (the sums so far rescaled when it grows), then
// the block's values, so keys and values stream side by side instead of all
// keys, then all values: with the cache out of L3 (12 layers, 2 threads, 1000
// positions) 3.1-3.3 -> 2.7-2.8 ms per token; decoding q8_0 weights after a
// 1000-token prompt +2-4%, fp32 weights unchanged.
template <int NQ, typename T>
GPT_AVX512_TARGET void attend_one_query_avx512(float* out, const float* q, const T* keys, const T* values,
                                               int64_t n_keys, float scale) {
  constexpr int64_t hs = 16 * NQ;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  __m512 qv[NQ], acc[NQ];
  for (int c = 0; c < NQ; ++c) {
    qv[c] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * c), _mm512_set1_ps(scale));
    acc[c] = _mm512_setzero_ps();
  }
  float maxval = kNegInf, sum = 0.0f;
  alignas(64) float p[16];
  for (int64_t t0 = 0; t0 < n_keys; t0 += 16) {
    const int nb = static_cast<int>(std::min<int64_t>(16, n_keys - t0));
    const T* k = keys + t0 * hs;
    float block_max = kNegInf;
    for (int j = 0; j < nb; ++j) {
      __m512 dot = _mm512_mul_ps(qv[0], load16(k + j * hs));
      for (int c = 1; c < NQ; ++c) dot = _mm512_fmadd_ps(qv[c], load16(k + j * hs + 16 * c), dot);
      p[j] = _mm512_reduce_add_ps(dot);
      block_max = std::max(block_max, p[j]);
    }
    const float new_max = std::max(maxval, block_max);
    if (new_max > maxval) {  // rescale what was summed against the old maximum
      const float shrink = maxval == kNegInf ? 0.0f : exp_nonpositive(maxval - new_max);
      sum *= shrink;
      for (int c = 0; c < NQ; ++c) acc[c] = _mm512_mul_ps(acc[c], _mm512_set1_ps(shrink));
      maxval = new_max;
    }
    float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
    for (int j = 0; j < 16; ++j) {
      p[j] = j < nb ? exp_nonpositive(p[j] - maxval) : 0.0f;
      block_sum += p[j];
    }
    sum += block_sum;
    const T* v = values + t0 * hs;
    for (int j = 0; j < nb; ++j) {
      const __m512 a = _mm512_set1_ps(p[j]);
      for (int c = 0; c < NQ; ++c) acc[c] = _mm512_fmadd_ps(a, load16(v + j * hs + 16 * c), acc[c]);
    }
  }
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  for (int c = 0; c < NQ; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], inv));
}

template <typename T>
using AttendInPlace = void (*)(float*, const float*, const T*, const T*, int64_t, float);

// The AVX-512 kernel for this head width, or null (no AVX-512, portable kernels
// forced, or hs not a multiple of 16 up to 128).
template <typename T>
AttendInPlace<T> attend_kernel(int64_t hs) {
  if (!cpu_has_avx512f() || portable_kernels_forced() || hs % 16 != 0) return nullptr;
  switch (hs / 16) {
    case 1: return attend_one_query_avx512<1, T>;
    case 2: return attend_one_query_avx512<2, T>;
    case 3: return attend_one_query_avx512<3, T>;
    case 4: return attend_one_query_avx512<4, T>;
    case 5: return attend_one_query_avx512<5, T>;
    case 6: return attend_one_query_avx512<6, T>;
    case 7: return attend_one_query_avx512<7, T>;
    case 8: return attend_one_query_avx512<8, T>;
    default: return nullptr;
  }
}
GPT_AVX512_WARNINGS_ON
#elif defined(__aarch64__)
// The same one-pass kernel for AArch64's NEON (4 floats a vector; FCVTL widens a
// float16 cache, so on ARM the cache is float16 and read in place too): a
// block's 16 scores, their exponentials against the running maximum, then the
// block's values, the output's hs floats accumulated in registers.

template <int NQ, typename T>
void attend_one_query_neon(float* out, const float* q, const T* keys, const T* values, int64_t n_keys, float scale) {
  constexpr int64_t hs = 16 * NQ;
  constexpr int kVectors = 4 * NQ;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float32x4_t qv[kVectors], acc[kVectors];
  for (int c = 0; c < kVectors; ++c) {
    qv[c] = vmulq_n_f32(vld1q_f32(q + 4 * c), scale);
    acc[c] = vdupq_n_f32(0.0f);
  }
  float maxval = kNegInf, sum = 0.0f;
  alignas(16) float p[16];
  for (int64_t t0 = 0; t0 < n_keys; t0 += 16) {
    const int nb = static_cast<int>(std::min<int64_t>(16, n_keys - t0));
    const T* k = keys + t0 * hs;
    float block_max = kNegInf;
    for (int j = 0; j < nb; ++j) {
      float32x4_t d0 = vmulq_f32(qv[0], load4(k + j * hs)), d1 = vmulq_f32(qv[1], load4(k + j * hs + 4));
      for (int c = 2; c < kVectors; c += 2) {
        d0 = vfmaq_f32(d0, qv[c], load4(k + j * hs + 4 * c));
        d1 = vfmaq_f32(d1, qv[c + 1], load4(k + j * hs + 4 * c + 4));
      }
      p[j] = vaddvq_f32(vaddq_f32(d0, d1));
      block_max = std::max(block_max, p[j]);
    }
    const float new_max = std::max(maxval, block_max);
    if (new_max > maxval) {  // rescale what was summed against the old maximum
      const float shrink = maxval == kNegInf ? 0.0f : exp_nonpositive(maxval - new_max);
      sum *= shrink;
      for (int c = 0; c < kVectors; ++c) acc[c] = vmulq_n_f32(acc[c], shrink);
      maxval = new_max;
    }
    float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
    for (int j = 0; j < 16; ++j) {
      p[j] = j < nb ? exp_nonpositive(p[j] - maxval) : 0.0f;
      block_sum += p[j];
    }
    sum += block_sum;
    const T* v = values + t0 * hs;
    for (int j = 0; j < nb; ++j) {
      for (int c = 0; c < kVectors; ++c) acc[c] = vfmaq_n_f32(acc[c], load4(v + j * hs + 4 * c), p[j]);
    }
  }
  const float inv = 1.0f / sum;
  for (int c = 0; c < kVectors; ++c) vst1q_f32(out + 4 * c, vmulq_n_f32(acc[c], inv));
}

template <typename T>
using AttendInPlace = void (*)(float*, const float*, const T*, const T*, int64_t, float);

// The NEON kernel for this head width, or null (portable kernels forced, or hs
// not a multiple of 16 up to 128).
template <typename T>
AttendInPlace<T> attend_kernel(int64_t hs) {
  if (portable_kernels_forced() || hs % 16 != 0) return nullptr;
  switch (hs / 16) {
    case 1: return attend_one_query_neon<1, T>;
    case 2: return attend_one_query_neon<2, T>;
    case 3: return attend_one_query_neon<3, T>;
    case 4: return attend_one_query_neon<4, T>;
    case 5: return attend_one_query_neon<5, T>;
    case 6: return attend_one_query_neon<6, T>;
    case 7: return attend_one_query_neon<7, T>;
    case 8: return attend_one_query_neon<8, T>;
    default: return nullptr;
  }
}
#else
template <typename T>
using AttendInPlace = void (*)(float*, const float*, const T*, const T*, int64_t, float);
template <typename T>
AttendInPlace<T> attend_kernel(int64_t) { return nullptr; }
#endif

}  // namespace

namespace {

// A prompt's queries go by blocks of kQueryBlock through two GEMMs each, as
// training's forward does; decoding's one query, or a few over a short cache,
// read the cache with the per-query kernels. The GEMMs win once a head has about
// 1,500 query-key pairs to score (measured on GPT-2's shape, 2 threads: from 2
// new tokens at 800 cached positions, 8 at 200, 64 on an empty cache); a
// 1000-token prompt's attention went from 295 to 125 us per token.
bool use_blocked(int64_t p0, int64_t n) { return n >= 2 && n * p0 + n * (n + 1) / 2 >= 1536; }

// Per-thread scratch: the block's scores S (kQueryBlock, capacity) and their rows'
// log-sum-exps, then for a float16 cache the keys and values a task sees, widened
// (the portable per-query loop uses the first `capacity` floats as its score row
// and, over a float16 cache, the same widened keys and values).
int64_t scores_floats(int64_t capacity) { return kQueryBlock * capacity + kQueryBlock; }

template <typename T>
void attention_cached_blocked(float* out, const float* q, int64_t q_stride, const T* k_cache, const T* v_cache,
                              int64_t capacity, int64_t p0, int64_t n, int64_t C, int64_t NH, int64_t NKV,
                              float* scratch, int64_t per_thread, int threads) {
  const int64_t hs = C / NH, blocks = (n + kQueryBlock - 1) / kQueryBlock, group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // Later blocks see more keys: dynamic, as in training's forward.
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(threads)
  for (int64_t h = 0; h < NH; ++h) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      float* S = scratch + static_cast<int64_t>(omp_get_thread_num()) * per_thread;
      float* lse = S + kQueryBlock * capacity;
      const int64_t i0 = blk * kQueryBlock, nq = std::min(kQueryBlock, n - i0), nk = p0 + i0 + nq;
      const float* K;
      const float* V;
      if constexpr (std::is_same_v<T, float>) {
        K = k_cache + h / group * capacity * hs;
        V = v_cache + h / group * capacity * hs;
      } else {
        float* keys = S + scores_floats(capacity);
        float* values = keys + capacity * hs;
        halves_to_floats(k_cache + h / group * capacity * hs, keys, nk * hs);
        halves_to_floats(v_cache + h / group * capacity * hs, values, nk * hs);
        K = keys;
        V = values;
      }
      gemm_f32(false, true, nq, nk, hs, scale, q + i0 * q_stride + h * hs, q_stride, K, hs, 0.0f, S, nk);
      block_probabilities(S, nq, nk, p0 + i0, nullptr, lse);
      gemm_f32(false, false, nq, hs, nk, 1.0f, S, nk, V, hs, 0.0f, out + i0 * C + h * hs, C);
    }
  }
}

}  // namespace

int64_t attention_cached_scratch_floats(int64_t capacity, int64_t hs, bool float16_cache) {
  return scores_floats(capacity) + (float16_cache ? 2 * capacity * hs : 0);
}

bool attention_f16_reads_in_place(int64_t hs) { return attend_kernel<uint16_t>(hs) != nullptr; }

namespace {

// Queries k0 .. k1 - 1 of the NH x n (head, query) pairs; row is this thread's scratch.
GPT_MULTIVERSION void attend_cached_share(float* out, const float* q, int64_t q_stride, const float* k_cache,
                                          const float* v_cache, int64_t capacity, int64_t p0, int64_t n, int64_t C,
                                          int64_t hs, int64_t group, float scale, AttendInPlace<float> fast, float* row,
                                          int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t h = k / n, i = k % n;
    // causal: the query at position p0 + i sees positions 0 .. p0 + i
    const float* K = k_cache + h / group * capacity * hs;
    const float* V = v_cache + h / group * capacity * hs;
    if (fast != nullptr) {
      fast(out + i * C + h * hs, q + i * q_stride + h * hs, K, V, p0 + i + 1, scale);
      continue;
    }
    attend_one_query(out + i * C + h * hs, row, q + i * q_stride + h * hs, K, V, hs, p0 + i + 1, hs, scale);
  }
}

// Without the AVX-512 kernel each query widens the keys and values it sees into
// scratch first (only a few queries come here: see use_blocked).
GPT_MULTIVERSION void attend_cached_f16_share(float* out, const float* q, int64_t q_stride, const uint16_t* k_cache,
                                              const uint16_t* v_cache, int64_t capacity, int64_t p0, int64_t n,
                                              int64_t C, int64_t hs, int64_t group, float scale,
                                              AttendInPlace<uint16_t> in_place, float* row, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t h = k / n, i = k % n;
    const uint16_t* K = k_cache + h / group * capacity * hs;
    const uint16_t* V = v_cache + h / group * capacity * hs;
    if (in_place != nullptr) {
      in_place(out + i * C + h * hs, q + i * q_stride + h * hs, K, V, p0 + i + 1, scale);
      continue;
    }
    float* keys = row + scores_floats(capacity);
    float* values = keys + capacity * hs;
    const int64_t seen = p0 + i + 1;
    halves_to_floats(K, keys, seen * hs);
    halves_to_floats(V, values, seen * hs);
    attend_one_query(out + i * C + h * hs, row, q + i * q_stride + h * hs, keys, values, hs, seen, hs, scale);
  }
}

}  // namespace

void attention_forward_cached(float* out, const float* q, int64_t q_stride, const float* k_cache, const float* v_cache,
                              int64_t capacity, int64_t p0, int64_t n, int64_t C, int64_t NH, float* scratch,
                              int scratch_threads, int64_t NKV) {
  if (NKV <= 0) NKV = NH;
  const int64_t hs = C / NH, per_thread = attention_cached_scratch_floats(capacity, hs, false), group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int threads = std::max(1, std::min(omp_get_max_threads(), scratch_threads));
  if (use_blocked(p0, n)) {
    return attention_cached_blocked(out, q, q_stride, k_cache, v_cache, capacity, p0, n, C, NH, NKV, scratch,
                                    per_thread, threads);
  }
  const AttendInPlace<float> fast = attend_kernel<float>(hs);
#pragma omp parallel num_threads(threads)
  {
    int64_t k0, k1;
    this_thread_share(NH * n, k0, k1);
    float* row = scratch + static_cast<int64_t>(omp_get_thread_num()) * per_thread;
    attend_cached_share(out, q, q_stride, k_cache, v_cache, capacity, p0, n, C, hs, group, scale, fast, row, k0, k1);
  }
}

void attention_forward_cached_f16(float* out, const float* q, int64_t q_stride, const uint16_t* k_cache,
                                  const uint16_t* v_cache, int64_t capacity, int64_t p0, int64_t n, int64_t C,
                                  int64_t NH, float* scratch, int scratch_threads, int64_t NKV) {
  if (NKV <= 0) NKV = NH;
  const int64_t hs = C / NH, per_thread = attention_cached_scratch_floats(capacity, hs, true), group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int threads = std::max(1, std::min(omp_get_max_threads(), scratch_threads));
  if (use_blocked(p0, n)) {
    return attention_cached_blocked(out, q, q_stride, k_cache, v_cache, capacity, p0, n, C, NH, NKV, scratch,
                                    per_thread, threads);
  }
  const AttendInPlace<uint16_t> in_place = attend_kernel<uint16_t>(hs);
#pragma omp parallel num_threads(threads)
  {
    int64_t k0, k1;
    this_thread_share(NH * n, k0, k1);
    float* row = scratch + static_cast<int64_t>(omp_get_thread_num()) * per_thread;
    attend_cached_f16_share(out, q, q_stride, k_cache, v_cache, capacity, p0, n, C, hs, group, scale, in_place, row,
                            k0, k1);
  }
}

}  // namespace gpt
