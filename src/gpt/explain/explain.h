// `gpt explain`: one prediction of a real model, step by step in the order the
// seed text tells it — tokens, embedding and position, each block's attention
// and feed-forward contributions with a logit lens (the prediction the model
// would make if it stopped after that block), and the final distribution.
// One forward pass over the prompt (InferenceSession's trace of one position).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gpt/generation/sampler.h"
#include "gpt/model/inference_weights.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

struct Explanation {
  ModelConfig config;
  std::vector<int32_t> tokens;      // the prompt's
  std::vector<std::string> pieces;  // each token's bytes
  int64_t position = 0;             // the token whose next-token prediction is explained

  std::vector<float> token_vector, position_vector;  // (C) each
  std::vector<TokenProbability> nearest;             // tokens whose embeddings are closest (cosine in `prob`)

  struct Head {
    std::vector<float> weights;  // over positions 0 .. position
  };
  struct Block {
    std::vector<Head> heads;
    float attention_norm = 0, ffn_norm = 0;   // |output| of each sublayer at the position
    float residual_norm = 0;                  // |stream| after the block
    std::vector<TokenProbability> lens;       // logit lens: top tokens after this block
    float lens_entropy = 0;                   // nats
  };
  std::vector<float> embedded;                // token + position, the stream's start
  std::vector<float> final_residual;          // the stream after the last block
  std::vector<std::vector<float>> attention_outputs, ffn_outputs;  // per block (C)
  std::vector<Block> blocks;
  std::vector<float> probabilities;           // the model's next-token distribution (V)
  std::vector<TokenProbability> top;          // its most likely tokens
  float entropy = 0;                          // nats
  std::vector<float> lens_last;               // the last block's logit-lens distribution (V)

  struct SamplingEffect {
    std::string setting;
    int64_t kept = 0;   // tokens that remain candidates
    float top_prob = 0; // the most likely one's probability after it
    float entropy = 0;  // of what remains, nats
  };
  std::vector<SamplingEffect> sampling;
  std::map<int32_t, std::string> piece_of;  // the bytes of every token named above
};

// `position` -1: the last token. gpt::Error for an empty prompt, one longer than
// the context, or a position outside it.
Explanation explain(const InferenceWeights& weights, const Tokenizer& tokenizer, std::string_view prompt,
                    int64_t position = -1, int top = 10);

nlohmann::json explanation_json(const Explanation& e);
// One self-contained HTML page (inline SVG, no scripts). `lang`: "en" or "ko".
std::string explanation_html(const Explanation& e, const std::string& lang = "en");

}  // namespace gpt
