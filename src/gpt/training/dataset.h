// Token data for training: the text is tokenized once and split into a training
// part (first 1 - val_fraction) and a validation part (the rest), as nanoGPT does.
// Batches are windows at random offsets, drawn from a counter-based hash of
// (seed, step, micro-batch, row): the loader's "position" is the step number, so a
// resumed run draws exactly the batches an uninterrupted run would.
#pragma once
#include <cstdint>
#include <vector>

namespace gpt {

class Dataset {
 public:
  Dataset(std::vector<int32_t> tokens, double val_fraction, int64_t block_size);

  const std::vector<int32_t>& train() const { return train_; }
  const std::vector<int32_t>& val() const { return val_; }

  // x (B,T) inputs and y (B,T) next-token targets for one training micro-batch.
  // `first_row` lets a process take rows [first_row, first_row + B) of a larger batch.
  void train_batch(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                   int32_t* y, int64_t first_row = 0) const;
  // The index-th validation batch: the same windows every time, so successive
  // evaluations measure the model, not the luck of the draw.
  void val_batch(uint64_t seed, int64_t index, int64_t B, int64_t T, int32_t* x, int32_t* y) const;

 private:
  std::vector<int32_t> train_, val_;
};

}  // namespace gpt
