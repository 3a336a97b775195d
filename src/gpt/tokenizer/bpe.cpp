#include "gpt/tokenizer/bpe.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"

namespace gpt {
namespace {

enum class CharClass { kLetter, kNumber, kSpace, kOther };

CharClass classify_slow(std::string_view text, size_t i, size_t* len, char32_t* cp);

// Classes of the ASCII characters, by GPT-2's pattern.
struct AsciiClasses {
  CharClass cls[128];
  AsciiClasses() {
    for (int c = 0; c < 128; ++c) {
      size_t len;
      char32_t cp;
      const char ch = static_cast<char>(c);
      cls[c] = classify_slow(std::string_view(&ch, 1), 0, &len, &cp);
    }
  }
};

// Decodes the character at text[i] (or one invalid byte). Sets its length.
inline CharClass classify(std::string_view text, size_t i, size_t* len, char32_t* cp) {
  static const AsciiClasses ascii;
  const auto b = static_cast<unsigned char>(text[i]);
  if (b < 0x80) {
    *len = 1;
    *cp = b;
    return ascii.cls[b];
  }
  return classify_slow(text, i, len, cp);
}

CharClass classify_slow(std::string_view text, size_t i, size_t* len, char32_t* cp) {
  utf8proc_int32_t c = -1;
  const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + i),
                                              static_cast<utf8proc_ssize_t>(text.size() - i), &c);
  if (n <= 0 || c < 0) {
    *len = 1;
    *cp = 0xFFFFFFFF;
    return CharClass::kOther;
  }
  *len = static_cast<size_t>(n);
  *cp = static_cast<char32_t>(c);
  // \s of Python's `regex` module, which GPT-2's encoder uses.
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x1C: case 0x1D: case 0x1E: case 0x1F:
    case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000:
      return CharClass::kSpace;
    default:
      if (c >= 0x2000 && c <= 0x200A) return CharClass::kSpace;
  }
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      return CharClass::kLetter;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return CharClass::kNumber;
    default:
      return CharClass::kOther;
  }
}

struct CharInfo {
  CharClass cls;
  char32_t cp;
  size_t len;
};

inline CharInfo char_at(std::string_view text, size_t i) {
  CharInfo c;
  c.cls = classify(text, i, &c.len, &c.cp);
  return c;
}

// "left right" -> {left, right}; nullopt unless exactly two non-empty tokens.
std::optional<std::pair<std::string, std::string>> split_merge(std::string_view line) {
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string_view::npos)
    return std::nullopt;
  return std::make_pair(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
}

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

}  // namespace

void for_each_gpt2_piece(std::string_view text, const std::function<void(std::string_view)>& emit) {
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const CharInfo c0 = char_at(text, i);
    size_t end = i;
    // 's 't 're 've 'm 'll 'd (case-sensitive, as GPT-2)
    if (c0.cp == U'\'' && i + 1 < n) {
      const char a = text[i + 1], b = i + 2 < n ? text[i + 2] : '\0';
      if (a == 's' || a == 't' || a == 'm' || a == 'd') end = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) end = i + 3;
    }
    if (end == i) {
      size_t body = i;
      CharInfo cb = c0;
      if (c0.cp == U' ' && i + 1 < n) {
        const CharInfo c1 = char_at(text, i + 1);
        if (c1.cls != CharClass::kSpace) {
          body = i + 1;
          cb = c1;
        }
      }
      if (cb.cls != CharClass::kSpace) {
        //  ?\p{L}+   ?\p{N}+   ?[^\s\p{L}\p{N}]+
        end = body + cb.len;
        while (end < n) {
          const CharInfo c = char_at(text, end);
          if (c.cls != cb.cls) break;
          end += c.len;
        }
      } else {
        // \s+(?!\S): the whitespace run, less its last character when a
        // non-space follows (that space goes with the next piece); else \s+.
        size_t p = i, last = i;
        while (p < n) {
          const CharInfo c = char_at(text, p);
          if (c.cls != CharClass::kSpace) break;
          last = p;
          p += c.len;
        }
        end = (p < n && last > i) ? last : p;
      }
    }
    emit(text.substr(i, end - i));
    i = end;
  }
}

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  for_each_gpt2_piece(text, [&](std::string_view p) { pieces.push_back(p); });
  return pieces;
}

