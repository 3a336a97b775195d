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

Communicator::Communicator(SingleProcess) {}

Communicator& Communicator::single_process() {
  static Communicator c{SingleProcess{}};
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
  ring_reduce_scatter(data, n);
  const float inv = 1.0f / static_cast<float>(size_);
  for (size_t i = slice_begin(n, rank_); i < slice_end(n, rank_); ++i) data[i] *= inv;
  ring_allgather(data, n);
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
  ring_reduce_scatter(data, n);
  const float inv = 1.0f / static_cast<float>(size_);
  for (size_t i = slice_begin(n, rank_); i < slice_end(n, rank_); ++i) data[i] *= inv;
#endif
}

void Communicator::allgather([[maybe_unused]] float* data, [[maybe_unused]] size_t n) {
  if (size_ == 1) return;
#ifdef GPT_WITH_MPI
  ring_allgather(data, n);
#endif
}

// Ring collectives over point-to-point messages. Open MPI 4.1's own
// MPI_Allreduce / MPI_Reduce_scatter allocate a temporary buffer of the message's
// size on every call; on this project's virtual machines the fresh pages cost so
// much that a 500 MB all-reduce ran at 0.3 GB/s, while MPI_Sendrecv into a buffer
// that is kept moves 4-6 GB/s (bench/mpi_scaling.sh). Rank r owns chunk
// [slice_begin(n, r), slice_end(n, r)), the same slices ZeRO-1 uses.
void Communicator::ring_reduce_scatter([[maybe_unused]] float* data, [[maybe_unused]] size_t n) {
#ifdef GPT_WITH_MPI
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  size_t largest = 0;
  for (int r = 0; r < size_; ++r) largest = std::max(largest, slice_end(n, r) - slice_begin(n, r));
  if (scratch_.size() < largest) scratch_.resize(largest);
  // Step s sends the partial sum of chunk (rank - s - 1) on and adds the one of
  // chunk (rank - s - 2) coming in; after size - 1 steps chunk `rank` is complete.
  for (int s = 0; s < size_ - 1; ++s) {
    const int send_c = (rank_ - s - 1 + 2 * size_) % size_, recv_c = (rank_ - s - 2 + 2 * size_) % size_;
    const size_t send_b = slice_begin(n, send_c), recv_b = slice_begin(n, recv_c);
    const size_t send_n = slice_end(n, send_c) - send_b, recv_n = slice_end(n, recv_c) - recv_b;
    sendrecv(data + send_b, send_n, next, scratch_.data(), recv_n, prev);
    float* dst = data + recv_b;
    const float* src = scratch_.data();
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < recv_n; ++i) dst[i] += src[i];
  }
#endif
}

void Communicator::ring_allgather([[maybe_unused]] float* data, [[maybe_unused]] size_t n) {
#ifdef GPT_WITH_MPI
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  // Step s passes chunk (rank - s) on and receives chunk (rank - s - 1) in place.
  for (int s = 0; s < size_ - 1; ++s) {
    const int send_c = (rank_ - s + size_) % size_, recv_c = (rank_ - s - 1 + 2 * size_) % size_;
    const size_t send_b = slice_begin(n, send_c), recv_b = slice_begin(n, recv_c);
    sendrecv(data + send_b, slice_end(n, send_c) - send_b, next, data + recv_b, slice_end(n, recv_c) - recv_b, prev);
  }
#endif
}

void Communicator::sendrecv([[maybe_unused]] const float* send, [[maybe_unused]] size_t send_n,
                            [[maybe_unused]] int to, [[maybe_unused]] float* recv, [[maybe_unused]] size_t recv_n,
                            [[maybe_unused]] int from) {
#ifdef GPT_WITH_MPI
  // MPI counts are int: long buffers go in pieces (both sides cut them alike).
  const size_t piece = static_cast<size_t>(1) << 28;
  for (size_t off = 0; off < std::max(send_n, recv_n); off += piece) {
    const int sc = static_cast<int>(off < send_n ? std::min(piece, send_n - off) : 0);
    const int rc = static_cast<int>(off < recv_n ? std::min(piece, recv_n - off) : 0);
    mpi_check(MPI_Sendrecv(send + std::min(off, send_n), sc, MPI_FLOAT, to, 7, recv + std::min(off, recv_n), rc,
                           MPI_FLOAT, from, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
              "sendrecv");
  }
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

void Communicator::abort(const char* message) {
  if (size_ > 1) {
    std::fprintf(stderr, "gpt: error: rank %d: %s\n", rank_, message);
  } else {
    std::fprintf(stderr, "gpt: error: %s\n", message);
  }
  std::fflush(stderr);
#ifdef GPT_WITH_MPI
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::exit(1);
}

}  // namespace gpt
