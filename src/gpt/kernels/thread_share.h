// Splitting work by columns inside an OpenMP parallel region.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

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

}  // namespace gpt
