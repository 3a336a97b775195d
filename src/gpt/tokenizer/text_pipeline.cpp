#include "gpt/tokenizer/text_pipeline.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "gpt/tokenizer/bpe.h"
#include "gpt/util/error.h"

namespace gpt {

const char* const kMetaspace = "\xE2\x96\x81";

const char* const kLlama3SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// A compiled PCRE2 pattern (Unicode properties on, invalid UTF-8 never matched,
// JIT-compiled where the platform has it). Shared read-only between threads;
// each search makes its own match data.
class Pcre2Pattern {
 public:
  explicit Pcre2Pattern(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C, &error, &offset,
                          nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw Error("tokenizer.json: split pattern does not compile at offset " + std::to_string(offset) + ": " +
                  reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  }
  ~Pcre2Pattern() { pcre2_code_free(code_); }
  Pcre2Pattern(const Pcre2Pattern&) = delete;
  Pcre2Pattern& operator=(const Pcre2Pattern&) = delete;

  // Calls on_match(begin, end) for each non-empty match, left to right.
  template <class F>
  void for_each_match(std::string_view text, F&& on_match) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    pcre2_match_context* mc = pcre2_match_context_create(nullptr);
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (md == nullptr || mc == nullptr || stack == nullptr) throw Error("out of memory compiling a split pattern");
    pcre2_jit_stack_assign(mc, nullptr, stack);
    // A pattern from a downloaded file must not backtrack for ever.
    pcre2_set_match_limit(mc, 10'000'000);
    pcre2_set_depth_limit(mc, 100'000);
    struct Free {
      pcre2_match_data* md;
      pcre2_match_context* mc;
      pcre2_jit_stack* stack;
      ~Free() {
        pcre2_match_data_free(md);
        pcre2_match_context_free(mc);
        pcre2_jit_stack_free(stack);
      }
    } free_all{md, mc, stack};
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t at = 0;
    while (at < text.size()) {
      const int rc = pcre2_match(code_, subject, text.size(), at, 0, md, mc);
      if (rc == PCRE2_ERROR_NOMATCH) return;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof message);
        throw Error(std::string("tokenizer split pattern failed: ") + reinterpret_cast<const char*>(message));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t begin = ov[0], end = ov[1];
      if (end > begin) {
        on_match(begin, end);
        at = end;
      } else {
        // An empty match: step over one character (a whole UTF-8 sequence).
        at = begin + 1;
        while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
      }
    }
  }

 private:
  pcre2_code* code_ = nullptr;
};

namespace {


// Split patterns whose pieces never span "x\ny" where x and y are not spaces
// (Llama 3's and Qwen2's): a newline between two non-spaces is always a piece
// of its own, so a corpus may be cut there.
bool breaks_at_lone_newlines(const std::string& pattern) {
  return pattern == kLlama3SplitPattern || pattern == kQwen2SplitPattern;
}

// Calls fn for each component of a tokenizer.json section, a Sequence's
// (listed under `list_key`, nested at most 16 deep) in order; none for null.
void for_each_component(const nlohmann::json& node, const char* list_key,
                        const std::function<void(const nlohmann::json&)>& fn, int depth = 0) {
  if (depth > 16) throw Error("tokenizer.json: Sequences nested more than 16 deep");
  if (node.is_null()) return;
  if (node.is_object() && node.value("type", std::string()) == "Sequence") {
    for (const auto& part : node.at(list_key)) for_each_component(part, list_key, fn, depth + 1);
    return;
  }
  fn(node);
}

std::string kind_of(const nlohmann::json& x) {
  return x.is_object() && x.contains("type") && x["type"].is_string() ? x["type"].get<std::string>() : std::string("?");
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t at; (at = s.find(from, pos)) != std::string::npos; pos = at + from.size()) {
    out.append(s, pos, at - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

}  // namespace

TextPipeline TextPipeline::gpt2() {
  TextPipeline p;
  p.steps_.push_back({SplitStep::Kind::kGpt2Pattern, nullptr, ""});
  const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                                     {"use_regex", true}};
  p.sections_ = {{"normalizer", nullptr}, {"pre_tokenizer", byte_level}, {"post_processor", byte_level},
                 {"decoder", byte_level}};
  return p;
}

TextPipeline TextPipeline::from_hf_json(const nlohmann::json& j) {
  TextPipeline p;
  p.byte_level_ = false;
  const auto& model = j.at("model");
  p.byte_fallback_ = model.value("byte_fallback", false);
  p.ignore_merges_ = model.value("ignore_merges", false);
  p.fuse_unk_ = model.value("fuse_unk", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) p.unk_token_ = model["unk_token"].get<std::string>();
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    GPT_CHECK(!model.contains(key) || model[key].is_null() || model[key] == "",
              std::string("tokenizer.json: BPE with a ") + key + " is not supported");
  }
  GPT_CHECK(!model.contains("dropout") || model["dropout"].is_null() || model["dropout"] == 0.0,
            "tokenizer.json: BPE dropout is not supported (it makes encoding random)");
  const auto section = [&](const char* key) { return j.contains(key) ? j[key] : nlohmann::json(nullptr); };
  // Normalizer: NFC, Prepend, Replace of a string, or a Sequence of them.
  for_each_component(section("normalizer"), "normalizers", [&](const nlohmann::json& n) {
    const std::string kind = kind_of(n);
    if (kind == "NFC") {
      p.normalize_.push_back({NormalizeStep::Kind::kNfc, "", ""});
    } else if (kind == "Prepend") {
      p.normalize_.push_back({NormalizeStep::Kind::kPrepend, "", n.at("prepend").get<std::string>()});
    } else if (kind == "Replace" && n.at("pattern").contains("String")) {
      p.normalize_.push_back({NormalizeStep::Kind::kReplace, n["pattern"]["String"].get<std::string>(),
                              n.at("content").get<std::string>()});
    } else {
      throw Error("tokenizer.json: normalizer '" + kind + "' is not supported (gpt.cpp runs NFC, Prepend and Replace of a string)");
    }
  });

