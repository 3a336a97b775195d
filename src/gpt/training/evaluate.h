// Measuring a model: mean loss on sampled batches (during training) and on a whole
// text (`gpt eval`: loss, perplexity, bits per byte).
#pragma once
#include <cstdint>
#include <string>

#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/training/dataset.h"

namespace gpt {

// Loss summed over the targets of the fixed validation batches i < iters of
// (B,T) with i % ranks == rank, and how many targets counted (add both over
// ranks; their ratio is the mean loss per token, however full each batch is).
struct LossSum {
  double nats = 0;
  double targets = 0;
};
LossSum total_loss_on_batches(GPT& model, const BatchSource& data, uint64_t seed, int64_t iters, int64_t B,
                              int64_t T, int rank = 0, int ranks = 1);

struct TextEvaluation {
  double mean_loss = 0;      // nats per token
  double perplexity = 0;     // exp(mean_loss)
  double bits_per_byte = 0;  // total bits / bytes of the predicted tokens
  int64_t tokens = 0;        // tokens predicted
};

// Every token of `text` after the first is predicted once, in consecutive windows
// of the model's context length (batched `batch` windows at a time).
TextEvaluation evaluate_text(GPT& model, const Tokenizer& tokenizer, const std::string& text, int64_t batch = 8);
// The same windows through the inference path, for weights in any type (F16, Q8_0, ...).
TextEvaluation evaluate_text(const InferenceWeights& weights, const Tokenizer& tokenizer, const std::string& text);

}  // namespace gpt
