// Products of a few input rows: a batch of decoding sequences, one row each.
// oneDNN's sgemm packs the weight panels it multiplies, which for 2-32 rows
// costs more than the product; these kernels read W in place, once, and keep
// a tile of outputs for up to 8 rows (AVX-512; 4 with NEON) in registers while
// they stream it.
#include "gpt/kernels/matmul.h"

#include <algorithm>
#include <cmath>

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "gpt/kernels/avx512.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

#if defined(__x86_64__)
GPT_AVX512_WARNINGS_OFF
constexpr int kMaxTileRows = 8;  // input rows per register tile

// ---- W (in, out) in panels: outputs are columns of W ------------------------
// A tile: MR input rows x NV vectors of 16 columns of one panel (the last vector
// masked). Every output is the sum over k in order 0..in-1, one FMA per k, then
// + bias, + residual: the same operations whatever the other rows and the tile.
constexpr int kPanelVectors = kPanelColumns / 16;  // 3: 24 accumulators, 3 loads of W per k
static_assert(kPanelColumns % 16 == 0, "panels are whole vectors wide");
// Lines prefetched ahead in a panel (its rows are contiguous; the hardware
// prefetchers alone leave the first tile waiting on memory).
constexpr int64_t kPanelPrefetchRows = 8;

template <int MR, int NV>
GPT_AVX512_TARGET void tile_panel(float* y, const float* x, const float* P, int64_t width, const float* bias,
                                const float* residual, int64_t in, int64_t out, __mmask16 tail) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();
  }
  const uintptr_t ahead = static_cast<uintptr_t>(kPanelPrefetchRows * width) * sizeof(float);
  for (int64_t k = 0; k < in; ++k) {
    const float* w = P + k * width;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(w + 16 * v) + ahead), _MM_HINT_T0);
    __m512 wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? tail : __mmask16(0xFFFF), w + 16 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 xb = _mm512_set1_ps(x[m * in + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(xb, wv[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? tail : __mmask16(0xFFFF);
      __m512 r = acc[m][v];
      if (bias != nullptr) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, bias + 16 * v));
      if (residual != nullptr) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, residual + m * out + 16 * v));
      _mm512_mask_storeu_ps(y + m * out + 16 * v, mask, r);
    }
  }
}

using TilePanel = void (*)(float*, const float*, const float*, int64_t, const float*, const float*, int64_t, int64_t,
                           __mmask16);

template <int MR>
TilePanel tile_panel_for(int nv) {
  static_assert(kPanelVectors == 3, "one case per vector count");
  switch (nv) {
    case 1: return tile_panel<MR, 1>;
    case 2: return tile_panel<MR, 2>;
    default: return tile_panel<MR, 3>;
  }
}

TilePanel tile_panel_for(int mr, int nv) {
  switch (mr) {
    case 1: return tile_panel_for<1>(nv);
    case 2: return tile_panel_for<2>(nv);
    case 3: return tile_panel_for<3>(nv);
    case 4: return tile_panel_for<4>(nv);
    case 5: return tile_panel_for<5>(nv);
    case 6: return tile_panel_for<6>(nv);
    case 7: return tile_panel_for<7>(nv);
    default: return tile_panel_for<8>(nv);
  }
}

// ---- W (out, in): outputs are dot products with rows of W -------------------
// A tile: MR input rows x NR rows of W, 16-lane partial sums over k (the last
// block masked), then one horizontal sum each.
constexpr int kWRows = 3;

template <int MR, int NR>
GPT_AVX512_TARGET void tile_out_in(float* y, int64_t ldy, const float* x, const float* W, int64_t in) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < in; k += 16) {
    const __mmask16 mask = in - k >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (in - k)) - 1);
    __m512 wv[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {  // the same line of the next tile's rows (measured: 96 -> 135 GFLOP/s at 16 rows)
      _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(W + (r + NR) * in + k)), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) wv[r] = _mm512_maskz_loadu_ps(mask, W + r * in + k);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * in + k);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) y[m * ldy + r] = _mm512_reduce_add_ps(acc[m][r]);
  }
}

using TileOutIn = void (*)(float*, int64_t, const float*, const float*, int64_t);

template <int MR>
TileOutIn tile_out_in_for(int nr) {
  switch (nr) {
    case 1: return tile_out_in<MR, 1>;
    case 2: return tile_out_in<MR, 2>;
    default: return tile_out_in<MR, 3>;
  }
}

