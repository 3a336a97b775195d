// Conversations for supervised fine-tuning. The file is JSON lines in the
// OpenAI / Hugging Face message format, one conversation per line:
//   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
// Each becomes one example through the chat template: the model learns the
// assistant's replies (and their end-of-turn marker), not the prompts. A batch
// holds its examples one per row, padded to the longest (train_batch), or packed
// end to end into rows of at most the context's length, their length chosen per
// batch (train_batch_packed), with attention kept inside each: the same loss and
// gradients, fewer padding tokens.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gpt/model/gpt.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/training/dataset.h"

namespace gpt {

using Conversation = std::vector<ChatMessage>;

// The template's markers as special tokens of the tokenizer, with model rows for
// them started at the mean of the tokenizer's own rows: new rows when the model
// has no room, its padding rows otherwise. Returns the first new id, or -1 when
// the tokenizer had every marker already.
int add_chat_tokens(std::shared_ptr<GPT>& model, std::unique_ptr<Tokenizer>& tokenizer, const ChatTemplate& chat_template);

// Calls fn with each line of a JSON-lines file, blank lines skipped; any error
// (malformed JSON, or a gpt::Error from fn) becomes one naming "file:line".
// gpt::Error if the file holds no line at all.
void for_each_jsonl(const std::filesystem::path& file, const std::function<void(const nlohmann::json&)>& fn,
                    const std::string& what);
// The same over a file's text already read (`file` names it in errors).
void for_each_jsonl_line(const std::string& text, const std::filesystem::path& file,
                         const std::function<void(const nlohmann::json&)>& fn, const std::string& what);

// gpt::Error naming the line for malformed JSON, a missing or empty "messages",
// an unknown role, a content that is not a string, or invalid UTF-8.
std::vector<Conversation> read_chat_jsonl(const std::filesystem::path& file);
std::vector<Conversation> parse_chat_jsonl(const std::string& text, const std::filesystem::path& file);
// One conversation from a JSON value ({"messages": [...]} or the list itself).
Conversation conversation_from_json(const nlohmann::json& j);

struct ChatDataStats {
  int64_t conversations = 0, train = 0, val = 0;
  int64_t truncated = 0;  // longer than the context: cut at block_size + 1 tokens
  int64_t dropped = 0;    // no reply left after the cut
  int64_t reply_tokens = 0;
};

class ChatDataset final : public BatchSource {
 public:
  // Tokenizes every conversation (the tokenizer must know the template's markers)
  // and splits them: a val_fraction of them (at least one) is held out, chosen by
  // a shuffle with `seed`. rows_per_step: the global batch, so that every example
  // is seen once per epoch in a shuffled order before any is seen again.
  ChatDataset(const std::vector<Conversation>& chats, const ChatTemplate& chat_template, const Tokenizer& tokenizer,
              double val_fraction, int64_t block_size, int64_t rows_per_step, uint64_t seed);

  const ChatDataStats& stats() const { return stats_; }
  int64_t train_size() const override { return train_tokens_; }
  int64_t val_size() const override { return val_tokens_; }
  int64_t train_batch(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x, int32_t* y,
                      int64_t first_row = 0) const override;
  PackedShape train_batch_packed(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                                 int32_t* y, int32_t* positions, int32_t* examples, int64_t first_row) const override;
  int64_t val_batch(uint64_t seed, int64_t index, int64_t B, int64_t T, int32_t* x, int32_t* y) const override;
  int64_t val_batches(int64_t B) const override { return (static_cast<int64_t>(val_.size()) + B - 1) / B; }

 private:
  struct Example {
    size_t offset;   // into x_/y_
    int64_t length;  // positions (inputs)
  };
  // Writes examples into rows of a (B, T') batch, T' = the longest; rows past `examples` are all ignored.
  int64_t fill(const std::vector<int64_t>& examples, int64_t B, int64_t T, int32_t* x, int32_t* y) const;
  const std::vector<int32_t>& epoch_order(uint64_t seed, int64_t epoch) const;
  // The training examples of rows [first_row, first_row + B) of a step's batch.
  std::vector<int64_t> pick(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t first_row) const;

  std::vector<int32_t> x_, y_;  // every example's inputs and targets, back to back
  std::vector<Example> examples_;
  std::vector<int64_t> train_, val_;  // example indices
  int64_t train_tokens_ = 0, val_tokens_ = 0, rows_per_step_ = 1;
  ChatDataStats stats_;
  mutable std::mutex order_mutex_;
  mutable int64_t order_epoch_ = -1;
  mutable uint64_t order_seed_ = 0;
  mutable std::vector<int32_t> order_;
};

}  // namespace gpt
