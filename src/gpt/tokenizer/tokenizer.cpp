#include "gpt/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/bpe.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"

namespace gpt {

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    GPT_CHECK(id >= 0 && id < vocab_size(), "token id " + std::to_string(id) +
                                            " outside the vocabulary of " +
                                            std::to_string(vocab_size()));
    out += token_bytes(id);
  }
  return out;
}

void Tokenizer::encode_segments(const std::vector<Segment>& segments, std::vector<int32_t>& ids,
                                std::vector<size_t>* ends) const {
  for (const Segment& s : segments) {
    if (s.special) {
      ids.push_back(*s.special);
    } else {
      const std::vector<int32_t> piece = encode(s.text);
      ids.insert(ids.end(), piece.begin(), piece.end());
    }
    if (ends != nullptr) ends->push_back(ids.size());
  }
}

std::vector<int32_t> Tokenizer::encode_prompt(std::string_view text) const {
  std::vector<int32_t> ids;
  if (const auto bos = bos_id()) ids.push_back(*bos);
  const std::vector<int32_t> rest = encode(text);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

std::optional<int32_t> Tokenizer::special_token_id(std::string_view text) const {
  for (const SpecialToken& s : special_tokens())
    if (s.text == text) return s.id;
  return std::nullopt;
}

namespace {

// The special tokens of a char or byte tokenizer: appended after its own
// vocabulary of `base` tokens, kept in its file as "special_tokens".
class SpecialTail {
 public:
  SpecialTail(int32_t base, std::vector<std::string> texts) {
    for (auto& t : texts) {
      GPT_CHECK(!t.empty(), "a special token cannot be empty");
      tokens_.push_back({std::move(t), base + static_cast<int32_t>(tokens_.size())});
    }
  }
  const std::vector<SpecialToken>& tokens() const { return tokens_; }
  int size() const { return static_cast<int>(tokens_.size()); }
  // The texts with `more` appended (those already present are not repeated).
  std::vector<std::string> plus(const std::vector<std::string>& more) const {
    std::vector<std::string> all;
    for (const auto& t : tokens_) all.push_back(t.text);
    for (const auto& t : more)
      if (std::find(all.begin(), all.end(), t) == all.end()) all.push_back(t);
    return all;
  }
  void save(nlohmann::json& j) const {
    if (tokens_.empty()) return;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& t : tokens_) list.push_back(t.text);
    j["special_tokens"] = list;
  }
  static std::vector<std::string> load(const nlohmann::json& j) {
    std::vector<std::string> texts;
    if (!j.contains("special_tokens")) return texts;
    GPT_CHECK(j["special_tokens"].is_array(), "tokenizer file: \"special_tokens\" must be a list of strings");
    for (const auto& t : j["special_tokens"]) {
      GPT_CHECK(t.is_string(), "tokenizer file: \"special_tokens\" must be a list of strings");
      texts.push_back(t.get<std::string>());
    }
    return texts;
  }

 private:
  std::vector<SpecialToken> tokens_;
};

std::string describe_char(char32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
  std::string s = buf;
  if (cp >= 0x20 && cp != 0x7F) {
    s += " '";
    append_utf8(s, cp);
    s += "'";
  }
  return s;
}

class CharTokenizer final : public Tokenizer {
 public:
  explicit CharTokenizer(std::vector<char32_t> chars, std::vector<std::string> special = {})
      : chars_(std::move(chars)), special_(static_cast<int32_t>(chars_.size()), std::move(special)) {
    GPT_CHECK(!chars_.empty(), "a character tokenizer needs at least one character");
    for (size_t i = 0; i < chars_.size(); ++i) {
      GPT_CHECK(chars_[i] <= 0x10FFFF && !(chars_[i] >= 0xD800 && chars_[i] <= 0xDFFF),
            "character tokenizer holds an invalid code point");
      GPT_CHECK(i == 0 || chars_[i - 1] < chars_[i],
            "character tokenizer vocabulary must be sorted and without duplicates");
      id_of_.emplace(chars_[i], static_cast<int32_t>(i));
    }
  }
  std::string type() const override { return "char"; }
  int vocab_size() const override { return static_cast<int>(chars_.size()) + special_.size(); }
  const std::vector<SpecialToken>& special_tokens() const override { return special_.tokens(); }
  std::unique_ptr<Tokenizer> with_special_tokens(const std::vector<std::string>& texts) const override {
    return std::make_unique<CharTokenizer>(chars_, special_.plus(texts));
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<char32_t> cps = decode_utf8(text, "text");
    std::vector<int32_t> ids(cps.size());
    for (size_t i = 0; i < cps.size(); ++i) {
      auto it = id_of_.find(cps[i]);
      if (it == id_of_.end()) {
        throw Error("character " + describe_char(cps[i]) +
                    " is not in the character tokenizer's vocabulary of " +
                    std::to_string(chars_.size()));
      }
      ids[i] = it->second;
    }
    return ids;
  }

  std::string token_bytes(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return {};  // a model's padding rows past the vocabulary
    if (static_cast<size_t>(id) >= chars_.size()) return special_.tokens()[static_cast<size_t>(id) - chars_.size()].text;
    std::string s;
    append_utf8(s, chars_[static_cast<size_t>(id)]);
    return s;
  }

  nlohmann::json to_json() const override {
    nlohmann::json tokens = nlohmann::json::array();
    for (char32_t cp : chars_) {
      std::string s;
      append_utf8(s, cp);
      tokens.push_back(s);
    }
    nlohmann::json j = {{"type", "char"}, {"tokens", tokens}};
    special_.save(j);
    return j;
  }

 private:
  std::vector<char32_t> chars_;
  SpecialTail special_;
  std::unordered_map<char32_t, int32_t> id_of_;
};

class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(std::vector<std::string> special = {}) : special_(256, std::move(special)) {}
  std::string type() const override { return "byte"; }
  int vocab_size() const override { return 256 + special_.size(); }
  const std::vector<SpecialToken>& special_tokens() const override { return special_.tokens(); }
  std::unique_ptr<Tokenizer> with_special_tokens(const std::vector<std::string>& texts) const override {
    return std::make_unique<ByteTokenizer>(special_.plus(texts));
  }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string token_bytes(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return {};  // a model's padding rows past the vocabulary
    if (id >= 256) return special_.tokens()[static_cast<size_t>(id - 256)].text;
    return std::string(1, static_cast<char>(id));
  }
  nlohmann::json to_json() const override {
    nlohmann::json j = {{"type", "byte"}};
    special_.save(j);
    return j;
  }

 private:
  SpecialTail special_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_char_tokenizer(std::string_view corpus) {
  std::vector<char32_t> cps = decode_utf8(corpus, "training text");
  std::sort(cps.begin(), cps.end());
  cps.erase(std::unique(cps.begin(), cps.end()), cps.end());
  return std::make_unique<CharTokenizer>(std::move(cps));
}

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

namespace {
std::unique_ptr<Tokenizer> parse_tokenizer(const nlohmann::json& j) {
  if (j.is_object() && j.contains("model")) return BpeTokenizer::from_hf_json(j);  // Hugging Face tokenizer.json
  GPT_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(),
        "tokenizer file has no \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "byte") return std::make_unique<ByteTokenizer>(SpecialTail::load(j));
  if (type == "char") {
    GPT_CHECK(j.contains("tokens") && j["tokens"].is_array(), "char tokenizer file has no \"tokens\" list");
    std::vector<char32_t> chars;
    for (const auto& t : j["tokens"]) {
      GPT_CHECK(t.is_string(), "char tokenizer tokens must be strings");
      std::vector<char32_t> cps = decode_utf8(t.get<std::string>(), "tokenizer token");
      GPT_CHECK(cps.size() == 1, "char tokenizer tokens must be single characters");
      chars.push_back(cps[0]);
    }
    return std::make_unique<CharTokenizer>(std::move(chars), SpecialTail::load(j));
  }
  throw Error("unknown tokenizer type '" + type + "' (expected char or byte)");
}
}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_json(const nlohmann::json& j) {
  try {
    return parse_tokenizer(j);
  } catch (const nlohmann::json::exception& e) {  // a value of an unexpected type
    throw Error(std::string("tokenizer file: ") + e.what());
  }
}

std::filesystem::path find_tokenizer(const std::filesystem::path& dir) {
  for (const char* name : {kTokenizerFileName, kHfTokenizerFileName, "encoder.json", "vocab.json"}) {
    if (std::filesystem::exists(dir / name)) return dir / name;
  }
  return {};
}

std::string tokenizer_file_name(const Tokenizer& tokenizer) {
  return tokenizer.type() == "bpe" ? kHfTokenizerFileName : kTokenizerFileName;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(path)) {
    file = find_tokenizer(path);
    GPT_CHECK(!file.empty(), "no tokenizer in " + path.string() + " (expected " + kTokenizerFileName + ", " +
                             kHfTokenizerFileName + ", encoder.json + vocab.bpe or vocab.json + merges.txt)");
  }
  // GPT-2's own files (encoder.json + vocab.bpe) or Hugging Face's (vocab.json + merges.txt).
  const std::string name = file.filename().string();
  if (name == "encoder.json") return BpeTokenizer::load_gpt2(file, file.parent_path() / "vocab.bpe");
  if (name == "vocab.json") return BpeTokenizer::load_gpt2(file, file.parent_path() / "merges.txt");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + " is not valid JSON: " + e.what());
  }
  try {
    return tokenizer_from_json(j);
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + ": " + e.what());
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
}

void save_tokenizer(const Tokenizer& tokenizer, const std::filesystem::path& file) {
  write_file_atomic(file, tokenizer.to_json().dump(1) + "\n");
}

}  // namespace gpt