TileOutIn tile_out_in_for(int mr, int nr) {
  switch (mr) {
    case 1: return tile_out_in_for<1>(nr);
    case 2: return tile_out_in_for<2>(nr);
    case 3: return tile_out_in_for<3>(nr);
    case 4: return tile_out_in_for<4>(nr);
    case 5: return tile_out_in_for<5>(nr);
    case 6: return tile_out_in_for<6>(nr);
    case 7: return tile_out_in_for<7>(nr);
    default: return tile_out_in_for<8>(nr);
  }
}
GPT_AVX512_WARNINGS_ON
#elif defined(__aarch64__)
// The same kernels in NEON's 32 registers of 4 floats: tiles of up to 4 input
// rows. A panel's columns go 16 at a time (4 vectors, 16 accumulators); the
// columns past its last whole vector (a panel narrower than a multiple of 4) take
// a scalar loop of fused multiply-adds, the very operations a vector lane does,
// so every output is still the sum over k in order, one fused multiply-add per
// k, then + bias, + residual, whatever the tile.
constexpr int kNeonTileRows = 4;

template <int MR, int NV>
void tile_panel_neon(float* y, const float* x, const float* P, int64_t width, const float* bias, const float* residual,
                     int64_t in, int64_t out) {
  float32x4_t acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = vdupq_n_f32(0.0f);
  for (int64_t k = 0; k < in; ++k) {
    const float* w = P + k * width;
    float32x4_t wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = vld1q_f32(w + 4 * v);
    for (int m = 0; m < MR; ++m) {
      const float xk = x[m * in + k];
      for (int v = 0; v < NV; ++v) acc[m][v] = vfmaq_n_f32(acc[m][v], wv[v], xk);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) {
      float32x4_t r = acc[m][v];
      if (bias != nullptr) r = vaddq_f32(r, vld1q_f32(bias + 4 * v));
      if (residual != nullptr) r = vaddq_f32(r, vld1q_f32(residual + m * out + 4 * v));
      vst1q_f32(y + m * out + 4 * v, r);
    }
}

using TilePanelNeon = void (*)(float*, const float*, const float*, int64_t, const float*, const float*, int64_t, int64_t);

template <int MR>
TilePanelNeon tile_panel_neon_for(int nv) {
  switch (nv) {
    case 1: return tile_panel_neon<MR, 1>;
    case 2: return tile_panel_neon<MR, 2>;
    case 3: return tile_panel_neon<MR, 3>;
    default: return tile_panel_neon<MR, 4>;
  }
}
TilePanelNeon tile_panel_neon_for(int mr, int nv) {
  switch (mr) {
    case 1: return tile_panel_neon_for<1>(nv);
    case 2: return tile_panel_neon_for<2>(nv);
    case 3: return tile_panel_neon_for<3>(nv);
    default: return tile_panel_neon_for<4>(nv);
  }
}

// Columns [c0, width) of a panel for rows m < mr, one output at a time.
void panel_columns_scalar(float* y, const float* x, const float* P, int64_t width, int64_t c0, int mr, const float* bias,
                          const float* residual, int64_t in, int64_t out) {
  for (int m = 0; m < mr; ++m)
    for (int64_t j = c0; j < width; ++j) {
      float a = 0.0f;
      for (int64_t k = 0; k < in; ++k) a = std::fma(x[m * in + k], P[k * width + j], a);
      if (bias != nullptr) a += bias[j];
      if (residual != nullptr) a += residual[m * out + j];
      y[m * out + j] = a;
    }
}

// W (out, in): MR input rows x NR rows of W, 4-lane partial sums over k, then
// across lanes, then the last in % 4 products one by one.
constexpr int kWRows = 3;

template <int MR, int NR>
void tile_out_in_neon(float* y, int64_t ldy, const float* x, const float* W, int64_t in) {
  float32x4_t acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = vdupq_n_f32(0.0f);
  int64_t k = 0;
  for (; k + 4 <= in; k += 4) {
    float32x4_t wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = vld1q_f32(W + r * in + k);
    for (int m = 0; m < MR; ++m) {
      const float32x4_t xv = vld1q_f32(x + m * in + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = vfmaq_f32(acc[m][r], xv, wv[r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) {
      float s = vaddvq_f32(acc[m][r]);
      for (int64_t t = k; t < in; ++t) s = std::fma(x[m * in + t], W[r * in + t], s);
      y[m * ldy + r] = s;
    }
}

using TileOutInNeon = void (*)(float*, int64_t, const float*, const float*, int64_t);

template <int MR>
TileOutInNeon tile_out_in_neon_for(int nr) {
  switch (nr) {
    case 1: return tile_out_in_neon<MR, 1>;
    case 2: return tile_out_in_neon<MR, 2>;
    default: return tile_out_in_neon<MR, 3>;
  }
}
TileOutInNeon tile_out_in_neon_for(int mr, int nr) {
  switch (mr) {
    case 1: return tile_out_in_neon_for<1>(nr);
    case 2: return tile_out_in_neon_for<2>(nr);
    case 3: return tile_out_in_neon_for<3>(nr);
    default: return tile_out_in_neon_for<4>(nr);
  }
}
#endif

}  // namespace

bool few_rows_kernels() {
#if defined(__x86_64__)
  return cpu_has_avx512f() && !portable_kernels_forced();
#elif defined(__aarch64__)
  return !portable_kernels_forced();  // every AArch64 CPU has NEON
#else
  return false;
#endif
}

void pack_panels(const float* W, int64_t in, int64_t out, float* panels) {
  for (int64_t j0 = 0; j0 < out; j0 += kPanelColumns) {
    const int64_t width = std::min(kPanelColumns, out - j0);
    float* p = panels + j0 * in;
    for (int64_t k = 0; k < in; ++k) std::copy(W + k * out + j0, W + k * out + j0 + width, p + k * width);
  }
}

void gemm_rows_panels(float* y, const float* x, int64_t M, const float* panels, const float* bias, int64_t in,
                      int64_t out, const float* residual) {
  GPT_CHECK(few_rows_kernels(), "gemm_rows_panels: needs AVX-512 or NEON");
#if defined(__x86_64__)
  // Threads take panels: each is read from memory once, by the first tile of
  // rows, in one run; the other tiles find it in L2 (in x 48 floats: 144 KB for
  // in = 768).
  const int64_t n_panels = (out + kPanelColumns - 1) / kPanelColumns;
#pragma omp parallel for schedule(static) if (n_panels > 1)
  for (int64_t p = 0; p < n_panels; ++p) {
    const int64_t j0 = p * kPanelColumns, width = std::min(kPanelColumns, out - j0);
    const int nv = static_cast<int>((width + 15) / 16);
    const auto tail = static_cast<__mmask16>((1u << (width - 16 * (nv - 1))) - 1);
    for (int64_t m0 = 0; m0 < M; m0 += kMaxTileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxTileRows, M - m0));
      tile_panel_for(mr, nv)(y + m0 * out + j0, x + m0 * in, panels + j0 * in, width,
                             bias != nullptr ? bias + j0 : nullptr,
                             residual != nullptr ? residual + m0 * out + j0 : nullptr, in, out, tail);
    }
  }
#elif defined(__aarch64__)
  const int64_t n_panels = (out + kPanelColumns - 1) / kPanelColumns;
#pragma omp parallel for schedule(static) if (n_panels > 1)
  for (int64_t p = 0; p < n_panels; ++p) {
    const int64_t j0 = p * kPanelColumns, width = std::min(kPanelColumns, out - j0), whole = width / 4 * 4;
    const float* panel = panels + j0 * in;
    for (int64_t m0 = 0; m0 < M; m0 += kNeonTileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kNeonTileRows, M - m0));
      float* yt = y + m0 * out + j0;
      const float* rt = residual != nullptr ? residual + m0 * out + j0 : nullptr;
      for (int64_t c0 = 0; c0 < whole; c0 += 16) {
        const int nv = static_cast<int>(std::min<int64_t>(16, whole - c0) / 4);
        tile_panel_neon_for(mr, nv)(yt + c0, x + m0 * in, panel + c0, width, bias != nullptr ? bias + j0 + c0 : nullptr,
                                    rt != nullptr ? rt + c0 : nullptr, in, out);
      }
      if (whole < width) {
        panel_columns_scalar(yt, x + m0 * in, panel, width, whole, mr, bias != nullptr ? bias + j0 : nullptr, rt, in, out);
      }
    }
  }
#else
  (void)y, (void)x, (void)M, (void)panels, (void)bias, (void)in, (void)out, (void)residual;
#endif
}

