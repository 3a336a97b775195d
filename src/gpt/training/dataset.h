// Token data for training: the text is tokenized once and split into a training
// part (first 1 - val_fraction) and a validation part (the rest), as nanoGPT does.
// Batches are windows at random offsets, drawn from a counter-based hash of
// (seed, step, micro-batch, row): the loader's "position" is the step number, so a
// resumed run draws exactly the batches an uninterrupted run would.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "gpt/io/token_shard.h"

namespace gpt {

// What a trainer draws its batches from: a text's token windows (Dataset) or
// whole examples (fine-tuning's chats, finetune/chat_data.h). Batches depend
// only on (seed, step, micro-batch, row), so a resumed run draws what an
// uninterrupted one would.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Tokens in the training and validation parts.
  virtual int64_t train_size() const = 0;
  virtual int64_t val_size() const = 0;
  // x (B,T) inputs and y (B,T) targets (kIgnoreTarget where nothing is to be
  // learned) for one training micro-batch; rows [first_row, first_row + B) of a
  // larger batch. Returns the row length used, at most T (examples shorter than
  // the context fill only as much of each row as the longest needs; x and y are
  // then (B, returned) arrays).
  virtual int64_t train_batch(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                              int32_t* y, int64_t first_row = 0) const = 0;
  // Packed fine-tuning batches: the examples train_batch would put in rows
  // [first_row, first_row + B), laid end to end (first-fit decreasing) in rows
  // of at most T tokens, shaped for the fewest positions to compute (never more
  // than the padded batch's), with positions and examples (each
  // token's place in its example and the example's row in the unpacked batch)
  // as GPT::set_packing takes them. x, y, positions, examples hold B*T each.
  struct PackedShape {
    int64_t rows = 0, T = 0;
  };
  virtual PackedShape train_batch_packed(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                                         int32_t* y, int32_t* positions, int32_t* examples, int64_t first_row) const;
  // The index-th validation batch, the same every time; returns the row length as above.
  virtual int64_t val_batch(uint64_t seed, int64_t index, int64_t B, int64_t T, int32_t* x, int32_t* y) const = 0;
  // Validation batches of B rows that cover the validation part once (0: no limit, windows are drawn).
  virtual int64_t val_batches(int64_t /*B*/) const { return 0; }
  // Evaluate on the whole validation part (val_batches > 0) rather than drawn
  // windows. Whole examples (chats) are always evaluated whole.
  virtual void set_whole_validation(bool /*whole*/) {}
};

class Dataset final : public BatchSource {
 public:
  Dataset(std::vector<int32_t> tokens, double val_fraction, int64_t block_size);
  // Over a memory-mapped token shard: nothing is copied, windows are read in place.
  Dataset(std::shared_ptr<const TokenShard> shard, double val_fraction, int64_t block_size);

  int64_t train_size() const override { return n_train_; }
  int64_t val_size() const override { return n_ - n_train_; }
  // Token i of the whole text (training part first, then validation).
  int32_t token(int64_t i) const { return shard_ ? (*shard_)[i] : owned_[static_cast<size_t>(i)]; }

  // x (B,T) inputs and y (B,T) next-token targets for one training micro-batch.
  // `first_row` lets a process take rows [first_row, first_row + B) of a larger batch.
  int64_t train_batch(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                      int32_t* y, int64_t first_row = 0) const override;
  // The index-th validation batch: the same windows every time, so successive
  // evaluations measure the model, not the luck of the draw. With whole
  // validation, consecutive windows that predict every validation token once
  // (the last one shorter, its missing targets and any rows past the end ignored).
  int64_t val_batch(uint64_t seed, int64_t index, int64_t B, int64_t T, int32_t* x, int32_t* y) const override;
  int64_t val_batches(int64_t B) const override;
  void set_whole_validation(bool whole) override { whole_validation_ = whole; }

 private:
  void split(double val_fraction, int64_t block_size);
  void fill_windows(int64_t begin, int64_t end, uint64_t seed, uint64_t stream, int64_t batch_id, int64_t B,
                    int64_t T, int32_t* x, int32_t* y, int64_t first_row) const;

  std::vector<int32_t> owned_;
  std::shared_ptr<const TokenShard> shard_;
  int64_t n_ = 0, n_train_ = 0, block_size_ = 1;
  bool whole_validation_ = false;
};

}  // namespace gpt
