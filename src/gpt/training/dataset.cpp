#include "gpt/training/dataset.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "gpt/util/error.h"
#include "gpt/util/rng.h"

namespace gpt {
namespace {

constexpr uint64_t kTrainStream = 0x747261696e;  // "train"
constexpr uint64_t kValStream = 0x76616c;        // "val"

void fill_windows(const std::vector<int32_t>& tokens, uint64_t seed, uint64_t stream, int64_t batch_id,
                  int64_t B, int64_t T, int32_t* x, int32_t* y, int64_t first_row) {
  const auto span = static_cast<uint64_t>(tokens.size()) - static_cast<uint64_t>(T);  // offsets [0, span)
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t h = hash_counter(seed, stream ^ (static_cast<uint64_t>(batch_id) << 16),
                                    static_cast<uint64_t>(first_row + b));
    const auto off = static_cast<size_t>(h % span);
    std::copy_n(tokens.begin() + static_cast<ptrdiff_t>(off), T, x + b * T);
    std::copy_n(tokens.begin() + static_cast<ptrdiff_t>(off) + 1, T, y + b * T);
  }
}

}  // namespace

Dataset::Dataset(std::vector<int32_t> tokens, double val_fraction, int64_t block_size) {
  check(!tokens.empty(), "the data file is empty");
  check(val_fraction > 0.0 && val_fraction < 1.0, "validation fraction must be in (0, 1)");
  const auto n = static_cast<int64_t>(tokens.size());
  const auto n_train = static_cast<int64_t>(std::floor(static_cast<double>(n) * (1.0 - val_fraction)));
  const int64_t need = block_size + 1;
  check(n_train >= need && n - n_train >= need,
        "the data is too short: " + std::to_string(n) + " tokens give " + std::to_string(n_train) +
            " for training and " + std::to_string(n - n_train) + " for validation, but each part needs at least " +
            std::to_string(need) + " (block size + 1); use more text or a smaller --block-size");
  train_.assign(tokens.begin(), tokens.begin() + n_train);
  val_.assign(tokens.begin() + n_train, tokens.end());
}

void Dataset::train_batch(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                          int32_t* y, int64_t first_row) const {
  // Rows of one step are numbered across micro-batches, so the global batch of a
  // step is the same whatever the micro-batch split.
  fill_windows(train_, seed, kTrainStream, step, B, T, x, y, micro * B + first_row);
}

void Dataset::val_batch(uint64_t seed, int64_t index, int64_t B, int64_t T, int32_t* x, int32_t* y) const {
  fill_windows(val_, seed, kValStream, index, B, T, x, y, 0);
}

}  // namespace gpt
