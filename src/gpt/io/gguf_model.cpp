#include "gpt/io/gguf_model.h"

#include <fstream>
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_map>
#include <set>

#include <nlohmann/json.hpp>

#include "gpt/io/gguf.h"
#include "gpt/kernels/embedding.h"
#include "gpt/tokenizer/bpe.h"
#include "gpt/util/error.h"

namespace gpt {

namespace {

// llama.cpp's token types.
constexpr int64_t kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3, kTokenUserDefined = 4, kTokenUnused = 5,
                  kTokenByte = 6;

std::vector<uint8_t> encode_rows(GgmlType type, const float* rows, int64_t n_rows, int64_t n_cols) {
  const size_t rb = ggml_row_bytes(type, n_cols);
  std::vector<uint8_t> out(rb * static_cast<size_t>(n_rows));
  for (int64_t r = 0; r < n_rows; ++r) quantize_row(type, rows + r * n_cols, out.data() + rb * static_cast<size_t>(r), n_cols);
  return out;
}

// llama.cpp's name for a byte-level pipeline's split ("tokenizer.ggml.pre").
std::optional<std::string> gguf_pre_name(const TextPipeline& p) {
  if (p.is_gpt2()) return "gpt-2";
  const auto patterns = p.split_patterns();
  if (patterns.size() != 1) return std::nullopt;
  if (patterns[0] == kLlama3SplitPattern) return "llama-bpe";
  if (patterns[0] == kQwen2SplitPattern) return "qwen2";
  return std::nullopt;
}

}  // namespace

void write_gguf_tokenizer(GgufWriter& g, const Tokenizer& tok, int64_t model_vocab, bool exact_copy) {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::optional<int64_t> bos, eos, unk;
  std::string model = "gpt2", pre = "gpt-2";
  const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tok);
  if (bpe != nullptr && bpe->pipeline().byte_level()) {
    const auto name = gguf_pre_name(bpe->pipeline());
    GPT_CHECK(name.has_value(), "GGUF export: llama.cpp has no name for this tokenizer's split pattern");
    pre = *name;
    for (int32_t id = 0; id < bpe->vocab_size(); ++id) {
      tokens.push_back(bpe->token_string(id));
      types.push_back(kTokenNormal);
    }
    std::vector<std::string> merges;
    merges.reserve(bpe->merges().size());
    for (const auto& [a, b] : bpe->merges()) merges.push_back(a + " " + b);
    g.set("tokenizer.ggml.merges", GgufValue::string_array(std::move(merges)));
  } else if (bpe != nullptr) {
    // SentencePiece style: llama.cpp's "llama" model merges the adjacent pair
    // whose joined token scores highest, so a token's score is minus the rank of
    // the merge that makes it.
    model = "llama";
    std::vector<double> scores(static_cast<size_t>(bpe->vocab_size()), -1e9);
    for (size_t r = bpe->merges().size(); r-- > 0;) {
      const auto& [a, b] = bpe->merges()[r];
      if (const auto id = bpe->id_of(a + b)) scores[static_cast<size_t>(*id)] = -static_cast<double>(r);
    }
    for (int32_t id = 0; id < bpe->vocab_size(); ++id) {
      const std::string& t = bpe->token_string(id);
      tokens.push_back(t);
      const bool byte = bpe->pipeline().byte_fallback() && sentencepiece_byte(t) >= 0;
      types.push_back(byte ? kTokenByte : kTokenNormal);
      if (byte) scores[static_cast<size_t>(id)] = 0.0;
    }
    if (const auto& u = bpe->pipeline().unk_token()) {
      unk = *bpe->id_of(*u);
      types[static_cast<size_t>(*unk)] = kTokenUnknown;
      scores[static_cast<size_t>(*unk)] = 0.0;
    }
    for (int64_t id = static_cast<int64_t>(tokens.size()); id < model_vocab; ++id) scores.push_back(-1e9);
    g.set("tokenizer.ggml.scores", GgufValue::f32_array(std::move(scores)));
    g.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(bpe->pipeline().prepends_metaspace()));
  } else {
    // Char and byte tokenizers: each token's bytes in GPT-2's byte alphabet (a
    // byte-level BPE without merges); gpt.cpp itself reloads the exact tokenizer.
    const auto& alphabet = gpt2_byte_to_unicode();
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      std::string s;
      for (unsigned char b : tok.token_bytes(id)) s += alphabet[b];
      tokens.push_back(s);
      types.push_back(kTokenNormal);
    }
    g.set("tokenizer.ggml.merges", GgufValue::string_array({}));
  }
  // gpt.cpp reads its own tokenizer back exactly (llama.cpp's keys cannot say
  // everything a tokenizer.json does: normalizers, added tokens' flags).
  if (exact_copy && (bpe == nullptr || !bpe->pipeline().is_gpt2())) {
    g.set("gpt.tokenizer", GgufValue::string(tok.to_json().dump()));
  }
  for (const SpecialToken& s : tok.special_tokens()) {
    if (types[static_cast<size_t>(s.id)] == kTokenNormal) types[static_cast<size_t>(s.id)] = kTokenControl;
    if (s.text == "<|endoftext|>" || s.text == "</s>" || s.text == "<|end_of_text|>") eos = s.id;
  }
  if (tok.bos_id()) bos = *tok.bos_id();
  else if (eos && model == "gpt2") bos = eos;  // GPT-2 marks both ends with <|endoftext|>
  // llama.cpp needs a token for every row of the embedding.
  for (auto id = static_cast<int64_t>(tokens.size()); id < model_vocab; ++id) {
    tokens.push_back("[PAD" + std::to_string(id) + "]");
    types.push_back(kTokenUnused);
  }
  g.set("tokenizer.ggml.model", GgufValue::string(model));
  if (model == "gpt2") g.set("tokenizer.ggml.pre", GgufValue::string(pre));
  g.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  g.set("tokenizer.ggml.token_type", GgufValue::i32_array(std::move(types)));
  if (bos) g.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(*bos)));
  if (eos) g.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(*eos)));
  if (unk) g.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(*unk)));
  g.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(tok.bos_id().has_value()));
}

