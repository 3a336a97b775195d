// libFuzzer target for the tokenizer and the file loaders. The first input byte
// picks what the rest is fed to:
//   0: text for the GPT-2 BPE encoder; decode(encode(x)) must give x back
//   1: a tokenizer file (tokenizer.json / tokenizer.gpt.json) for the loader
//   2: token ids (little-endian uint16) for the decoder
//   3: a safetensors file for its parser
//   4: a GGUF file for the model loader (container, metadata, tokenizer, tensors)
//   5: a config.json for the model config parser
//   6: a whole checkpoint directory for load_model: config.json, a tokenizer file
//      (tokenizer.json or tokenizer.gpt.json) and model.safetensors, cut from the
//      input by two 16-bit lengths; a model that loads also runs one token
//   7: a Jinja chat template, rendered for a fixed conversation and encoded
// Only gpt::Error may be thrown: any other exception type that escapes (a
// std::out_of_range, a JSON library exception, std::filesystem_error), a crash, a
// sanitizer report or a broken round trip is a finding. The GPT-2 vocabulary comes from GPT_FUZZ_GPT2_DIR (or
// ../shared/data/gpt2); without it a small trained vocabulary is used.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "gpt/generation/kv_cache.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/gguf_model.h"
#include "gpt/model/config.h"
#include "gpt/io/safetensors.h"
#include "gpt/tokenizer/bpe.h"
#include "gpt/tokenizer/bpe_trainer.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/util/error.h"

namespace {

const gpt::BpeTokenizer& tokenizer() {
  static const std::unique_ptr<gpt::BpeTokenizer> tok = [] {
    const char* env = std::getenv("GPT_FUZZ_GPT2_DIR");
    const std::filesystem::path dir = env ? env : "../shared/data/gpt2";
    if (std::filesystem::exists(dir / "encoder.json")) return gpt::BpeTokenizer::load_gpt2(dir / "encoder.json", dir / "vocab.bpe");
    gpt::PieceCounts counts;
    counts.add("The quick brown fox jumps over the lazy dog. 한국어 텍스트도 있습니다! 1234 5678 ...");
    gpt::BpeTrainOptions opts;
    opts.vocab_size = 320;
    return gpt::train_bpe(counts, opts);
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 8) {
      case 0: {
        const auto& tok = tokenizer();
        if (tok.decode(tok.encode(body, data[0] & 4)) != body) std::abort();
        break;
      }
      case 1: {
        const auto j = nlohmann::json::parse(body, nullptr, false);
        if (!j.is_discarded()) gpt::tokenizer_from_json(j);
        break;
      }
      case 2: {
        const auto& tok = tokenizer();
        std::vector<int32_t> ids;
        for (size_t i = 0; i + 1 < body.size(); i += 2) ids.push_back(static_cast<uint8_t>(body[i]) | (static_cast<uint8_t>(body[i + 1]) << 8));
        tok.decode(ids);
        break;
      }
      case 4: {
        // The loader maps files: hand it one in memory-backed /dev/shm.
        static const std::string path = "/dev/shm/gpt-fuzz-" + std::to_string(::getpid()) + ".gguf";
        std::ofstream(path, std::ios::binary | std::ios::trunc).write(body.data(), static_cast<std::streamsize>(body.size()));
        for (bool dequantize : {false, true}) gpt::load_gguf_model(path, dequantize);
        break;
      }
      case 5: {
        const auto j = nlohmann::json::parse(body, nullptr, false);
        if (!j.is_discarded()) gpt::ModelConfig::from_json(j);
        break;
      }
      case 6: {
        if (body.size() < 4) break;
        const auto u16 = [&](size_t at) { return static_cast<size_t>(static_cast<uint8_t>(body[at]) | (static_cast<uint8_t>(body[at + 1]) << 8)); };
        const size_t n_config = std::min(u16(0), body.size() - 4);
        const size_t n_tok = std::min(u16(2), body.size() - 4 - n_config);
        static const std::filesystem::path dir = "/dev/shm/gpt-fuzz-ckpt-" + std::to_string(::getpid());
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
        auto put = [&](const char* name, size_t begin, size_t n) {
          std::ofstream(dir / name, std::ios::binary).write(body.data() + begin, static_cast<std::streamsize>(n));
        };
        put("config.json", 4, n_config);
        put(data[0] & 8 ? "tokenizer.json" : "tokenizer.gpt.json", 4 + n_config, n_tok);
        put("model.safetensors", 4 + n_config + n_tok, body.size() - 4 - n_config - n_tok);
        gpt::LoadedModel m = gpt::load_model(dir);
        gpt::InferenceSession session(*m.model);
        const int32_t token = 0;
        session.append(&token, 1);
        break;
      }
      case 7: {
        const gpt::ChatTemplate t = gpt::ChatTemplate::from_jinja(body, "<s>", "</s>");
        const std::vector<gpt::ChatMessage> chat = {{"system", "be brief"}, {"user", "hi <|endoftext|>"},
                                                    {"assistant", "hello"}, {"user", "and?"}};
        t.render(chat, true);
        t.encode(chat, tokenizer());
        break;
      }
      default:
        gpt::SafetensorsFile::parse(std::vector<uint8_t>(body.begin(), body.end()), "fuzz.safetensors");
    }
  } catch (const gpt::Error&) {
  }
  return 0;
}