const std::vector<std::string>& gpt2_byte_to_unicode() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(t[static_cast<size_t>(b)], printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++));
    }
    return t;
  }();
  return table;
}

namespace {

// Whether the "▁" at `at` follows another character: a SentencePiece word starts there.
bool starts_word(std::string_view text, size_t at) { return at > 0 && (at < 3 || text.compare(at - 3, 3, kMetaspace) != 0); }

}  // namespace

int sentencepiece_byte(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = t[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

BpeTokenizer::BpeTokenizer(std::unordered_map<std::string, int32_t> vocab,
                           std::vector<std::pair<std::string, std::string>> merges, std::vector<SpecialToken> special,
                           TextPipeline pipeline)
    : pipeline_(std::move(pipeline)), merges_(std::move(merges)), special_(std::move(special)) {
  GPT_CHECK(!vocab.empty(), "BPE vocabulary is empty");
  int32_t max_id = -1;
  for (const auto& [tok, id] : vocab) {
    GPT_CHECK(id >= 0 && id < (1 << 24), "BPE token id " + std::to_string(id) + " out of range");
    max_id = std::max(max_id, id);
  }
  token_strings_.assign(static_cast<size_t>(max_id) + 1, "");
  token_bytes_.assign(static_cast<size_t>(max_id) + 1, "");
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  std::unordered_map<std::string_view, bool> is_special;
  for (const auto& sp : special_) is_special[sp.text] = true;
  // Inverse of the byte alphabet: code point -> byte.
  std::unordered_map<char32_t, uint8_t> byte_of;
  const auto& b2u = gpt2_byte_to_unicode();
  for (int b = 0; b < 256; ++b) byte_of[decode_utf8(b2u[static_cast<size_t>(b)], "byte alphabet")[0]] = static_cast<uint8_t>(b);
  std::vector<bool> seen(token_strings_.size(), false);
  metaspace_words_ = !pipeline_.byte_level();
  for (const auto& [tok, id] : vocab) {
    GPT_CHECK(!seen[static_cast<size_t>(id)], "BPE vocabulary uses id " + std::to_string(id) + " twice");
    seen[static_cast<size_t>(id)] = true;
    token_strings_[static_cast<size_t>(id)] = tok;
    std::string bytes;
    if (is_special.count(tok)) {
      bytes = tok;  // a marker stands for its text
    } else if (pipeline_.byte_level()) {
      for (char32_t cp : decode_utf8(tok, "BPE token")) {
        auto it = byte_of.find(cp);
        // Characters outside the byte alphabet (in some special tokens) stand for themselves.
        if (it == byte_of.end()) append_utf8(bytes, cp);
        else bytes += static_cast<char>(it->second);
      }
    } else if (const int b = pipeline_.byte_fallback() ? sentencepiece_byte(tok) : -1; b >= 0) {
      bytes = std::string(1, static_cast<char>(b));
      byte_id_[b] = id;
    } else {
      // SentencePiece's "▁" is a space.
      for (size_t at = 0; at < tok.size();) {
        if (tok.compare(at, 3, kMetaspace) == 0) {
          if (starts_word(tok, at)) metaspace_words_ = false;
          bytes += ' ';
          at += 3;
        } else {
          bytes += tok[at++];
        }
      }
    }
    token_bytes_[static_cast<size_t>(id)] = bytes;
  }
  GPT_CHECK(std::all_of(seen.begin(), seen.end(), [](bool s) { return s; }), "BPE vocabulary ids are not contiguous");
  if (pipeline_.byte_level()) {
    for (int b = 0; b < 256; ++b) {
      auto it = vocab.find(b2u[static_cast<size_t>(b)]);
      GPT_CHECK(it != vocab.end(), "BPE vocabulary lacks the single-byte token for byte " + std::to_string(b));
      byte_id_[b] = it->second;
    }
  } else if (pipeline_.byte_fallback()) {
    for (int b = 0; b < 256; ++b) {
      GPT_CHECK(byte_id_[b] >= 0, "BPE vocabulary with byte fallback lacks the token <0x" +
                                      std::string(1, "0123456789ABCDEF"[b >> 4]) + std::string(1, "0123456789ABCDEF"[b & 15]) + ">");
    }
  }
  if (const auto& unk = pipeline_.unk_token()) {
    auto it = vocab.find(*unk);
    GPT_CHECK(it != vocab.end(), "BPE unk_token '" + *unk + "' is not in the vocabulary");
    unk_id_ = it->second;
  }
  for (const auto& sp : special_) {
    GPT_CHECK(!sp.text.empty() && sp.id >= 0 && sp.id <= max_id && token_strings_[static_cast<size_t>(sp.id)] == sp.text,
          "special token '" + sp.text + "' is not in the vocabulary with id " + std::to_string(sp.id));
  }
  if (const auto& bos = pipeline_.bos_token()) {
    bos_id_ = special_token_id(*bos);
    GPT_CHECK(bos_id_.has_value(), "the post-processor's token '" + *bos + "' is not a special token");
  }
  for (size_t r = 0; r < merges_.size(); ++r) {
    const auto& [a, b] = merges_[r];
    auto ia = vocab.find(a), ib = vocab.find(b), im = vocab.find(a + b);
    GPT_CHECK(ia != vocab.end() && ib != vocab.end() && im != vocab.end(),
          "merge " + std::to_string(r + 1) + " ('" + a + "' '" + b + "') names a token not in the vocabulary");
    merge_of_.emplace(pair_key(ia->second, ib->second), std::make_pair(static_cast<int32_t>(r), im->second));
  }
  id_of_ = std::move(vocab);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::load_gpt2(const std::filesystem::path& encoder_json,
                                                      const std::filesystem::path& vocab_bpe) {
  std::unordered_map<std::string, int32_t> vocab;
  try {
    const auto j = nlohmann::json::parse(read_text_file(encoder_json));
    GPT_CHECK(j.is_object(), encoder_json.string() + " must hold a JSON object of token -> id");
    for (auto it = j.begin(); it != j.end(); ++it) {
      GPT_CHECK(it.value().is_number_integer(), encoder_json.string() + ": id of '" + it.key() + "' is not an integer");
      vocab.emplace(it.key(), it.value().get<int32_t>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(encoder_json.string() + " is not valid JSON: " + e.what());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  const std::string text = read_text_file(vocab_bpe);
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    auto merge = split_merge(line);
    GPT_CHECK(merge.has_value(), vocab_bpe.string() + ":" + std::to_string(line_no) + ": expected two tokens separated by one space");
    merges.push_back(std::move(*merge));
  }
  std::vector<SpecialToken> special;
  if (auto it = vocab.find("<|endoftext|>"); it != vocab.end()) special.push_back({it->first, it->second});
  try {
    return std::make_unique<BpeTokenizer>(std::move(vocab), std::move(merges), std::move(special));
  } catch (const Error& e) {
    throw Error(vocab_bpe.string() + ": " + e.what());
  }
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_hf_json(const nlohmann::json& j) {
  GPT_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), "tokenizer.json has no \"model\"");
  const auto& model = j["model"];
  GPT_CHECK(model.value("type", std::string()) == "BPE", "tokenizer.json: only BPE models are supported");
  TextPipeline pipeline = TextPipeline::from_hf_json(j);
  GPT_CHECK(model.contains("vocab") && model["vocab"].is_object() && model.contains("merges") && model["merges"].is_array(),
        "tokenizer.json: the model needs \"vocab\" and \"merges\"");
  std::unordered_map<std::string, int32_t> vocab;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    GPT_CHECK(it.value().is_number_integer(), "tokenizer.json: id of '" + it.key() + "' is not an integer");
    vocab.emplace(it.key(), it.value().get<int32_t>());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : model["merges"]) {
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // newer files: ["a", "b"]
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      continue;
    }
    GPT_CHECK(m.is_string(), "tokenizer.json: merges must be \"left right\" strings or [left, right] pairs");
    auto merge = split_merge(m.get<std::string>());
    GPT_CHECK(merge.has_value(), "tokenizer.json: malformed merge '" + m.get<std::string>() + "'");
    merges.push_back(std::move(*merge));
  }
  std::vector<SpecialToken> special;
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& t : j["added_tokens"]) {
      GPT_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
                t["content"].is_string(), "tokenizer.json: malformed added_tokens entry");
      special.push_back({t["content"].get<std::string>(), t["id"].get<int32_t>()});
      vocab.emplace(special.back().text, special.back().id);  // added tokens may live outside model.vocab
    }
  }
  return std::make_unique<BpeTokenizer>(std::move(vocab), std::move(merges), std::move(special), std::move(pipeline));
}