namespace {

// The tokenizer.json a GGUF file's tokenizer.ggml.* keys stand for: llama.cpp's
// "gpt2" model (byte-level BPE; "pre" names the split) or "llama" model
// (SentencePiece: merges made from the scores, as Hugging Face's converter does).
nlohmann::json tokenizer_json_of_gguf(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  GPT_CHECK(model == "gpt2" || model == "llama", f.path() + ": tokenizer.ggml.model '" + model +
                                                     "' is not supported (gpt.cpp reads 'gpt2' and 'llama')");
  const std::vector<std::string>& tokens = f.get_strings("tokenizer.ggml.tokens");
  std::vector<int64_t> types(tokens.size(), kTokenNormal);
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_ints("tokenizer.ggml.token_type");
    GPT_CHECK(types.size() == tokens.size(), f.path() + ": tokenizer.ggml.token_type and tokens differ in length");
  }
  size_t used = tokens.size();
  while (used > 0 && types[used - 1] == kTokenUnused) --used;  // padding rows
  GPT_CHECK(used > 0, f.path() + ": the tokenizer has no tokens");
  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json added = nlohmann::json::array();
  std::optional<std::string> unk;
  for (size_t id = 0; id < used; ++id) {
    GPT_CHECK(!vocab.contains(tokens[id]), f.path() + ": token '" + tokens[id] + "' appears twice in the vocabulary");
    vocab[tokens[id]] = id;
    if (types[id] == kTokenControl || types[id] == kTokenUserDefined) {
      added.push_back({{"id", id}, {"content", tokens[id]}, {"special", true}});
    }
    if (types[id] == kTokenUnknown) unk = tokens[id];
  }
  const auto token_text = [&](const char* key) -> std::optional<std::string> {
    if (!f.has(key)) return std::nullopt;
    const int64_t id = f.get_int(key);
    GPT_CHECK(id >= 0 && static_cast<size_t>(id) < used, f.path() + ": " + key + " is outside the vocabulary");
    return tokens[static_cast<size_t>(id)];
  };
  const bool add_bos = f.has("tokenizer.ggml.add_bos_token") ? f.get_bool("tokenizer.ggml.add_bos_token") : model == "llama";
  nlohmann::json post = nullptr;
  if (const auto bos = token_text("tokenizer.ggml.bos_token_id"); bos && add_bos) {
    post = {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", *bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  }
  nlohmann::json j = {{"added_tokens", added}, {"post_processor", post}};
  nlohmann::json merges = nlohmann::json::array();
  if (model == "gpt2") {
    const std::string pre = f.has("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
    const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
    const auto split = [&](const char* pattern) {
      return nlohmann::json{{"type", "Sequence"},
                            {"pretokenizers",
                             {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
                              byte_level}}};
    };
    j["normalizer"] = nullptr;
    j["model"] = {{"type", "BPE"}};
    if (pre == "default" || pre == "gpt-2" || pre == "gpt2") {
      j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    } else if (pre == "llama-bpe" || pre == "llama3") {
      j["pre_tokenizer"] = split(kLlama3SplitPattern);
      j["model"]["ignore_merges"] = true;
    } else if (pre == "qwen2") {
      j["pre_tokenizer"] = split(kQwen2SplitPattern);
      j["normalizer"] = {{"type", "NFC"}};
    } else {
      throw Error(f.path() + ": tokenizer.ggml.pre '" + pre +
                  "' is not supported (gpt.cpp reads 'gpt-2', 'llama-bpe' and 'qwen2')");
    }
    j["decoder"] = byte_level;
    for (const std::string& m : f.get_strings("tokenizer.ggml.merges")) {
      const size_t space = m.find(' ');
      GPT_CHECK(space != std::string::npos && space > 0 && space + 1 < m.size(),
                f.path() + ": malformed merge '" + m + "' (expected 'left right')");
      merges.push_back({m.substr(0, space), m.substr(space + 1)});
    }
  } else {
    const std::vector<double>& scores = f.get_floats("tokenizer.ggml.scores");
    GPT_CHECK(scores.size() == tokens.size(), f.path() + ": tokenizer.ggml.scores and tokens differ in length");
    bool byte_fallback = false;
    for (size_t id = 0; id < used; ++id) byte_fallback |= types[id] == kTokenByte;
    // Every split of a normal token into two tokens is a merge, ranked by the
    // joined token's score (highest first), then by the pieces' ids.
    struct Merge {
      double score;
      size_t id, left, right;
      size_t cut;
    };
    std::vector<Merge> found;
    std::unordered_map<std::string, size_t> id_of;
    for (size_t id = 0; id < used; ++id) {
      if (types[id] == kTokenNormal || types[id] == kTokenUserDefined) id_of.emplace(tokens[id], id);
    }
    for (size_t id = 0; id < used; ++id) {
      if (types[id] != kTokenNormal) continue;
      const std::string& t = tokens[id];
      for (size_t cut = 1; cut < t.size(); ++cut) {
        if ((static_cast<unsigned char>(t[cut]) & 0xC0) == 0x80) continue;  // inside a character
        auto l = id_of.find(t.substr(0, cut)), r = id_of.find(t.substr(cut));
        if (l != id_of.end() && r != id_of.end()) found.push_back({scores[id], id, l->second, r->second, cut});
      }
    }
    std::sort(found.begin(), found.end(), [](const Merge& a, const Merge& b) {
      if (a.score != b.score) return a.score > b.score;
      if (a.id != b.id) return a.id < b.id;
      if (a.left != b.left) return a.left < b.left;
      return a.right < b.right;
    });
    for (const Merge& m : found) merges.push_back({tokens[m.id].substr(0, m.cut), tokens[m.id].substr(m.cut)});
    const bool space_prefix = !f.has("tokenizer.ggml.add_space_prefix") || f.get_bool("tokenizer.ggml.add_space_prefix");
    const char* metaspace = kMetaspace;
    nlohmann::json norm = nlohmann::json::array();
    if (space_prefix) norm.push_back({{"type", "Prepend"}, {"prepend", metaspace}});
    norm.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", metaspace}});
    j["normalizer"] = {{"type", "Sequence"}, {"normalizers", norm}};
    j["pre_tokenizer"] = nullptr;
    nlohmann::json decoders = {{{"type", "Replace"}, {"pattern", {{"String", metaspace}}}, {"content", " "}},
                               {{"type", "ByteFallback"}},
                               {{"type", "Fuse"}}};
    if (space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
    j["model"] = {{"type", "BPE"}, {"byte_fallback", byte_fallback}, {"fuse_unk", true}};
    if (unk) j["model"]["unk_token"] = *unk;
  }
  j["model"]["vocab"] = std::move(vocab);
  j["model"]["merges"] = std::move(merges);
  return j;
}

}  // namespace

std::unique_ptr<Tokenizer> read_gguf_tokenizer(const GgufFile& f) {
  if (f.has("gpt.tokenizer")) {
    try {
      return tokenizer_from_json(nlohmann::json::parse(f.get_string("gpt.tokenizer")));
    } catch (const nlohmann::json::exception& e) {
      throw Error(f.path() + ": gpt.tokenizer is not valid JSON: " + e.what());
    }
  }
  const nlohmann::json j = tokenizer_json_of_gguf(f);
  try {
    return BpeTokenizer::from_hf_json(j);
  } catch (const Error& e) {
    throw Error(f.path() + ": " + e.what());
  }
}

namespace {

std::string shape_string(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

const GgufTensor& need(const GgufFile& f, const std::string& name, const std::vector<int64_t>& ne) {
  const GgufTensor* t = f.find(name);
  GPT_CHECK(t != nullptr, f.path() + ": tensor '" + name + "' is missing");
  GPT_CHECK(t->ne == ne, f.path() + ": tensor '" + name + "' has shape " + shape_string(t->ne) + ", expected " +
                         shape_string(ne));
  return *t;
}

std::vector<float> to_floats(const GgufTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const int64_t row = t.ne[0], rows = t.numel() / row;
  const size_t rb = ggml_row_bytes(t.type, row);
  for (int64_t r = 0; r < rows; ++r) dequantize_row(t.type, t.data + rb * static_cast<size_t>(r), out.data() + r * row, row);
  return out;
}

// (out, in) rows -> Conv1D (in, out).
void transpose_into(const std::vector<float>& rows, int64_t out, int64_t in, float* dst) {
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t c = 0; c < in; ++c) dst[c * out + r] = rows[static_cast<size_t>(r * in + c)];
  }
}

// A dimension from the metadata, within (0, 2^24).
int gguf_dim(const GgufFile& f, const std::string& key) {
  const int64_t v = f.get_int(key);
  GPT_CHECK(v > 0 && v < (int64_t(1) << 24), f.path() + ": " + key + " = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

// token_embd.weight, C wide (its rows: the vocabulary), and output.weight if the
// file has one; llama.cpp's converter writes a tied head out as a copy, so a
// copy means tied.
struct Embedding {
  const GgufTensor* embd;
  const GgufTensor* head;
  int vocab;
  bool tied;
};
Embedding token_embedding(const GgufFile& f, int64_t C) {
  const GgufTensor* embd = f.find("token_embd.weight");
  GPT_CHECK(embd != nullptr, f.path() + ": tensor 'token_embd.weight' is missing");
  GPT_CHECK(embd->ne.size() == 2 && embd->ne[0] == C && embd->ne[1] < (int64_t(1) << 24),
            f.path() + ": tensor 'token_embd.weight' has shape " + shape_string(embd->ne) + ", expected [" +
                std::to_string(C) + ", vocab]");
  const GgufTensor* head = f.find("output.weight");
  const bool tied = head == nullptr || (head->type == embd->type && head->ne == embd->ne &&
                                        std::equal(head->data, head->data + head->bytes, embd->data));
  return {embd, head, static_cast<int>(embd->ne[1]), tied};
}

// The tokenizer and chat template of the metadata.
void read_text_side(GgufModel& out, const GgufFile& f, int64_t vocab) {
  out.tokenizer = read_gguf_tokenizer(f);
  if (f.has("tokenizer.chat_template")) out.chat_template = f.get_string("tokenizer.chat_template");
  for (auto [key, text] : {std::pair{"tokenizer.ggml.bos_token_id", &out.bos_token}, {"tokenizer.ggml.eos_token_id", &out.eos_token}}) {
    if (!f.has(key)) continue;
    const int64_t id = f.get_int(key);
    if (id >= 0 && id < out.tokenizer->vocab_size()) *text = out.tokenizer->token_bytes(static_cast<int32_t>(id));
  }
  GPT_CHECK(out.tokenizer->vocab_size() <= vocab, f.path() + ": the tokenizer has more tokens than token_embd has rows");
}

// Every tensor the file must hold, with its shape (anything else is an error),
// each checked for damaged block scales. Sets out.type to the type of most
// matrix bytes; returns whether every matrix is F32.
using ExpectedTensors = std::vector<std::pair<std::string, std::vector<int64_t>>>;
bool check_tensors(const GgufFile& f, const ExpectedTensors& expected, const std::string& arch, int n_layer,
                   GgufModel& out) {
  std::map<GgmlType, size_t> bytes_by_type;
  std::set<std::string> expected_names;
  for (const auto& [name, ne] : expected) {
    const GgufTensor& t = need(f, name, ne);
    if (ne.size() == 2) bytes_by_type[t.type] += t.bytes;
    const int64_t bad = first_invalid_block(t.type, t.data, t.bytes);
    GPT_CHECK(bad < 0, f.path() + ": tensor '" + t.name + "' (" + ggml_type_name(t.type) + ") block " +
                           std::to_string(bad) + " has a scale that is not a finite number: the file is damaged");
    expected_names.insert(name);
  }
  for (const GgufTensor& t : f.tensors()) {
    GPT_CHECK(expected_names.count(t.name) != 0, f.path() + ": unexpected tensor '" + t.name + "' for a " + arch +
                                                     " model of " + std::to_string(n_layer) + " layers");
  }
  out.type = GgmlType::kF32;
  size_t most = 0;
  for (const auto& [type, bytes] : bytes_by_type) {
    if (bytes > most) most = bytes, out.type = type;
  }
  return bytes_by_type.size() == 1 && bytes_by_type.count(GgmlType::kF32) == 1;
}

// An embedding-shaped table kept as stored: F32 as floats, else compact rows.
void keep_table(QuantizedModel& q, const GgufTensor& t, const float*& f32, QuantizedMatrix& packed) {
  if (t.type == GgmlType::kF32) {
    q.vectors.push_back(to_floats(t));
    f32 = q.vectors.back().data();
  } else {
    q.matrices.push_back(QuantizedStorage::wrap(t.type, std::vector<uint8_t>(t.data, t.data + t.bytes), t.ne[1], t.ne[0]));
    packed = q.matrices.back().matrix;
  }
}

// The token embedding and the LM head (the embedding itself when tied) of a
// compact model.
void keep_embedding_and_head(QuantizedModel& q, const Embedding& e, bool tied, int64_t C, int64_t V) {
  InferenceWeights& w = q.weights;
  keep_table(q, *e.embd, w.wte_f32, w.wte_packed);
  const float* head_f32 = w.wte_f32;
  QuantizedMatrix head_packed = w.wte_packed;
  if (!tied) {
    head_f32 = nullptr;
    head_packed = {};
    keep_table(q, *e.head, head_f32, head_packed);
  }
  w.lm_head = {C, V, head_f32, true, head_packed, nullptr};
}

// llama.cpp's GGUF keeps Llama's q and k rows as interleaved pairs (its rotary
// kernel rotates channels 2i and 2i+1), Hugging Face's as halves (i and
// i + hs/2): per head, GGUF row 2i + j is Hugging Face row j * hs/2 + i
// (convert_hf_to_gguf.py's permute). Calls move(gguf_row, hf_row) for every row.
template <class Move>
void for_each_rope_row(int64_t heads, int64_t hs, Move move) {
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hs / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) move(h * hs + 2 * i + j, h * hs + j * hs / 2 + i);
}

// RoPE scaling in llama.cpp's keys: rope.scaling.type (linear, yarn), factor,
// original_context_length, and for yarn the ramp's rotations (yarn_beta_fast,
// yarn_beta_slow) and attn_factor. llama.cpp multiplies yarn's rotations by
// attn_factor * (1 + 0.1 ln factor): Hugging Face's default attention factor
// when attn_factor is 1, so an explicit one is written relative to that.
double yarn_default_attention(double factor) { return 0.1 * std::log(factor) + 1.0; }

void write_rope_scaling(GgufWriter& g, const std::string& k, const RopeScaling& s) {
  if (s.type == RopeScaling::Type::kNone) return;
  g.set(k + "rope.scaling.type", GgufValue::string(to_string(s.type)));
  g.set(k + "rope.scaling.factor", GgufValue::f32(s.factor));
  g.set(k + "rope.scaling.original_context_length", GgufValue::u32(static_cast<uint32_t>(s.original_context)));
  if (s.type != RopeScaling::Type::kYarn) return;
  g.set(k + "rope.scaling.yarn_beta_fast", GgufValue::f32(s.beta_fast));
  g.set(k + "rope.scaling.yarn_beta_slow", GgufValue::f32(s.beta_slow));
  if (s.attention_factor > 0) {
    g.set(k + "rope.scaling.attn_factor",
          GgufValue::f32(static_cast<float>(s.attention_factor / yarn_default_attention(s.factor))));
  }
}

RopeScaling read_rope_scaling(const GgufFile& f, const std::string& k, int context) {
  RopeScaling s;
  const std::string& p = f.path();
  if (!f.has(k + "rope.scaling.type")) {
    // Older files give only a linear factor.
    if (f.has(k + "rope.scale_linear") && f.get_float(k + "rope.scale_linear") != 1.0) {
      s.type = RopeScaling::Type::kLinear;
      s.factor = static_cast<float>(f.get_float(k + "rope.scale_linear"));
      s.original_context = context;
    }
    return s;
  }
  const std::string type = f.get_string(k + "rope.scaling.type");
  GPT_CHECK(type == "none" || type == "linear" || type == "yarn",
            p + ": rope scaling '" + type + "' is not supported (gpt.cpp reads none, linear and yarn)");
  if (type == "none") return s;
  s.type = parse_rope_scaling(type);
  GPT_CHECK(f.has(k + "rope.scaling.factor"), p + ": rope scaling " + type + " without rope.scaling.factor");
  s.factor = static_cast<float>(f.get_float(k + "rope.scaling.factor"));
  GPT_CHECK(std::isfinite(s.factor) && s.factor >= 1.0f, p + ": rope.scaling.factor must be at least 1");
  s.original_context = f.has(k + "rope.scaling.original_context_length")
                           ? gguf_dim(f, k + "rope.scaling.original_context_length")
                           : context;
  const auto number = [&](const char* key, float fallback) {
    return f.has(k + key) ? static_cast<float>(f.get_float(k + key)) : fallback;
  };
  if (s.type == RopeScaling::Type::kYarn) {
    s.beta_fast = number("rope.scaling.yarn_beta_fast", 32.0f);
    s.beta_slow = number("rope.scaling.yarn_beta_slow", 1.0f);
    const float attn = number("rope.scaling.attn_factor", 1.0f);
    GPT_CHECK(std::isfinite(attn) && attn > 0, p + ": rope.scaling.attn_factor must be positive");
    if (attn != 1.0f) s.attention_factor = static_cast<float>(attn * yarn_default_attention(s.factor));
  } else {
    GPT_CHECK(number("rope.scaling.attn_factor", 1.0f) == 1.0f,
              p + ": rope.scaling.attn_factor with linear scaling is not supported");
  }
  return s;
}

}  // namespace

bool is_gguf_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && magic[0] == 'G' && magic[1] == 'G' && magic[2] == 'U' && magic[3] == 'F';
}

void export_gguf(const GPT& model, const Tokenizer& tokenizer, const std::filesystem::path& out, const QuantRecipe& recipe,
                 const std::string& name, const ChatTemplate* chat_template) {
  const ModelConfig& c = model.config();
  const ConstModelWeights& w = model.weights();
  const int64_t C = c.n_embd, V = c.vocab_size, T = c.block_size;
  GPT_CHECK(tokenizer.vocab_size() <= V, "the tokenizer has more tokens than the model's vocabulary");
  GgufWriter g;
  // Qwen2 (q/k/v biases) is its own architecture in llama.cpp.
  const std::string arch = !c.llama() ? "gpt2" : c.attention_bias ? "qwen2" : "llama";
  g.set("general.architecture", GgufValue::string(arch));
  g.set("general.name", GgufValue::string(name));
  g.set("general.file_type", GgufValue::u32(recipe.file_type()));
  if (ggml_block_size(recipe.base()) > 1) g.set("general.quantization_version", GgufValue::u32(2));
  write_gguf_tokenizer(g, tokenizer, V);
  if (chat_template != nullptr) {
    g.set("tokenizer.chat_template", GgufValue::string(chat_template->jinja_source()));
    // llama.cpp ends a chat reply at the end-of-turn token.
    if (auto eot = tokenizer.special_token_id(chat_template->end_of_turn())) {
      g.set("tokenizer.ggml.eot_token_id", GgufValue::u32(static_cast<uint32_t>(*eot)));
    }
  }
  auto vec = [&](const std::string& n, const float* x, int64_t len) {
    g.add_tensor(n, {len}, GgmlType::kF32, encode_rows(GgmlType::kF32, x, 1, len));
  };
  auto rows = [&](const std::string& n, const float* x, int64_t n_out, int64_t in, TensorRole role, int64_t layer) {
    const GgmlType t = recipe.type_for(role, layer, c.n_layer, in);
    g.add_tensor(n, {in, n_out}, t, encode_rows(t, x, n_out, in));
  };
  if (c.llama()) {
    // llama.cpp's llama architecture: separate q, k, v (q and k rows permuted to
    // its interleaved rotary pairs) and gate, up; nn.Linear's rows as they are.
    // Its qwen2 rotates halves as Hugging Face does: rows stay, biases added.
    const int64_t NH = c.n_head, NKV = c.kv_heads(), hs = c.head_size(), KV = c.kv_dim(), F = c.mlp_hidden();
    const bool qwen2 = arch == "qwen2";
    const std::string k = arch + ".";
    g.set(k + "context_length", GgufValue::u32(static_cast<uint32_t>(T)));
    g.set(k + "embedding_length", GgufValue::u32(static_cast<uint32_t>(C)));
    g.set(k + "feed_forward_length", GgufValue::u32(static_cast<uint32_t>(F)));
    g.set(k + "block_count", GgufValue::u32(static_cast<uint32_t>(c.n_layer)));
    g.set(k + "attention.head_count", GgufValue::u32(static_cast<uint32_t>(NH)));
    g.set(k + "attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(NKV)));
    g.set(k + "rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(hs)));
    g.set(k + "rope.freq_base", GgufValue::f32(c.rope_theta));
    write_rope_scaling(g, k, c.rope_scaling);
    g.set(k + "attention.layer_norm_rms_epsilon", GgufValue::f32(c.layer_norm_epsilon));
    g.set(k + "vocab_size", GgufValue::u32(static_cast<uint32_t>(V)));
    std::vector<float> permuted;
    auto rope_rows = [&](const std::string& n, const float* x, int64_t heads, TensorRole role, int64_t layer) {
      if (qwen2) {
        rows(n, x, heads * hs, C, role, layer);
        return;
      }
      permuted.resize(static_cast<size_t>(heads * hs * C));
      for_each_rope_row(heads, hs, [&](int64_t gguf, int64_t hf) {
        std::copy(x + hf * C, x + (hf + 1) * C, permuted.begin() + gguf * C);
      });
      rows(n, permuted.data(), heads * hs, C, role, layer);
    };
    rows("token_embd.weight", w.wte, V, C, TensorRole::kTokenEmbedding, 0);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const ConstLayerWeights& L = w.layers[static_cast<size_t>(l)];
      const std::string p = "blk." + std::to_string(l) + ".";
      const float* qkv = L.attn_c_attn_weight;  // q (C rows), k (KV rows), v (KV rows), each of C
      vec(p + "attn_norm.weight", L.ln_1_weight, C);
      rope_rows(p + "attn_q.weight", qkv, NH, TensorRole::kAttentionQK, l);
      rope_rows(p + "attn_k.weight", qkv + C * C, NKV, TensorRole::kAttentionQK, l);
      rows(p + "attn_v.weight", qkv + (C + KV) * C, KV, C, TensorRole::kAttentionV, l);
      if (qwen2) {
        vec(p + "attn_q.bias", L.attn_c_attn_bias, C);
        vec(p + "attn_k.bias", L.attn_c_attn_bias + C, KV);
        vec(p + "attn_v.bias", L.attn_c_attn_bias + C + KV, KV);
      }
      rows(p + "attn_output.weight", L.attn_c_proj_weight, C, C, TensorRole::kAttentionOutput, l);
      vec(p + "ffn_norm.weight", L.ln_2_weight, C);
      rows(p + "ffn_gate.weight", L.mlp_c_fc_weight, F, C, TensorRole::kFfnUp, l);
      rows(p + "ffn_up.weight", L.mlp_c_fc_weight + F * C, F, C, TensorRole::kFfnUp, l);
      rows(p + "ffn_down.weight", L.mlp_c_proj_weight, C, F, TensorRole::kFfnDown, l);
    }
    vec("output_norm.weight", w.ln_f_weight, C);
    // A tied head is the embedding: llama.cpp uses token_embd when output is absent.
    if (!c.tie_word_embeddings) rows("output.weight", w.lm_head, V, C, TensorRole::kOutput, 0);
    g.write(out);
    return;
  }
  g.set("gpt2.context_length", GgufValue::u32(static_cast<uint32_t>(T)));
  g.set("gpt2.embedding_length", GgufValue::u32(static_cast<uint32_t>(C)));
  g.set("gpt2.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(4 * C)));
  g.set("gpt2.block_count", GgufValue::u32(static_cast<uint32_t>(c.n_layer)));
  g.set("gpt2.attention.head_count", GgufValue::u32(static_cast<uint32_t>(c.n_head)));
  g.set("gpt2.attention.layer_norm_epsilon", GgufValue::f32(c.layer_norm_epsilon));
  std::vector<float> tmp;
  auto conv1d = [&](const std::string& n, const float* x, int64_t in, int64_t n_out, TensorRole role, int64_t layer) {
    tmp.resize(static_cast<size_t>(in * n_out));
    for (int64_t r = 0; r < n_out; ++r) {
      for (int64_t k = 0; k < in; ++k) tmp[static_cast<size_t>(r * in + k)] = x[k * n_out + r];
    }
    rows(n, tmp.data(), n_out, in, role, layer);
  };

  rows("token_embd.weight", w.wte, V, C, TensorRole::kTokenEmbedding, 0);
  if (w.wpe != nullptr) {
    g.add_tensor("position_embd.weight", {C, T}, GgmlType::kF32, encode_rows(GgmlType::kF32, w.wpe, T, C));
  } else {  // the sinusoid, written out as a table (llama.cpp's gpt2 adds a learned table)
    std::vector<float> table(static_cast<size_t>(T * C));
    sinusoidal_positions(table.data(), T, C);
    g.add_tensor("position_embd.weight", {C, T}, GgmlType::kF32, encode_rows(GgmlType::kF32, table.data(), T, C));
  }
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const ConstLayerWeights& L = w.layers[static_cast<size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    vec(p + "attn_norm.weight", L.ln_1_weight, C);
    vec(p + "attn_norm.bias", L.ln_1_bias, C);
    conv1d(p + "attn_qkv.weight", L.attn_c_attn_weight, C, 3 * C, TensorRole::kAttentionQkv, l);
    vec(p + "attn_qkv.bias", L.attn_c_attn_bias, 3 * C);
    conv1d(p + "attn_output.weight", L.attn_c_proj_weight, C, C, TensorRole::kAttentionOutput, l);
    vec(p + "attn_output.bias", L.attn_c_proj_bias, C);
    vec(p + "ffn_norm.weight", L.ln_2_weight, C);
    vec(p + "ffn_norm.bias", L.ln_2_bias, C);
    conv1d(p + "ffn_up.weight", L.mlp_c_fc_weight, C, 4 * C, TensorRole::kFfnUp, l);
    vec(p + "ffn_up.bias", L.mlp_c_fc_bias, 4 * C);
    conv1d(p + "ffn_down.weight", L.mlp_c_proj_weight, 4 * C, C, TensorRole::kFfnDown, l);
    vec(p + "ffn_down.bias", L.mlp_c_proj_bias, C);
  }
  vec("output_norm.weight", w.ln_f_weight, C);
  vec("output_norm.bias", w.ln_f_bias, C);
  rows("output.weight", w.lm_head, V, C, TensorRole::kOutput, 0);
  g.write(out);
}

namespace {
GgufModel load_llama(const GgufFile& f, bool dequantize);
}  // namespace

GgufModel load_gguf_model(const std::filesystem::path& path, bool dequantize) {
  const GgufFile f = GgufFile::load(path);
  const std::string& p = f.path();
  const std::string arch = f.get_string("general.architecture");
  if (arch == "llama" || arch == "qwen2") return load_llama(f, dequantize);
  GPT_CHECK(arch == "gpt2", p + ": architecture '" + arch + "' is not supported (gpt.cpp runs 'gpt2', 'llama' and 'qwen2' models)");

  ModelConfig c;
  c.n_embd = gguf_dim(f, "gpt2.embedding_length");
  c.n_layer = gguf_dim(f, "gpt2.block_count");
  c.n_head = gguf_dim(f, "gpt2.attention.head_count");
  c.block_size = gguf_dim(f, "gpt2.context_length");
  if (f.has("gpt2.feed_forward_length")) {
    GPT_CHECK(f.get_int("gpt2.feed_forward_length") == 4LL * c.n_embd,
          p + ": only feed_forward_length = 4 * embedding_length is supported");
  }
  if (f.has("gpt2.attention.layer_norm_epsilon")) {
    c.layer_norm_epsilon = static_cast<float>(f.get_float("gpt2.attention.layer_norm_epsilon"));
  }
  const Embedding e = token_embedding(f, c.n_embd);
  c.vocab_size = e.vocab;
  c.tie_word_embeddings = e.tied;
  c.position_encoding = PositionEncoding::kLearned;
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(p + ": " + e.what());
  }
  const int64_t C = c.n_embd, V = c.vocab_size, T = c.block_size;

  GgufModel out;
  read_text_side(out, f, V);
  ExpectedTensors expected = {{"token_embd.weight", {C, V}}, {"position_embd.weight", {C, T}},
                              {"output_norm.weight", {C}},   {"output_norm.bias", {C}}};
  if (e.head != nullptr) expected.push_back({"output.weight", {C, V}});
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_norm.weight", "attn_norm.bias", "ffn_norm.weight", "ffn_norm.bias",
                          "attn_output.bias", "ffn_down.bias"}) {
      expected.push_back({b + n, {C}});
    }
    expected.push_back({b + "attn_qkv.weight", {C, 3 * C}});
    expected.push_back({b + "attn_qkv.bias", {3 * C}});
    expected.push_back({b + "attn_output.weight", {C, C}});
    expected.push_back({b + "ffn_up.weight", {C, 4 * C}});
    expected.push_back({b + "ffn_up.bias", {4 * C}});
    expected.push_back({b + "ffn_down.weight", {4 * C, C}});
  }
  const bool all_f32 = check_tensors(f, expected, "gpt2", c.n_layer, out);

