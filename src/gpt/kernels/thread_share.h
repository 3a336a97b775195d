// Splitting work among the threads of an OpenMP parallel region.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace gpt {

// The contiguous part of [0, n) the calling thread owns (call inside a parallel
// region). Column sums split this way need no reduction across threads, and their
// order depends only on the thread count, not on scheduling. (Out-parameters, not
// a structured binding: clang does not let OpenMP loops use those.)
inline void this_thread_share(int64_t n, int64_t& begin, int64_t& end) {
  const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
  const int64_t chunk = (n + nt - 1) / nt;
  begin = std::min<int64_t>(n, tid * chunk);
  end = std::min<int64_t>(n, begin + chunk);
}

// Runs share(begin, end) once on each thread of a new parallel region, over that
// thread's part of [0, n) (this_thread_share's split; a thread with nothing to do
// is not called). `share` should call a GPT_MULTIVERSION function that holds the
// loop: clang clones a function for each CPU level but not the bodies it
// outlines for OpenMP regions, so a loop written inside the region would run
// baseline x86-64 there (kernels/dispatch.h). With parallel false the calling
// thread does it all, without starting a region (a decoding step's small passes).
template <class Share>
void for_each_thread_share(int64_t n, Share&& share, bool parallel = true) {
  if (!parallel) {
    if (n > 0) share(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    int64_t begin, end;
    this_thread_share(n, begin, end);
    if (begin < end) share(begin, end);
  }
}

// Column sums over rows split among threads (each thread keeps to the rows it
// just wrote or will write next, in its own cache) go through per-thread partial
// sums: thread_partials gives `per_thread` floats for each of up to
// omp_get_max_threads() threads. Call it before the parallel region; the buffer
// belongs to the calling thread and only grows, so a training step allocates
// nothing after its first call. Each thread's partials start on their own
// 64-byte line, so no two threads write to one line.
inline int64_t partials_stride(int64_t per_thread) { return (per_thread + 15) / 16 * 16; }

inline float* thread_partials(int64_t per_thread) {
  thread_local std::vector<float> partials;
  const size_t need = static_cast<size_t>(omp_get_max_threads() * partials_stride(per_thread)) + 16;
  if (partials.size() < need) partials.resize(need);
  const auto address = reinterpret_cast<uintptr_t>(partials.data());
  return partials.data() + (64 - address % 64) % 64 / sizeof(float);
}

// Inside the region: this thread's `per_thread` partial sums, zeroed.
inline float* this_thread_partial(float* partials, int64_t per_thread) {
  float* mine = partials + omp_get_thread_num() * partials_stride(per_thread);
  std::fill(mine, mine + per_thread, 0.0f);
  return mine;
}

// Inside the region, after a barrier: sums[i] += every thread's partial i, added
// in thread order with the columns split among threads; the result depends on
// the thread count, never on scheduling. `first` picks one of several sets of
// sums a thread keeps in its partials (at first .. first + n).
inline void add_partials_in_thread_order(float* sums, const float* partials, int64_t per_thread, int64_t first,
                                         int64_t n) {
  int64_t i0, i1;
  this_thread_share(n, i0, i1);
  const int nt = omp_get_num_threads();
  for (int t = 0; t < nt; ++t) {
    const float* p = partials + t * partials_stride(per_thread) + first;
    for (int64_t i = i0; i < i1; ++i) sums[i] += p[i];
  }
}

}  // namespace gpt