void BpeTokenizer::initial_symbols(std::string_view piece, std::vector<int32_t>& ids) const {
  ids.clear();
  if (pipeline_.byte_level()) {
    for (char c : piece) ids.push_back(byte_id_[static_cast<unsigned char>(c)]);
    return;
  }
  // SentencePiece style: a character is its token, else its bytes' tokens,
  // else <unk> (runs of which are one <unk> with fuse_unk).
  for (size_t i = 0; i < piece.size();) {
    size_t len = 1;
    const auto b0 = static_cast<unsigned char>(piece[i]);
    if (b0 >= 0x80) {
      utf8proc_int32_t cp = -1;
      const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(piece.data() + i),
                                                  static_cast<utf8proc_ssize_t>(piece.size() - i), &cp);
      if (n > 0 && cp >= 0) len = static_cast<size_t>(n);
    }
    const std::string ch(piece.substr(i, len));
    if (auto it = id_of_.find(ch); it != id_of_.end()) {
      ids.push_back(it->second);
    } else if (pipeline_.byte_fallback()) {
      for (char c : ch) ids.push_back(byte_id_[static_cast<unsigned char>(c)]);
    } else {
      GPT_CHECK(unk_id_ >= 0, "the vocabulary cannot express the character '" + ch + "' (and has no unk_token)");
      if (!(pipeline_.fuse_unk() && !ids.empty() && ids.back() == unk_id_)) ids.push_back(unk_id_);
    }
    i += len;
  }
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out, Cache& cache) const {
  if (auto it = cache.find(std::string(piece)); it != cache.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  if (pipeline_.ignore_merges()) {
    // A piece that is a token of its own is taken whole.
    std::string written;
    if (pipeline_.byte_level()) {
      for (char c : piece) written += gpt2_byte_to_unicode()[static_cast<unsigned char>(c)];
    } else {
      written = piece;
    }
    if (auto it = id_of_.find(written); it != id_of_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  initial_symbols(piece, ids);
  // Merge the lowest-ranked adjacent pair until none is in the merge list.
  while (ids.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max(), merged = -1;
    size_t best = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      auto it = merge_of_.find(pair_key(ids[i], ids[i + 1]));
      if (it != merge_of_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        merged = it->second.second;
        best = i;
      }
    }
    if (merged < 0) break;
    // Merge every occurrence of this pair, left to right (as GPT-2's bpe()).
    const int32_t a = ids[best], b = ids[best + 1];
    size_t w = 0;
    for (size_t i = 0; i < ids.size();) {
      if (i + 1 < ids.size() && ids[i] == a && ids[i + 1] == b) {
        ids[w++] = merged;
        i += 2;
      } else {
        ids[w++] = ids[i++];
      }
    }
    ids.resize(w);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cache.size() < 200000) cache.emplace(std::string(piece), std::move(ids));
}

void BpeTokenizer::for_each_word(std::string_view text, const std::function<void(std::string_view)>& emit) const {
  if (pipeline_.splits()) {
    pipeline_.for_each_piece(text, emit);
    return;
  }
  if (text.empty()) return;
  if (!metaspace_words_) {
    emit(text);  // the whole segment is one word
    return;
  }
  // No token spans "x▁" (x not "▁"): cut before each such "▁"; the same merges
  // happen, with the words' results cached.
  size_t start = 0;
  for (size_t at = text.find(kMetaspace, 1); at != std::string_view::npos; at = text.find(kMetaspace, at + 3)) {
    if (starts_word(text, at)) {
      emit(text.substr(start, at - start));
      start = at;
    }
  }
  emit(text.substr(start));
}

// Where a long text can be cut so that encoding the parts gives the same ids as
// the whole, or text.size(): right after "x\n" before "y", where x and y are not
// whitespace, for split patterns that always isolate such a newline; before a
// "▁" that follows another character, for SentencePiece-style words.
size_t BpeTokenizer::safe_cut_near(std::string_view text, size_t pos) const {
  if (pipeline_.cuts_at_newlines()) {
    for (size_t p = std::max<size_t>(pos, 2); p < text.size(); ++p) {
      if (text[p - 1] == '\n' && !std::isspace(static_cast<unsigned char>(text[p - 2])) &&
          !std::isspace(static_cast<unsigned char>(text[p])) && static_cast<unsigned char>(text[p - 2]) < 0x80 &&
          static_cast<unsigned char>(text[p]) < 0x80) {
        return p;
      }
    }
  } else if (!pipeline_.splits() && metaspace_words_) {
    for (size_t at = text.find(kMetaspace, std::max<size_t>(pos, 3)); at != std::string_view::npos;
         at = text.find(kMetaspace, at + 3)) {
      if (starts_word(text, at)) return at;
    }
  }
  return text.size();
}

void BpeTokenizer::encode_plain(std::string_view raw, std::vector<int32_t>& out, int threads, bool first) const {
  std::string normalized;
  std::string_view text = raw;
  if (pipeline_.normalizes()) {
    normalized = pipeline_.normalize(raw, first);
    text = normalized;
  }
  if (threads <= 1 || text.size() < (1u << 20)) {
    Cache cache;
    for_each_word(text, [&](std::string_view piece) { encode_piece(piece, out, cache); });
    return;
  }
  // Big inputs: cut at safe points into one part per thread, encode the parts in
  // parallel (each with its own cache), concatenate in order.
  std::vector<size_t> cuts = {0};
  for (int t = 1; t < threads; ++t) {
    const size_t c = safe_cut_near(text, text.size() * static_cast<size_t>(t) / static_cast<size_t>(threads));
    if (c > cuts.back() && c < text.size()) cuts.push_back(c);
  }
  cuts.push_back(text.size());
  std::vector<std::vector<int32_t>> parts(cuts.size() - 1);
  std::vector<std::string> errors(parts.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (size_t k = 0; k < parts.size(); ++k) {
    try {
      Cache cache;
      const std::string_view part = text.substr(cuts[k], cuts[k + 1] - cuts[k]);
      parts[k].reserve(part.size() / 3 + 1);
      for_each_word(part, [&](std::string_view piece) { encode_piece(piece, parts[k], cache); });
    } catch (const std::exception& e) {
      errors[k] = e.what();
    }
  }
  for (const std::string& e : errors) GPT_CHECK(e.empty(), e);
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const { return encode(text, false); }

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool allow_special, int threads) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (!allow_special || special_.empty()) {
    encode_plain(text, out, threads, true);
    return out;
  }
  // Split at the earliest (then longest) special token; encode the text between.
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = std::string_view::npos;
    const SpecialToken* match = nullptr;
    for (const auto& sp : special_) {
      const size_t at = text.find(sp.text, pos);
      if (at < best || (at == best && at != std::string_view::npos && sp.text.size() > match->text.size())) {
        best = at;
        match = &sp;
      }
    }
    encode_plain(text.substr(pos, best == std::string_view::npos ? std::string_view::npos : best - pos), out, threads,
                 pos == 0);
    if (match == nullptr || best == std::string_view::npos) break;
    out.push_back(match->id);
    pos = best + match->text.size();
  }
  return out;
}

std::unique_ptr<Tokenizer> BpeTokenizer::with_special_tokens(const std::vector<std::string>& texts) const {
  std::unordered_map<std::string, int32_t> vocab;
  for (size_t i = 0; i < token_strings_.size(); ++i) vocab.emplace(token_strings_[i], static_cast<int32_t>(i));
  std::vector<SpecialToken> special = special_;
  for (const std::string& t : texts) {
    GPT_CHECK(!t.empty(), "a special token cannot be empty");
    if (special_token_id(t)) continue;
    // Its text goes into the vocabulary as written: in the byte alphabet it may
    // already name an ordinary token, which must keep its meaning.
    GPT_CHECK(!vocab.contains(t), "'" + t + "' is already an ordinary token of this vocabulary");
    const auto id = static_cast<int32_t>(vocab.size());
    vocab.emplace(t, id);
    special.push_back({t, id});
  }
  return std::make_unique<BpeTokenizer>(std::move(vocab), merges_, std::move(special), pipeline_);
}

void BpeTokenizer::encode_segments(const std::vector<Segment>& segments, std::vector<int32_t>& ids,
                                   std::vector<size_t>* ends) const {
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].special) ids.push_back(*segments[i].special);
    else encode_plain(segments[i].text, ids, 1, i == 0);
    if (ends != nullptr) ends->push_back(ids.size());
  }
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text = Tokenizer::decode(ids);
  if (pipeline_.strip_leading_space() && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

nlohmann::json BpeTokenizer::to_json() const {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (size_t i = 0; i < token_strings_.size(); ++i) vocab[token_strings_[i]] = i;
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  // "left right" strings, or [left, right] pairs where a token holds a space.
  const bool pairs = std::any_of(merges_.begin(), merges_.end(), [](const auto& m) {
    return m.first.find(' ') != std::string::npos || m.second.find(' ') != std::string::npos;
  });
  for (const auto& [a, b] : merges_) {
    if (pairs) merges.push_back({a, b});
    else merges.push_back(a + " " + b);
  }
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (const auto& sp : special_) {
    added.push_back({{"id", sp.id}, {"content", sp.text}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  const nlohmann::json& sections = pipeline_.sections();
  nlohmann::ordered_json model = {{"type", "BPE"}, {"dropout", nullptr}};
  if (const auto& unk = pipeline_.unk_token()) model["unk_token"] = *unk;
  else model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = pipeline_.fuse_unk();
  model["byte_fallback"] = pipeline_.byte_fallback();
  if (pipeline_.ignore_merges()) model["ignore_merges"] = true;
  model["vocab"] = vocab;
  model["merges"] = merges;
  nlohmann::ordered_json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", sections.at("normalizer")},
      {"pre_tokenizer", sections.at("pre_tokenizer")},
      {"post_processor", sections.at("post_processor")},
      {"decoder", sections.at("decoder")},
      {"model", model},
  };
  // ordered_json keeps the key order a reader expects; convert for the interface.
  return nlohmann::json::parse(j.dump());
}

}  // namespace gpt