  if (all_f32 || dequantize) {
    out.fp32 = std::make_unique<GPT>(c);
    GPT& m = *out.fp32;
    const ModelWeights& w = m.mutable_weights();
    auto copy = [&](const std::string& n, float* dst) {
      const std::vector<float> x = to_floats(*f.find(n));
      std::copy(x.begin(), x.end(), dst);
    };
    auto conv1d = [&](const std::string& n, float* dst, int64_t in, int64_t n_out) {
      transpose_into(to_floats(*f.find(n)), n_out, in, dst);
    };
    copy("token_embd.weight", w.wte);
    copy("position_embd.weight", w.wpe);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const LayerWeights& L = w.layers[static_cast<size_t>(l)];
      const std::string b = "blk." + std::to_string(l) + ".";
      copy(b + "attn_norm.weight", L.ln_1_weight);
      copy(b + "attn_norm.bias", L.ln_1_bias);
      conv1d(b + "attn_qkv.weight", L.attn_c_attn_weight, C, 3 * C);
      copy(b + "attn_qkv.bias", L.attn_c_attn_bias);
      conv1d(b + "attn_output.weight", L.attn_c_proj_weight, C, C);
      copy(b + "attn_output.bias", L.attn_c_proj_bias);
      copy(b + "ffn_norm.weight", L.ln_2_weight);
      copy(b + "ffn_norm.bias", L.ln_2_bias);
      conv1d(b + "ffn_up.weight", L.mlp_c_fc_weight, C, 4 * C);
      copy(b + "ffn_up.bias", L.mlp_c_fc_bias);
      conv1d(b + "ffn_down.weight", L.mlp_c_proj_weight, 4 * C, C);
      copy(b + "ffn_down.bias", L.mlp_c_proj_bias);
    }
    copy("output_norm.weight", w.ln_f_weight);
    copy("output_norm.bias", w.ln_f_bias);
    if (!c.tie_word_embeddings) copy("output.weight", w.lm_head);
    return out;
  }

  // Compact weights are kept as they are stored; F32 matrices among them become
  // Conv1D fp32 layers.
  auto q = std::make_unique<QuantizedModel>();
  q->vectors.reserve(expected.size());
  q->matrices.reserve(expected.size());
  InferenceWeights& w = q->weights;
  w.config = c;
  auto vec = [&](const std::string& n) -> const float* {
    q->vectors.push_back(to_floats(*f.find(n)));
    return q->vectors.back().data();
  };
  auto linear = [&](const std::string& n, int64_t in, int64_t n_out) {
    const GgufTensor& t = *f.find(n);
    LinearWeights lw;
    lw.in = in;
    lw.out = n_out;
    lw.bias = vec(n.substr(0, n.size() - 6) + "bias");
    if (t.type == GgmlType::kF32) {
      q->vectors.emplace_back(static_cast<size_t>(in * n_out));
      transpose_into(to_floats(t), n_out, in, q->vectors.back().data());
      lw.f32 = q->vectors.back().data();
    } else {
      q->matrices.push_back(QuantizedStorage::wrap(t.type, std::vector<uint8_t>(t.data, t.data + t.bytes), n_out, in));
      lw.packed = q->matrices.back().matrix;
    }
    return lw;
  };
  keep_embedding_and_head(*q, e, c.tie_word_embeddings, C, V);
  w.wpe = vec("position_embd.weight");
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    InferenceLayer L{};
    L.ln_1_weight = vec(b + "attn_norm.weight");
    L.ln_1_bias = vec(b + "attn_norm.bias");
    L.ln_2_weight = vec(b + "ffn_norm.weight");
    L.ln_2_bias = vec(b + "ffn_norm.bias");
    L.c_attn = linear(b + "attn_qkv.weight", C, 3 * C);
    L.attn_proj = linear(b + "attn_output.weight", C, C);
    L.c_fc = linear(b + "ffn_up.weight", C, 4 * C);
    L.mlp_proj = linear(b + "ffn_down.weight", 4 * C, C);
    w.layers.push_back(L);
  }
  w.ln_f_weight = vec("output_norm.weight");
  w.ln_f_bias = vec("output_norm.bias");
  out.quantized = std::move(q);
  return out;
}