  // Pre-tokenizer: ByteLevel, Split, Metaspace, or a Sequence of them.
  for_each_component(section("pre_tokenizer"), "pretokenizers", [&](const nlohmann::json& n) {
    const std::string kind = kind_of(n);
    if (kind == "ByteLevel") {
      p.byte_level_ = true;
      if (n.value("add_prefix_space", false)) {
        NormalizeStep prefix{NormalizeStep::Kind::kPrepend, "", " "};
        prefix.unless_present = true;
        p.normalize_.push_back(prefix);
      }
      if (n.value("use_regex", true)) p.steps_.push_back({SplitStep::Kind::kGpt2Pattern, nullptr, ""});
    } else if (kind == "Split") {
      GPT_CHECK(!n.value("invert", false), "tokenizer.json: an inverted Split pre-tokenizer is not supported");
      const auto& pattern = n.at("pattern");
      std::string regex;
      if (pattern.contains("Regex")) {
        regex = pattern["Regex"].get<std::string>();
      } else {
        // A literal string: quoted so that PCRE2 matches it as written.
        regex = "\\Q" + pattern.at("String").get<std::string>() + "\\E";
      }
      SplitStep step{SplitStep::Kind::kPattern, std::make_shared<const Pcre2Pattern>(regex), regex};
      const std::string behavior = n.value("behavior", std::string("Isolated"));
      if (behavior == "Isolated") step.behavior = SplitStep::Behavior::kIsolated;
      else if (behavior == "MergedWithPrevious") step.behavior = SplitStep::Behavior::kMergedWithPrevious;
      else if (behavior == "MergedWithNext") step.behavior = SplitStep::Behavior::kMergedWithNext;
      else if (behavior == "Removed") step.behavior = SplitStep::Behavior::kRemoved;
      else throw Error("tokenizer.json: Split behavior '" + behavior + "' is not supported");
      if (!breaks_at_lone_newlines(regex)) p.cuts_at_newlines_ = false;
      p.steps_.push_back(std::move(step));
    } else if (kind == "Metaspace") {
      const std::string rep = n.value("replacement", std::string(kMetaspace));
      std::string scheme = n.value("prepend_scheme", std::string());
      if (scheme.empty()) scheme = n.value("add_prefix_space", true) ? "always" : "never";
      GPT_CHECK(scheme == "always" || scheme == "first" || scheme == "never",
                "tokenizer.json: Metaspace prepend_scheme '" + scheme + "' is not supported");
      p.normalize_.push_back({NormalizeStep::Kind::kReplace, " ", rep});
      if (scheme != "never") {
        NormalizeStep prefix{NormalizeStep::Kind::kPrepend, "", rep};
        prefix.first_only = scheme == "first";
        prefix.unless_present = true;
        p.normalize_.push_back(prefix);
      }
      if (n.value("split", true)) {
        p.steps_.push_back({SplitStep::Kind::kMetaspace, nullptr, ""});
        p.cuts_at_newlines_ = false;  // its pieces run across newlines
      }
    } else {
      throw Error("tokenizer.json: pre-tokenizer '" + kind +
                  "' is not supported (gpt.cpp runs ByteLevel, Split and Metaspace)");
    }
  });

  // Decoder: byte-level, or SentencePiece's (which drops the leading space).
  for_each_component(section("decoder"), "decoders", [&](const nlohmann::json& n) {
    const std::string kind = kind_of(n);
    if (kind == "ByteLevel") {
      p.byte_level_ = true;
    } else if (kind == "Strip") {
      if (n.value("content", std::string()) == " " && n.value("start", 0) >= 1) p.strip_leading_space_ = true;
    } else if (kind == "Metaspace") {
      const std::string scheme = n.value("prepend_scheme", std::string(n.value("add_prefix_space", true) ? "always" : "never"));
      if (scheme != "never") p.strip_leading_space_ = true;
    }
  });
  GPT_CHECK(!(p.byte_level_ && p.byte_fallback_), "tokenizer.json: byte fallback in a byte-level vocabulary makes no sense");

