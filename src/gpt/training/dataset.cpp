#include "gpt/training/dataset.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "gpt/kernels/cross_entropy.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"

namespace gpt {

BatchSource::PackedShape BatchSource::train_batch_packed(uint64_t, int64_t, int64_t, int64_t, int64_t, int32_t*, int32_t*,
                                                         int32_t*, int32_t*, int64_t) const {
  throw Error("this data has no examples to pack (windows of a text fill their rows already)");
}
namespace {

constexpr uint64_t kTrainStream = 0x747261696e;  // "train"
constexpr uint64_t kValStream = 0x76616c;        // "val"

}  // namespace

Dataset::Dataset(std::vector<int32_t> tokens, double val_fraction, int64_t block_size) : owned_(std::move(tokens)) {
  n_ = static_cast<int64_t>(owned_.size());
  split(val_fraction, block_size);
}

Dataset::Dataset(std::shared_ptr<const TokenShard> shard, double val_fraction, int64_t block_size)
    : shard_(std::move(shard)) {
  n_ = shard_->size();
  split(val_fraction, block_size);
}

void Dataset::split(double val_fraction, int64_t block_size) {
  GPT_CHECK(n_ > 0, "the data file is empty");
  block_size_ = block_size;
  GPT_CHECK(val_fraction > 0.0 && val_fraction < 1.0, "validation fraction must be in (0, 1)");
  n_train_ = static_cast<int64_t>(std::floor(static_cast<double>(n_) * (1.0 - val_fraction)));
  const int64_t need = block_size + 1;
  GPT_CHECK(n_train_ >= need && n_ - n_train_ >= need,
        "the data is too short: " + std::to_string(n_) + " tokens give " + std::to_string(n_train_) +
            " for training and " + std::to_string(n_ - n_train_) + " for validation, but each part needs at least " +
            std::to_string(need) + " (block size + 1); use more text or a smaller --block-size");
}

void Dataset::fill_windows(int64_t begin, int64_t end, uint64_t seed, uint64_t stream, int64_t batch_id, int64_t B,
                           int64_t T, int32_t* x, int32_t* y, int64_t first_row) const {
  const auto span = static_cast<uint64_t>(end - begin - T);  // window starts in [begin, end - T)
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t h = hash_counter(seed, stream ^ (static_cast<uint64_t>(batch_id) << 16),
                                    static_cast<uint64_t>(first_row + b));
    const int64_t off = begin + static_cast<int64_t>(h % span);
    for (int64_t t = 0; t < T; ++t) {
      x[b * T + t] = token(off + t);
      y[b * T + t] = token(off + t + 1);
    }
  }
}

int64_t Dataset::train_batch(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                             int32_t* y, int64_t first_row) const {
  // Rows of one step are numbered across micro-batches, so the global batch of a
  // step is the same whatever the micro-batch split.
  fill_windows(0, n_train_, seed, kTrainStream, step, B, T, x, y, micro * B + first_row);
  return T;
}

int64_t Dataset::val_batches(int64_t B) const {
  if (!whole_validation_) return 0;
  // Windows of block_size targets over the validation part's n - 1 predictions.
  const int64_t windows = (n_ - n_train_ - 1 + block_size_ - 1) / block_size_;
  return (windows + B - 1) / B;
}

int64_t Dataset::val_batch(uint64_t seed, int64_t index, int64_t B, int64_t T, int32_t* x, int32_t* y) const {
  if (!whole_validation_) {
    fill_windows(n_train_, n_, seed, kValStream, index, B, T, x, y, 0);
    return T;
  }
  GPT_CHECK(T == block_size_, "whole validation runs windows of the block size");
  for (int64_t b = 0; b < B; ++b) {
    const int64_t start = n_train_ + (index * B + b) * T;  // window w predicts tokens start+1 .. start+T
    for (int64_t t = 0; t < T; ++t) {
      const bool inside = start + t + 1 < n_;
      x[b * T + t] = start + t < n_ ? token(start + t) : 0;
      y[b * T + t] = inside ? token(start + t + 1) : kIgnoreTarget;
    }
  }
  return T;
}

}  // namespace gpt
