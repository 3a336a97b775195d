// Data-parallel training across processes. Under `mpirun` every process is a
// rank of MPI_COMM_WORLD; started without it, the same binary runs as a single
// rank and never initialises MPI. All collectives work on float buffers laid out
// like the parameters, so gradients, parameters and optimizer state move as
// whole flat arrays.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace gpt {

class Communicator {
 public:
  // The process-wide communicator: MPI when launched by mpirun (and built with
  // MPI), a single rank otherwise.
  static Communicator& world();
  // One rank that never touches MPI, whatever launched the process: for
  // training inside another program (the C API), where MPI is not ours to start.
  static Communicator& single_process();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  bool distributed() const { return size_ > 1; }

  // In place: every rank ends with the element-wise mean / sum over ranks.
  void allreduce_mean(float* data, size_t n);
  void allreduce_sum(double* data, size_t n);
  // ZeRO-1: each rank receives the mean over ranks of its own slice
  // [slice_begin(r), slice_end(r)) of `data` (written back into `data`).
  void reduce_scatter_mean(float* data, size_t n);
  // Each rank contributes its slice of `data`; afterwards all hold all slices.
  void allgather(float* data, size_t n);
  // Rank 0 receives every rank's slice (of an n-element buffer) into `full`
  // (n floats, used on rank 0 only); `mine` is this rank's slice.
  void gather_slices_to_root(const float* mine, float* full, size_t n);
  void barrier();

  // Overlapping the gradient all-reduce with the backward pass: start a bucket
  // as soon as backward has finished its gradients (a non-blocking sum), let MPI
  // move data while backward goes on (Open MPI progresses non-blocking
  // collectives only inside MPI calls), and at the end wait for every bucket and
  // divide the started ranges by the number of ranks.
  void bucket_allreduce_start(float* data, size_t n);
  void bucket_progress();
  void bucket_allreduce_finish_mean();
  // Ends every rank (MPI_Abort) after printing `message`: no rank is left waiting.
  // Allocates nothing (it may follow an out-of-memory error).
  [[noreturn]] void abort(const char* message);
  [[noreturn]] void abort(const std::string& message) { abort(message.c_str()); }

  // The slice of an n-element buffer owned by `rank` for sharded collectives.
  size_t slice_begin(size_t n, int rank) const { return n * static_cast<size_t>(rank) / static_cast<size_t>(size_); }
  size_t slice_end(size_t n, int rank) const { return slice_begin(n, rank + 1); }

  ~Communicator();

 private:
  Communicator();
  struct SingleProcess {};
  explicit Communicator(SingleProcess);
  void ring_reduce_scatter(float* data, size_t n);
  void ring_allgather(float* data, size_t n);
  void sendrecv(const float* send, size_t send_n, int to, float* recv, size_t recv_n, int from);
  int rank_ = 0, size_ = 1;
  [[maybe_unused]] bool mpi_ = false;  // read only in MPI builds
  std::vector<float> scratch_;  // ring receive buffer, kept between steps
  struct Buckets;
  std::unique_ptr<Buckets> buckets_;  // requests and ranges of the buckets in flight
};

}  // namespace gpt