namespace {

// llama.cpp's llama architecture: separate q, k, v (q and k rows in interleaved
// rotary pairs, permuted back here) and gate, up, fused as gpt.cpp keeps them.
GgufModel load_llama(const GgufFile& f, bool dequantize) {
  const std::string& p = f.path();
  const std::string arch = f.get_string("general.architecture");
  const std::string k = arch + ".";
  // qwen2: q/k/v biases, and q/k rows as Hugging Face keeps them (llama.cpp
  // rotates its halves); llama: rows in interleaved pairs, no biases.
  const bool qwen2 = arch == "qwen2";
  ModelConfig c;
  c.arch = Architecture::kLlama;
  c.position_encoding = PositionEncoding::kRotary;
  c.attention_bias = qwen2;
  const auto get_dim = [&](const std::string& key) { return gguf_dim(f, key); };
  c.n_embd = get_dim(k + "embedding_length");
  c.n_layer = get_dim(k + "block_count");
  c.n_head = get_dim(k + "attention.head_count");
  c.n_kv_head = f.has(k + "attention.head_count_kv") ? get_dim(k + "attention.head_count_kv") : c.n_head;
  c.block_size = get_dim(k + "context_length");
  c.ffn_hidden = get_dim(k + "feed_forward_length");
  c.rope_theta = f.has(k + "rope.freq_base") ? static_cast<float>(f.get_float(k + "rope.freq_base")) : 10000.0f;
  c.layer_norm_epsilon = f.has(k + "attention.layer_norm_rms_epsilon")
                             ? static_cast<float>(f.get_float(k + "attention.layer_norm_rms_epsilon"))
                             : 1e-5f;
  c.rope_scaling = read_rope_scaling(f, k, c.block_size);
  if (f.has(k + "rope.dimension_count") && c.n_head > 0 && c.n_embd % c.n_head == 0) {
    GPT_CHECK(f.get_int(k + "rope.dimension_count") == c.n_embd / c.n_head,
              p + ": rotary positions on part of a head (rope.dimension_count) are not supported");
  }
  const Embedding e = token_embedding(f, c.n_embd);
  c.vocab_size = e.vocab;
  c.tie_word_embeddings = e.tied;
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(p + ": " + e.what());
  }
  const int64_t C = c.n_embd, V = c.vocab_size, NH = c.n_head, NKV = c.kv_heads(), hs = c.head_size(),
                KV = c.kv_dim(), F = c.mlp_hidden();