void gemm_rows_out_in(float* y, const float* x, int64_t M, const float* W, int64_t in, int64_t out) {
  GPT_CHECK(few_rows_kernels(), "gemm_rows_out_in: needs AVX-512 or NEON");
#if defined(__x86_64__)
  const int64_t blocks = (out + kWRows - 1) / kWRows;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * kWRows;
    const int nr = static_cast<int>(std::min<int64_t>(kWRows, out - r0));
    for (int64_t m0 = 0; m0 < M; m0 += kMaxTileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxTileRows, M - m0));
      tile_out_in_for(mr, nr)(y + m0 * out + r0, out, x + m0 * in, W + r0 * in, in);
    }
  }
#elif defined(__aarch64__)
  const int64_t blocks = (out + kWRows - 1) / kWRows;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * kWRows;
    const int nr = static_cast<int>(std::min<int64_t>(kWRows, out - r0));
    for (int64_t m0 = 0; m0 < M; m0 += kNeonTileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kNeonTileRows, M - m0));
      tile_out_in_neon_for(mr, nr)(y + m0 * out + r0, out, x + m0 * in, W + r0 * in, in);
    }
  }
#else
  (void)y, (void)x, (void)M, (void)W, (void)in, (void)out;
#endif
}

}  // namespace gpt
