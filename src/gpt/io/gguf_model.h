// GPT models as GGUF files of llama.cpp's architecture "gpt2", so what gpt.cpp
// trains runs in llama.cpp (and Ollama), and their GPT-2 files run here.
//
// Tensor names and layouts are llama.cpp's: token_embd, position_embd,
// blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down}, output_norm,
// output; matrices are stored (out, in) with ne = {in, out}, so gpt.cpp's Conv1D
// (in, out) matrices are transposed on the way out and back. As llama.cpp's own
// converter does, the tied LM head is written out as output.weight too.
// Norms, biases and position embeddings stay F32; with a block type (Q8_0, Q4_0)
// a matrix whose rows are not a whole number of blocks is written as F16.
// The tokenizer goes into the metadata as llama.cpp keeps it ("gpt2": byte-level
// BPE, "llama": SentencePiece); gpt.cpp's char and byte tokenizers, and any
// tokenizer.json llama.cpp's keys cannot say whole, are also kept under
// "gpt.tokenizer" so they load back exactly.
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "gpt/io/gguf.h"
#include "gpt/kernels/quantize.h"
#include "gpt/model/gpt.h"
#include "gpt/model/quant_recipe.h"
#include "gpt/model/inference_weights.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

// chat_template: written as tokenizer.chat_template (its Jinja source, llama.cpp's key).
void export_gguf(const GPT& model, const Tokenizer& tokenizer, const std::filesystem::path& out, const QuantRecipe& recipe,
                 const std::string& name = "gpt.cpp model", const ChatTemplate* chat_template = nullptr);

struct GgufModel {
  std::unique_ptr<GPT> fp32;                   // every matrix F32, or dequantized on request
  std::unique_ptr<QuantizedModel> quantized;   // otherwise
  std::unique_ptr<Tokenizer> tokenizer;
  GgmlType type = GgmlType::kF32;              // the type of most matrix bytes
  std::string chat_template;                   // tokenizer.chat_template (Jinja source), if any
  std::string bos_token, eos_token;            // the texts of tokenizer.ggml.bos/eos_token_id, if any
};

// Every failure (not GGUF, damaged, another architecture, missing or misshapen
// tensors) is a one-line gpt::Error.
GgufModel load_gguf_model(const std::filesystem::path& path, bool dequantize = false);

// The tokenizer of a GGUF file's metadata: gpt.cpp's own copy ("gpt.tokenizer")
// where the file has one, else llama.cpp's keys: tokenizer.ggml.model "gpt2"
// (byte-level BPE; tokenizer.ggml.pre "gpt-2", "llama-bpe" or "qwen2") or
// "llama" (SentencePiece: tokens and scores, merged by score, byte fallback).
std::unique_ptr<Tokenizer> read_gguf_tokenizer(const GgufFile& file);
// Writes llama.cpp's tokenizer keys for a tokenizer (padded with unused tokens to
// model_vocab rows), and an exact copy under "gpt.tokenizer" when llama.cpp's
// keys do not say everything and exact_copy is set.
void write_gguf_tokenizer(GgufWriter& writer, const Tokenizer& tokenizer, int64_t model_vocab, bool exact_copy = true);

// True if the file starts with GGUF's magic.
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace gpt