  // Post-processor: a template that puts a special token before each text.
  for_each_component(section("post_processor"), "processors", [&](const nlohmann::json& n) {
    const std::string kind = kind_of(n);
    if (kind == "TemplateProcessing" && n.contains("single") && n["single"].is_array() && !n["single"].empty()) {
      const auto& first = n["single"][0];
      if (first.contains("SpecialToken")) p.bos_token_ = first["SpecialToken"].at("id").get<std::string>();
    }
  });
  if (p.steps_.empty()) p.cuts_at_newlines_ = false;
  p.sections_ = {{"normalizer", section("normalizer")}, {"pre_tokenizer", section("pre_tokenizer")},
                 {"post_processor", section("post_processor")}, {"decoder", section("decoder")}};
  return p;
}

std::vector<std::string> TextPipeline::split_patterns() const {
  std::vector<std::string> out;
  for (const SplitStep& s : steps_) {
    if (s.kind == SplitStep::Kind::kPattern) out.push_back(s.source);
  }
  return out;
}

bool TextPipeline::is_gpt2() const {
  return byte_level_ && normalize_.empty() && steps_.size() == 1 && steps_[0].kind == SplitStep::Kind::kGpt2Pattern &&
         !ignore_merges_ && !bos_token_;
}

bool TextPipeline::prepends_metaspace() const {
  return std::any_of(normalize_.begin(), normalize_.end(), [](const NormalizeStep& n) {
    return n.kind == NormalizeStep::Kind::kPrepend && n.to == kMetaspace;
  });
}

std::string TextPipeline::normalize(std::string_view segment, bool first) const {
  std::string s(segment);
  for (const NormalizeStep& step : normalize_) {
    switch (step.kind) {
      case NormalizeStep::Kind::kNfc: {
        utf8proc_uint8_t* out = nullptr;
        const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                                static_cast<utf8proc_ssize_t>(s.size()), &out,
                                                static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
        // Invalid UTF-8 is left as it is (its bytes are encoded one by one).
        if (n >= 0) s.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
        std::free(out);
        break;
      }
      case NormalizeStep::Kind::kPrepend:
        if (s.empty() || (step.first_only && !first) || (step.unless_present && s.starts_with(step.to))) break;
        s.insert(0, step.to);
        break;
      case NormalizeStep::Kind::kReplace:
        replace_all(s, step.from, step.to);
        break;
    }
  }
  return s;
}

void TextPipeline::split(const SplitStep& step, std::string_view text,
                         const std::function<void(std::string_view)>& emit) const {
  switch (step.kind) {
    case SplitStep::Kind::kGpt2Pattern:
      for_each_gpt2_piece(text, emit);
      return;
    case SplitStep::Kind::kMetaspace: {
      // Each "▁" starts a piece (Hugging Face's MergedWithNext on the replacement).
      size_t start = 0;
      for (size_t at = text.find(kMetaspace, 1); at != std::string_view::npos; at = text.find(kMetaspace, at + 3)) {
        if (at > start) emit(text.substr(start, at - start));
        start = at;
      }
      if (start < text.size()) emit(text.substr(start));
      return;
    }
    case SplitStep::Kind::kPattern: {
      using B = SplitStep::Behavior;
      size_t gap = 0;       // start of the text not matched yet
      size_t pending = 0;   // MergedWithNext: start of a match waiting for what follows
      bool has_pending = false;
      step.pattern->for_each_match(text, [&](size_t begin, size_t end) {
        switch (step.behavior) {
          case B::kIsolated:
            if (begin > gap) emit(text.substr(gap, begin - gap));
            emit(text.substr(begin, end - begin));
            break;
          case B::kRemoved:
            if (begin > gap) emit(text.substr(gap, begin - gap));
            break;
          case B::kMergedWithPrevious:
            emit(text.substr(gap, end - gap));
            break;
          case B::kMergedWithNext:
            if (has_pending) emit(text.substr(pending, begin - pending));
            else if (begin > gap) emit(text.substr(gap, begin - gap));
            pending = begin;
            has_pending = true;
            break;
        }
        gap = end;
      });
      if (has_pending) emit(text.substr(pending));
      else if (gap < text.size()) emit(text.substr(gap));
      return;
    }
  }
}

void TextPipeline::for_each_piece(std::string_view text, const std::function<void(std::string_view)>& emit) const {
  std::function<void(size_t, std::string_view)> apply = [&](size_t i, std::string_view t) {
    if (t.empty()) return;
    if (i == steps_.size()) {
      emit(t);
      return;
    }
    split(steps_[i], t, [&](std::string_view piece) { apply(i + 1, piece); });
  };
  apply(0, text);
}

}  // namespace gpt
