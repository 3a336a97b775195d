#include "gpt/distributed/communicator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "gpt/util/error.h"

#ifdef GPT_WITH_MPI
#include <mpi.h>
#endif

namespace gpt {
namespace {

// Set by Open MPI's launcher (and by PMI-based ones such as Slurm's srun).
bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

#ifdef GPT_WITH_MPI
void mpi_check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    std::fprintf(stderr, "gpt: error: MPI %s failed: %s\n", what, text);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

// Collectives on more than INT_MAX elements go in pieces (MPI counts are int).
template <class F>
void in_chunks(size_t n, F&& f) {
  const size_t chunk = static_cast<size_t>(std::numeric_limits<int>::max() / 2);
  for (size_t off = 0; off < n; off += chunk) f(off, static_cast<int>(std::min(chunk, n - off)));
}
#endif

}  // namespace

Communicator& Communicator::world() {
  static Communicator c;
  return c;
}

Communicator::Communicator() {
#ifdef GPT_WITH_MPI
  if (!launched_by_mpi()) return;
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  // Errors come back as codes (checked above) instead of hanging in a handler.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  mpi_ = true;
#else
  if (launched_by_mpi() && std::getenv("OMPI_COMM_WORLD_SIZE") && std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")) > 1) {
    std::fprintf(stderr, "gpt: error: this gpt was built without MPI (cmake -DGPT_WITH_MPI=ON needs libopenmpi-dev)\n");
    std::exit(1);
  }
#endif
}

struct Communicator::Buckets {
#ifdef GPT_WITH_MPI
  std::vector<MPI_Request> requests;
#endif
  std::vector<std::pair<float*, size_t>> ranges;
};

Communicator::~Communicator() {
#ifdef GPT_WITH_MPI
  if (mpi_) MPI_Finalize();
#endif
}

void Communicator::allreduce_mean([[maybe_unused]] float* data, [[maybe_unused]] size_t n) {
  if (size_ == 1) return;
#ifdef GPT_WITH_MPI
  in_chunks(n, [&](size_t off, int count) {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "allreduce");
  });
  const float inv = 1.0f / static_cast<float>(size_);
  for (size_t i = 0; i < n; ++i) data[i] *= inv;
#endif
}

void Communicator::bucket_allreduce_start([[maybe_unused]] float* data, [[maybe_unused]] size_t n) {
  if (size_ == 1 || n == 0) return;
#ifdef GPT_WITH_MPI
  if (!buckets_) buckets_ = std::make_unique<Buckets>();
  in_chunks(n, [&](size_t off, int count) {
    MPI_Request r;
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r), "iallreduce");
    buckets_->requests.push_back(r);
  });
  buckets_->ranges.emplace_back(data, n);
#endif
}

void Communicator::bucket_progress() {
#ifdef GPT_WITH_MPI
  if (size_ == 1 || !buckets_ || buckets_->requests.empty()) return;
  int done = 0;
  mpi_check(MPI_Testall(static_cast<int>(buckets_->requests.size()), buckets_->requests.data(), &done,
                        MPI_STATUSES_IGNORE), "testall");
#endif
}

void Communicator::bucket_allreduce_finish_mean() {
#ifdef GPT_WITH_MPI
  if (size_ == 1 || !buckets_) return;
  mpi_check(MPI_Waitall(static_cast<int>(buckets_->requests.size()), buckets_->requests.data(), MPI_STATUSES_IGNORE),
            "waitall");
  const float inv = 1.0f / static_cast<float>(size_);
  for (auto [data, n] : buckets_->ranges) {
    for (size_t i = 0; i < n; ++i) data[i] *= inv;
  }
  buckets_->requests.clear();
  buckets_->ranges.clear();
#endif
}

void Communicator::allreduce_sum(double* data, size_t n) {
  if (size_ == 1) return;
#ifdef GPT_WITH_MPI
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "allreduce");
#else
  (void)data;
  (void)n;
#endif
}

void Communicator::reduce_scatter_mean([[maybe_unused]] float* data, [[maybe_unused]] size_t n) {
  if (size_ == 1) return;
#ifdef GPT_WITH_MPI
  std::vector<int> counts(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) counts[static_cast<size_t>(r)] = static_cast<int>(slice_end(n, r) - slice_begin(n, r));
  const size_t b = slice_begin(n, rank_);
  scratch_.resize(static_cast<size_t>(counts[static_cast<size_t>(rank_)]));
  mpi_check(MPI_Reduce_scatter(data, scratch_.data(), counts.data(), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
            "reduce_scatter");
  const float inv = 1.0f / static_cast<float>(size_);
  for (size_t i = 0; i < scratch_.size(); ++i) data[b + i] = scratch_[i] * inv;
#endif
}

void Communicator::allgather([[maybe_unused]] float* data, [[maybe_unused]] size_t n) {
  if (size_ == 1) return;
#ifdef GPT_WITH_MPI
  std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    counts[static_cast<size_t>(r)] = static_cast<int>(slice_end(n, r) - slice_begin(n, r));
    displs[static_cast<size_t>(r)] = static_cast<int>(slice_begin(n, r));
  }
  mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displs.data(), MPI_FLOAT,
                           MPI_COMM_WORLD), "allgather");
#endif
}

void Communicator::gather_slices_to_root(const float* mine, float* full, size_t n) {
  if (size_ == 1) {
    std::copy(mine, mine + n, full);
    return;
  }
#ifdef GPT_WITH_MPI
  std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    counts[static_cast<size_t>(r)] = static_cast<int>(slice_end(n, r) - slice_begin(n, r));
    displs[static_cast<size_t>(r)] = static_cast<int>(slice_begin(n, r));
  }
  if (rank_ == 0) std::copy(mine, mine + counts[0], full);
  mpi_check(MPI_Gatherv(rank_ == 0 ? MPI_IN_PLACE : mine, counts[static_cast<size_t>(rank_)], MPI_FLOAT, full,
                        counts.data(), displs.data(), MPI_FLOAT, 0, MPI_COMM_WORLD), "gather");
#endif
}

void Communicator::barrier() {
#ifdef GPT_WITH_MPI
  if (size_ > 1) mpi_check(MPI_Barrier(MPI_COMM_WORLD), "barrier");
#endif
}

void Communicator::abort(const std::string& message) {
  std::fprintf(stderr, "gpt: error: %s%s\n", size_ > 1 ? ("rank " + std::to_string(rank_) + ": ").c_str() : "",
               message.c_str());
  std::fflush(stderr);
#ifdef GPT_WITH_MPI
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::exit(1);
}

}  // namespace gpt