  GgufModel out;
  read_text_side(out, f, V);
  ExpectedTensors expected = {{"token_embd.weight", {C, V}}, {"output_norm.weight", {C}}};
  if (e.head != nullptr) expected.push_back({"output.weight", {C, V}});
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    expected.push_back({b + "attn_norm.weight", {C}});
    expected.push_back({b + "ffn_norm.weight", {C}});
    expected.push_back({b + "attn_q.weight", {C, C}});
    expected.push_back({b + "attn_k.weight", {C, KV}});
    expected.push_back({b + "attn_v.weight", {C, KV}});
    if (qwen2) {
      expected.push_back({b + "attn_q.bias", {C}});
      expected.push_back({b + "attn_k.bias", {KV}});
      expected.push_back({b + "attn_v.bias", {KV}});
    }
    expected.push_back({b + "attn_output.weight", {C, C}});
    expected.push_back({b + "ffn_gate.weight", {C, F}});
    expected.push_back({b + "ffn_up.weight", {C, F}});
    expected.push_back({b + "ffn_down.weight", {F, C}});
  }
  const bool all_f32 = check_tensors(f, expected, arch, c.n_layer, out);
  const int64_t NH_rope = qwen2 ? 0 : NH, NKV_rope = qwen2 ? 0 : NKV;  // rows to unpermute

  // Rows of q or k back to Hugging Face's halves; of anything else as they are.
  auto unpermuted_floats = [&](const GgufTensor& t, int64_t heads) {
    std::vector<float> x = to_floats(t);
    if (heads == 0) return x;
    std::vector<float> y(x.size());
    for_each_rope_row(heads, hs, [&](int64_t gguf, int64_t hf) {
      std::copy(x.begin() + gguf * C, x.begin() + (gguf + 1) * C, y.begin() + hf * C);
    });
    return y;
  };
  auto floats_into = [&](const std::string& n, float* dst, int64_t heads = 0) {
    const std::vector<float> x = unpermuted_floats(*f.find(n), heads);
    std::copy(x.begin(), x.end(), dst);
  };
  if (all_f32 || dequantize) {
    out.fp32 = std::make_unique<GPT>(c);
    const ModelWeights& w = out.fp32->mutable_weights();
    floats_into("token_embd.weight", w.wte);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const LayerWeights& L = w.layers[static_cast<size_t>(l)];
      const std::string b = "blk." + std::to_string(l) + ".";
      floats_into(b + "attn_norm.weight", L.ln_1_weight);
      floats_into(b + "attn_q.weight", L.attn_c_attn_weight, NH_rope);
      floats_into(b + "attn_k.weight", L.attn_c_attn_weight + C * C, NKV_rope);
      floats_into(b + "attn_v.weight", L.attn_c_attn_weight + (C + KV) * C);
      if (qwen2) {
        floats_into(b + "attn_q.bias", L.attn_c_attn_bias);
        floats_into(b + "attn_k.bias", L.attn_c_attn_bias + C);
        floats_into(b + "attn_v.bias", L.attn_c_attn_bias + C + KV);
      }
      floats_into(b + "attn_output.weight", L.attn_c_proj_weight);
      floats_into(b + "ffn_norm.weight", L.ln_2_weight);
      floats_into(b + "ffn_gate.weight", L.mlp_c_fc_weight);
      floats_into(b + "ffn_up.weight", L.mlp_c_fc_weight + F * C);
      floats_into(b + "ffn_down.weight", L.mlp_c_proj_weight);
    }
    floats_into("output_norm.weight", w.ln_f_weight);
    if (!c.tie_word_embeddings) floats_into("output.weight", w.lm_head);
    return out;
  }

  // Compact weights stay as stored. Pieces of one fused product (q|k|v,
  // gate|up) of one type are joined row by row (a row's blocks do not depend on
  // other rows); pieces of different types (llama.cpp's K-quant mixes give
  // attn_v more bits) become one fp32 matrix.
  auto q = std::make_unique<QuantizedModel>();
  q->vectors.reserve(expected.size() + 3 * static_cast<size_t>(c.n_layer));
  q->matrices.reserve(expected.size());
  InferenceWeights& w = q->weights;
  w.config = c;
  auto vec = [&](const std::string& n) -> const float* {
    q->vectors.push_back(to_floats(*f.find(n)));
    return q->vectors.back().data();
  };
  struct Piece {
    std::string name;
    int64_t heads;  // q or k: rows to unpermute
  };
  // Pieces of one type joined row by row into one compact matrix.
  auto join = [&](const std::vector<Piece>& pieces, int64_t in) {
    const GgmlType type = f.find(pieces[0].name)->type;
    const size_t rb = ggml_row_bytes(type, in);
    int64_t rows = 0;
    std::vector<uint8_t> bytes;
    for (const Piece& pc : pieces) {
      const GgufTensor& t = *f.find(pc.name);
      const size_t at = bytes.size();
      bytes.resize(at + t.bytes);
      rows += t.ne[1];
      if (pc.heads == 0) {
        std::copy(t.data, t.data + t.bytes, bytes.begin() + static_cast<std::ptrdiff_t>(at));
      } else {
        for_each_rope_row(pc.heads, hs, [&](int64_t gguf, int64_t hf) {
          std::copy(t.data + rb * static_cast<size_t>(gguf), t.data + rb * static_cast<size_t>(gguf + 1),
                    bytes.begin() + static_cast<std::ptrdiff_t>(at + rb * static_cast<size_t>(hf)));
        });
      }
    }
    q->matrices.push_back(QuantizedStorage::wrap(type, std::move(bytes), rows, in));
    return q->matrices.back().matrix;
  };
  auto linear = [&](const std::vector<Piece>& pieces, int64_t in) {
    LinearWeights lw;
    lw.in = in;
    lw.out_major = true;
    std::vector<GgmlType> types;
    for (const Piece& pc : pieces) {
      const GgufTensor& t = *f.find(pc.name);
      types.push_back(t.type);
      lw.out += t.ne[1];
    }
    // Where the type changes (at most once, after the first piece of its kind).
    size_t cut = 1;
    while (cut < types.size() && types[cut] == types[0]) ++cut;
    const bool two_parts = cut < types.size() && std::all_of(types.begin() + static_cast<std::ptrdiff_t>(cut), types.end(),
                                                             [&](GgmlType t) { return t == types[cut]; });
    const bool any_f32 = std::find(types.begin(), types.end(), GgmlType::kF32) != types.end();
    if (any_f32 || (cut < types.size() && !two_parts)) {
      q->vectors.emplace_back();
      for (const Piece& pc : pieces) {
        const std::vector<float> x = unpermuted_floats(*f.find(pc.name), pc.heads);
        q->vectors.back().insert(q->vectors.back().end(), x.begin(), x.end());
      }
      lw.f32 = q->vectors.back().data();
      return lw;
    }
    // Compact as stored: one matrix, or two where a K-quant mix gives the
    // later pieces (attn_v) another type.
    lw.packed = join({pieces.begin(), pieces.begin() + static_cast<std::ptrdiff_t>(cut)}, in);
    if (cut < pieces.size()) lw.tail = join({pieces.begin() + static_cast<std::ptrdiff_t>(cut), pieces.end()}, in);
    return lw;
  };
  keep_embedding_and_head(*q, e, c.tie_word_embeddings, C, V);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    InferenceLayer L{};
    L.ln_1_weight = vec(b + "attn_norm.weight");
    L.ln_2_weight = vec(b + "ffn_norm.weight");
    L.c_attn = linear({{b + "attn_q.weight", NH_rope}, {b + "attn_k.weight", NKV_rope}, {b + "attn_v.weight", 0}}, C);
    if (qwen2) {
      std::vector<float> bias;
      for (const char* part : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) {
        const std::vector<float> x = to_floats(*f.find(b + part));
        bias.insert(bias.end(), x.begin(), x.end());
      }
      q->vectors.push_back(std::move(bias));
      L.c_attn.bias = q->vectors.back().data();
    }
    L.attn_proj = linear({{b + "attn_output.weight", 0}}, C);
    L.c_fc = linear({{b + "ffn_gate.weight", 0}, {b + "ffn_up.weight", 0}}, C);
    L.mlp_proj = linear({{b + "ffn_down.weight", 0}}, F);
    w.layers.push_back(L);
  }
  w.ln_f_weight = vec("output_norm.weight");
  out.quantized = std::move(q);
  return out;
}

}  // namespace

}  // namespace gpt
