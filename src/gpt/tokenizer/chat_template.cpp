#include "gpt/tokenizer/chat_template.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/jinja.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {

ChatTemplate ChatTemplate::named(const std::string& name) {
  ChatTemplate t;
  t.name_ = name;
  if (name == "chatml") {
    t.end_of_turn_ = "<|im_end|>";
  } else if (name == "llama3") {
    t.end_of_turn_ = "<|eot_id|>";
  } else {
    std::string known;
    for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown chat template '" + name + "' (known: " + known + ")");
  }
  return t;
}

std::vector<std::string> ChatTemplate::names() { return {"chatml", "llama3"}; }

std::optional<ChatTemplate> ChatTemplate::recognise(const std::string& jinja) {
  for (const std::string& n : names()) {
    if (named(n).jinja_source() == jinja) return named(n);
  }
  return std::nullopt;
}

namespace {

// Noncharacters (never in text people write) that mark message text in a
// rendering: U+FFFF inside a special token's text that a message spells, so it
// stays text; U+FDD0 / U+FDD1 around an assistant message, to find the reply.
const std::string kDefuse = "\xEF\xBF\xBF", kReplyBegin = "\xEF\xB7\x90", kReplyEnd = "\xEF\xB7\x91";

size_t utf8_length(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

// The message with every special token it spells broken by kDefuse after its
// first character.
std::string defuse(const std::string& text, const Tokenizer& tokenizer) {
  std::string out = text;
  for (const SpecialToken& s : tokenizer.special_tokens()) {
    const size_t first = std::min(utf8_length(static_cast<unsigned char>(s.text[0])), s.text.size());
    for (size_t at = out.find(s.text); at != std::string::npos; at = out.find(s.text, at + first + kDefuse.size())) {
      out.insert(at + first, kDefuse);
    }
  }
  return out;
}

std::string token_text(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return "";
  const nlohmann::json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

ChatTemplate ChatTemplate::from_jinja(const std::string& source, const std::string& bos_token,
                                      const std::string& eos_token) {
  if (auto t = recognise(source)) return *t;
  ChatTemplate t;
  t.name_ = "jinja";
  t.source_ = source;
  t.bos_token_ = bos_token;
  t.eos_token_ = eos_token;
  t.jinja_ = std::make_shared<const jinja::Template>(source);
  // The end of an assistant turn, as the template writes it: what follows a
  // reply up to the next whitespace (" </s>", "<|eot_id|>", "<|im_end|>\n").
  t.end_of_turn_ = eos_token;
  try {
    const std::string probe = t.render_jinja({{"user", "x"}, {"assistant", kReplyBegin}}, false);
    const size_t at = probe.rfind(kReplyBegin);
    if (at != std::string::npos) {
      size_t b = at + kReplyBegin.size();
      while (b < probe.size() && std::isspace(static_cast<unsigned char>(probe[b]))) ++b;
      size_t e = b;
      while (e < probe.size() && !std::isspace(static_cast<unsigned char>(probe[e]))) ++e;
      if (e > b) t.end_of_turn_ = probe.substr(b, e - b);
    }
  } catch (const Error&) {
    // A template that refuses the probe conversation keeps eos_token.
  }
  return t;
}

std::optional<ChatTemplate> ChatTemplate::of_model(const std::filesystem::path& model) {
  std::error_code ec;
  const std::filesystem::path file = model / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(file, ec)) return std::nullopt;
  return of_config_file(file);
}

std::optional<ChatTemplate> ChatTemplate::of_config_file(const std::filesystem::path& file) {
  const nlohmann::json j = nlohmann::json::parse(read_text_file(file), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) throw Error(file.string() + ": not a JSON object");
  if (const auto named_it = j.find("gpt_chat_template"); named_it != j.end()) {
    if (!named_it->is_string()) throw Error(file.string() + ": gpt_chat_template is not a string");
    return named(named_it->get<std::string>());
  }
  const auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return std::nullopt;
  std::string source;
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {
    // Newer files list named templates: the one called "default".
    for (const auto& t : *it) {
      if (t.is_object() && t.value("name", std::string()) == "default" && t.contains("template") && t["template"].is_string()) {
        source = t["template"].get<std::string>();
      }
    }
    if (source.empty()) throw Error(file.string() + ": chat_template lists no \"default\" template");
  } else {
    throw Error(file.string() + ": chat_template is not a string");
  }
  try {
    return from_jinja(source, token_text(j, "bos_token"), token_text(j, "eos_token"));
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
}

std::vector<std::string> ChatTemplate::markers() const {
  if (is_jinja()) return {};  // a model's own template uses the tokens its tokenizer has
  if (name_ == "chatml") return {"<|im_start|>", "<|im_end|>"};
  return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
}

std::vector<ChatTemplate::Piece> ChatTemplate::pieces(const std::vector<ChatMessage>& messages,
                                                      bool generation_prompt) const {
  GPT_CHECK(!messages.empty(), "a chat needs at least one message");
  std::vector<Piece> out;
  if (name_ == "llama3") out.push_back({"<|begin_of_text|>", true, false});
  for (const ChatMessage& m : messages) {
    GPT_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant",
              "unknown message role '" + m.role + "' (expected system, user or assistant)");
    const bool reply = m.role == "assistant";
    if (name_ == "chatml") {
      out.push_back({"<|im_start|>", true, false});
      out.push_back({m.role + "\n", false, false});
      out.push_back({m.content, false, reply});
      out.push_back({"<|im_end|>", true, reply});
      out.push_back({"\n", false, false});
    } else {  // llama3
      out.push_back({"<|start_header_id|>", true, false});
      out.push_back({m.role, false, false});
      out.push_back({"<|end_header_id|>", true, false});
      // The header's blank line is its own piece, as in the generation prompt below, so
      // training and chat see the same tokens after <|end_header_id|>.
      out.push_back({"\n\n", false, false});
      out.push_back({m.content, false, reply});
      out.push_back({"<|eot_id|>", true, reply});
    }
  }
  if (!generation_prompt) return out;
  if (name_ == "chatml") {
    out.push_back({"<|im_start|>", true, false});
    out.push_back({"assistant\n", false, false});
  } else {
    out.push_back({"<|start_header_id|>", true, false});
    out.push_back({"assistant", false, false});
    out.push_back({"<|end_header_id|>", true, false});
    out.push_back({"\n\n", false, false});
  }
  return out;
}

std::string ChatTemplate::render_jinja(const std::vector<ChatMessage>& messages, bool generation_prompt) const {
  jinja::Array list;
  for (const ChatMessage& m : messages) {
    list.push_back(jinja::Value::object({{"role", jinja::Value(m.role)}, {"content", jinja::Value(m.content)}}));
  }
  const jinja::Value context = jinja::Value::object({{"messages", jinja::Value::array(std::move(list))},
                                                     {"add_generation_prompt", jinja::Value(generation_prompt)},
                                                     {"bos_token", jinja::Value(bos_token_)},
                                                     {"eos_token", jinja::Value(eos_token_)}});
  return jinja_->render(context);
}

namespace {

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::string without(std::string text, const std::string& what) {
  std::string out;
  for (size_t at = 0, next; at < text.size(); at = next + what.size()) {
    next = text.find(what, at);
    if (next == std::string::npos) next = text.size();
    out.append(text, at, next - at);
  }
  return out;
}

}  // namespace

std::vector<ChatTemplate::Piece> ChatTemplate::cut_rendering(const std::string& text, const Tokenizer& tokenizer,
                                                             bool replies, bool tail_after_reply) const {
  std::vector<Piece> out;
  bool reply = false, tail = false;  // tail: after a reply, up to the end of its turn
  std::string plain;
  const auto flush = [&] {
    if (plain.empty()) return;
    // Message text carries kDefuse: removed here, after markers were found.
    std::string clean = without(plain, kDefuse);
    if (tail && !end_of_turn_.empty()) {
      const size_t eot = clean.find(end_of_turn_);
      if (eot != std::string::npos) {
        out.push_back({clean.substr(0, eot + end_of_turn_.size()), false, true});
        clean.erase(0, eot + end_of_turn_.size());
        tail = false;
      }
    }
    if (!clean.empty()) out.push_back({clean, false, reply || tail});
    plain.clear();
  };
  const auto& specials = tokenizer.special_tokens();
  for (size_t i = 0; i < text.size();) {
    if (replies && (text.compare(i, kReplyBegin.size(), kReplyBegin) == 0 || text.compare(i, kReplyEnd.size(), kReplyEnd) == 0)) {
      flush();
      reply = text.compare(i, kReplyBegin.size(), kReplyBegin) == 0;
      tail = !reply && tail_after_reply;
      i += kReplyBegin.size();
      continue;
    }
    const SpecialToken* match = nullptr;
    for (const SpecialToken& s : specials) {
      if (!s.text.empty() && text.compare(i, s.text.size(), s.text) == 0 && (match == nullptr || s.text.size() > match->text.size())) {
        match = &s;
      }
    }
    if (match != nullptr) {
      flush();
      out.push_back({match->text, true, reply || tail});
      tail = false;
      i += match->text.size();
      continue;
    }
    plain += text[i++];
  }
  flush();
  return out;
}

std::vector<ChatTemplate::Piece> ChatTemplate::jinja_pieces(const std::vector<ChatMessage>& messages,
                                                            bool generation_prompt, const Tokenizer& tokenizer,
                                                            bool mark_replies) const {
  GPT_CHECK(!messages.empty(), "a chat needs at least one message");
  std::vector<ChatMessage> defused;
  size_t assistants = 0;
  for (const ChatMessage& m : messages) {
    if (mark_replies) {
      GPT_CHECK(m.content.find(kReplyBegin) == std::string::npos && m.content.find(kReplyEnd) == std::string::npos,
                "a message holds the noncharacter U+FDD0 or U+FDD1");
    }
    defused.push_back({m.role, defuse(m.content, tokenizer)});
    assistants += m.role == "assistant";
  }
  if (!mark_replies) return cut_rendering(render_jinja(defused, generation_prompt), tokenizer, false, false);

  // Replies, first by marking the assistant's messages: right when the marks
  // come through in order and take nothing from the text (the template did
  // not cut or trim the message).
  std::vector<ChatMessage> marked = defused;
  for (ChatMessage& m : marked) {
    if (m.role == "assistant") m.content = kReplyBegin + m.content + kReplyEnd;
  }
  const std::string text = render_jinja(marked, generation_prompt);
  const std::string plain = render_jinja(defused, generation_prompt);
  bool in_order = count_of(text, kReplyBegin) == assistants && count_of(text, kReplyEnd) == assistants;
  for (size_t at = 0, k = 0; in_order && k < assistants; ++k) {
    const size_t b = text.find(kReplyBegin, at), e = text.find(kReplyEnd, at);
    in_order = b < e && text.find(kReplyBegin, b + kReplyBegin.size()) > e;
    at = e + kReplyEnd.size();
  }
  if (in_order && without(without(text, kReplyBegin), kReplyEnd) == plain) {
    return cut_rendering(text, tokenizer, true, true);
  }
  // Else by what each assistant message adds: the rendering up to it, with the
  // assistant's opening, against the rendering including it, each a prefix of
  // the whole.
  std::string with_marks;
  size_t done = 0;
  for (size_t k = 0; k < messages.size(); ++k) {
    if (messages[k].role != "assistant") continue;
    const std::vector<ChatMessage> before(defused.begin(), defused.begin() + static_cast<std::ptrdiff_t>(k));
    const std::vector<ChatMessage> upto(defused.begin(), defused.begin() + static_cast<std::ptrdiff_t>(k) + 1);
    const std::string opening = before.empty() ? std::string() : render_jinja(before, true);
    const std::string turn = render_jinja(upto, false);
    GPT_CHECK(turn.starts_with(opening) && plain.starts_with(turn) && opening.size() >= done,
              "the chat template rewrites the assistant's messages and renders earlier turns differently when later "
              "ones follow, so its replies cannot be found: fine-tune with --chat-template chatml or llama3");
    size_t end = turn.size();
    if (!end_of_turn_.empty()) {
      const size_t eot = turn.find(end_of_turn_, opening.size());
      if (eot != std::string::npos) end = eot + end_of_turn_.size();
    }
    with_marks += plain.substr(done, opening.size() - done) + kReplyBegin + plain.substr(opening.size(), end - opening.size()) +
                  kReplyEnd;
    done = end;
  }
  with_marks += plain.substr(done);
  return cut_rendering(with_marks, tokenizer, true, false);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool generation_prompt) const {
  if (is_jinja()) return render_jinja(messages, generation_prompt);
  std::string text;
  for (const Piece& p : pieces(messages, generation_prompt)) text += p.text;
  return text;
}

std::vector<int32_t> ChatTemplate::encode(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer) const {
  std::vector<int32_t> ids;
  if (is_jinja()) {
    const std::vector<Piece> pieces = jinja_pieces(messages, true, tokenizer, false);
    std::vector<Tokenizer::Segment> segments;
    for (const Piece& p : pieces) {
      segments.push_back({p.text, p.marker ? tokenizer.special_token_id(p.text) : std::nullopt});
    }
    tokenizer.encode_segments(segments, ids);
    return ids;
  }
  for (const Piece& p : pieces(messages, true)) {
    if (p.text.empty()) continue;
    if (p.marker) {
      if (auto id = tokenizer.special_token_id(p.text)) {
        ids.push_back(*id);
        continue;
      }
    }
    const std::vector<int32_t> piece = tokenizer.encode(p.text);  // plain text: markers in it stay text
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  return ids;
}

EncodedChat ChatTemplate::encode_for_training(const std::vector<ChatMessage>& messages,
                                              const Tokenizer& tokenizer) const {
  GPT_CHECK(std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role == "assistant"; }),
            "the conversation has no assistant message: nothing to learn from");
  EncodedChat out;
  if (is_jinja()) {
    // The rendering with replies marked, encoded as one text: plain runs whole
    // (cut apart, SentencePiece would see extra word starts), then each token
    // marked a reply if its bytes overlap a reply's.
    const std::vector<Piece> pieces = jinja_pieces(messages, false, tokenizer, true);
    struct Run {
      std::string text;
      std::optional<int32_t> special;
      std::vector<std::pair<size_t, bool>> spans;  // (end byte, reply) of its pieces
    };
    std::vector<Run> runs;
    for (const Piece& p : pieces) {
      if (p.marker) {
        runs.push_back({p.text, tokenizer.special_token_id(p.text), {{p.text.size(), p.reply}}});
        continue;
      }
      if (runs.empty() || runs.back().special) runs.push_back({"", std::nullopt, {}});
      Run& r = runs.back();
      r.text += p.text;
      r.spans.emplace_back(r.text.size(), p.reply);
    }
    std::vector<Tokenizer::Segment> segments;
    for (const Run& r : runs) segments.push_back({r.text, r.special});
    std::vector<size_t> ends;
    tokenizer.encode_segments(segments, out.ids, &ends);
    out.is_reply.assign(out.ids.size(), 0);
    size_t begin = 0;
    for (size_t i = 0; i < runs.size(); begin = ends[i], ++i) {
      const auto& spans = runs[i].spans;
      if (runs[i].special) {
        out.is_reply[begin] = spans[0].second ? 1 : 0;
        continue;
      }
      // Token byte spans over the text (a SentencePiece tokenizer's first token
      // may carry one extra leading space).
      size_t total = 0;
      for (size_t t = begin; t < ends[i]; ++t) total += tokenizer.token_bytes(out.ids[t]).size();
      const size_t text_size = runs[i].text.size();
      const size_t shift = total >= text_size ? total - text_size : 0;
      size_t at = 0;
      for (size_t t = begin; t < ends[i]; ++t) {
        const size_t len = tokenizer.token_bytes(out.ids[t]).size();
        const size_t lo = at >= shift ? at - shift : 0, hi = std::max(lo, at + len >= shift ? at + len - shift : 0);
        at += len;
        size_t piece_begin = 0;
        for (const auto& [piece_end, is_reply] : spans) {
          if (is_reply && lo < piece_end && hi > piece_begin) out.is_reply[t] = 1;
          piece_begin = piece_end;
        }
      }
    }
    GPT_CHECK(std::any_of(out.is_reply.begin(), out.is_reply.end(), [](uint8_t r) { return r != 0; }),
              "the chat template wrote none of the assistant's text");
    return out;
  }
  for (const Piece& p : pieces(messages, false)) {
    if (p.text.empty()) continue;
    if (p.marker) {
      const auto id = tokenizer.special_token_id(p.text);
      GPT_CHECK(id.has_value(), "the tokenizer has no special token " + p.text + " (the " + name_ +
                                    " template needs it; gpt sft adds it)");
      out.ids.push_back(*id);
      out.is_reply.push_back(p.reply ? 1 : 0);
      continue;
    }
    const std::vector<int32_t> piece = tokenizer.encode(p.text);
    out.ids.insert(out.ids.end(), piece.begin(), piece.end());
    out.is_reply.insert(out.is_reply.end(), piece.size(), p.reply ? 1 : 0);
  }
  return out;
}

std::string ChatTemplate::jinja_source() const {
  if (is_jinja()) return source_;
  if (name_ == "chatml") {
    return "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
           "{% endif %}";
  }
  return "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
         "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
         "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
}

void ChatTemplate::save_to(const std::filesystem::path& model_dir) const {
  nlohmann::ordered_json j = {{"chat_template", jinja_source()}};
  if (is_jinja()) {
    j["bos_token"] = bos_token_;
    j["eos_token"] = eos_token_;
  } else {
    j["gpt_chat_template"] = name_;
    j["eos_token"] = end_of_turn_;
  }
  write_file_atomic(model_dir / "tokenizer_config.json", j.dump(2) + "\n");
}

}  // namespace gpt
