// The model shape the speed benchmarks default to: GPT-2 124M.
#pragma once
#include "gpt/model/config.h"

namespace bench {

inline gpt::ModelConfig gpt2_124m_shape() {
  gpt::ModelConfig c;
  c.vocab_size = 50257;
  c.block_size = 1024;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_embd = 768;
  return c;
}

}  // namespace bench
