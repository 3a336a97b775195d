#include "gpt/tokenizer/jinja.h"

#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "gpt/util/error.h"
#include "gpt/util/utf8.h"

namespace gpt::jinja {

[[noreturn]] void fail(const std::string& what) { throw Error("chat template: " + what); }

namespace {
// Work done by the rendering in progress on this thread (loop iterations,
// nodes, elements that filters touch): bounded, so no template hangs.
thread_local int64_t t_work = 0;
void charge(int64_t units) {
  t_work += units;
  if (t_work > 2'000'000) fail("the template runs too long (more than 2 million steps)");
}
constexpr size_t kMaxText = size_t(64) << 20;
void check_text(size_t bytes) {
  if (bytes > kMaxText) fail("a string past 64 MiB");
}

std::string float_repr_of(double f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", f);
  return buf;
}
}  // namespace

// ---------------------------------------------------------------------------
// Values

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value::Value(bool b) : kind_(Kind::kBool), b_(b) {}
Value::Value(int64_t i) : kind_(Kind::kInt), i_(i) {}
Value::Value(double f) : kind_(Kind::kFloat), f_(f) {}
Value::Value(std::string s) : kind_(Kind::kString), s_(std::move(s)) {}
Value Value::array(Array a) {
  Value v;
  v.kind_ = Kind::kArray;
  v.a_ = std::make_shared<Array>(std::move(a));
  return v;
}
Value Value::object(Object o) {
  Value v;
  v.kind_ = Kind::kObject;
  v.o_ = std::make_shared<Object>(std::move(o));
  return v;
}
Value Value::name_space(Object o) {
  Value v = object(std::move(o));
  v.is_namespace_ = true;
  return v;
}

int64_t Value::as_int() const {
  switch (kind_) {
    case Kind::kInt: return i_;
    case Kind::kBool: return b_ ? 1 : 0;
    case Kind::kFloat:
      if (!(f_ > -9.2e18 && f_ < 9.2e18)) fail("the number " + float_repr_of(f_) + " does not fit an integer");
      return static_cast<int64_t>(f_);
    default: return 0;
  }
}

Value Value::function(Function f) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.fn_ = std::make_shared<Function>(std::move(f));
  return v;
}

Value Value::from_json(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return none();
    case nlohmann::json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return Value(j.get<int64_t>());
    case nlohmann::json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      Array a;
      for (const auto& x : j) a.push_back(from_json(x));
      return array(std::move(a));
    }
    case nlohmann::json::value_t::object: {
      Object o;
      for (auto it = j.begin(); it != j.end(); ++it) o.emplace_back(it.key(), from_json(it.value()));
      return object(std::move(o));
    }
    default: return Value();
  }
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return b_;
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0.0;
    case Kind::kString: return !s_.empty();
    case Kind::kArray: return !a_->empty();
    case Kind::kObject: return !o_->empty();
    case Kind::kFunction: return true;
  }
  return false;
}

Value Value::get(const std::string& key) const {
  if (kind_ != Kind::kObject) return Value();
  for (const auto& [k, v] : *o_) {
    if (k == key) return v;
  }
  return Value();
}

void Value::set(const std::string& key, Value v) const {
  for (auto& [k, old] : *o_) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  o_->emplace_back(key, std::move(v));
}

namespace {

// Values can hold themselves (a namespace set into itself): printing,
// comparing and writing JSON stop at a depth no real template reaches.
struct NestingGuard {
  static inline thread_local int depth = 0;
  NestingGuard() {
    if (++depth > 100) {
      depth = 0;
      fail("a value nested more than 100 deep (does it hold itself?)");
    }
  }
  ~NestingGuard() {
    if (depth > 0) --depth;
  }
};

std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f);
  std::string s(buf, end);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";  // Python writes 1.0, not 1
  return s;
}

std::string quote(const std::string& s, char q) {
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') out += '\\';
    if (c == '\n') out += "\\n";
    else out += c;
  }
  return out + q;
}

}  // namespace

std::string Value::repr() const {
  const NestingGuard guard;
  switch (kind_) {
    case Kind::kString: return quote(s_, s_.find('\'') != std::string::npos && s_.find('"') == std::string::npos ? '"' : '\'');
    case Kind::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < a_->size(); ++i) out += (i ? ", " : "") + (*a_)[i].repr();
      return out + "]";
    }
    case Kind::kObject: {
      std::string out = "{";
      for (size_t i = 0; i < o_->size(); ++i) out += (i ? ", " : "") + Value((*o_)[i].first).repr() + ": " + (*o_)[i].second.repr();
      return out + "}";
    }
    default: return str();
  }
}

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return b_ ? "True" : "False";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return float_repr(f_);
    case Kind::kString: return s_;
    case Kind::kFunction: return "<function>";
    default: return repr();
  }
}

std::string Value::to_json(int indent, int depth) const {
  const NestingGuard guard;
  const auto pad = [&](int d) { return indent < 0 ? std::string() : "\n" + std::string(static_cast<size_t>(indent * d), ' '); };
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return "null";
    case Kind::kBool: return b_ ? "true" : "false";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return float_repr(f_);
    case Kind::kString: return nlohmann::json(s_).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    case Kind::kArray: {
      if (a_->empty()) return "[]";
      std::string out = "[";
      for (size_t i = 0; i < a_->size(); ++i) out += (i ? (indent < 0 ? ", " : ",") : "") + pad(depth + 1) + (*a_)[i].to_json(indent, depth + 1);
      return out + pad(depth) + "]";
    }
    case Kind::kObject: {
      if (o_->empty()) return "{}";
      std::string out = "{";
      for (size_t i = 0; i < o_->size(); ++i) {
        out += (i ? (indent < 0 ? ", " : ",") : "") + pad(depth + 1) + Value((*o_)[i].first).to_json() + ": " +
               (*o_)[i].second.to_json(indent, depth + 1);
      }
      return out + pad(depth) + "}";
    }
    case Kind::kFunction: fail("a function cannot be written as JSON");
  }
  return "null";
}

bool Value::equals(const Value& o) const {
  const NestingGuard guard;
  if (is_number() && o.is_number()) return as_number() == o.as_number();
  if ((kind_ == Kind::kBool && o.is_number()) || (is_number() && o.kind_ == Kind::kBool)) {
    return (kind_ == Kind::kBool ? (b_ ? 1.0 : 0.0) : as_number()) == (o.kind_ == Kind::kBool ? (o.b_ ? 1.0 : 0.0) : o.as_number());
  }
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kBool: return b_ == o.b_;
    case Kind::kString: return s_ == o.s_;
    case Kind::kArray: {
      if (a_->size() != o.a_->size()) return false;
      for (size_t i = 0; i < a_->size(); ++i) {
        if (!(*a_)[i].equals((*o.a_)[i])) return false;
      }
      return true;
    }
    case Kind::kObject: {
      if (o_->size() != o.o_->size()) return false;
      for (const auto& [k, v] : *o_) {
        if (!v.equals(o.get(k))) return false;
      }
      return true;
    }
    default: return fn_ == o.fn_;
  }
}

bool Value::holds(const Value& other) const {
  const NestingGuard guard;
  const void* target = other.is_object() ? static_cast<const void*>(other.o_.get())
                       : other.is_array() ? static_cast<const void*>(other.a_.get()) : nullptr;
  if (target == nullptr) return false;
  if (is_object()) {
    if (o_.get() == target) return true;
    return std::any_of(o_->begin(), o_->end(), [&](const auto& kv) { return kv.second.holds(other); });
  }
  if (is_array()) {
    if (a_.get() == target) return true;
    return std::any_of(a_->begin(), a_->end(), [&](const Value& v) { return v.holds(other); });
  }
  return false;
}

// ---------------------------------------------------------------------------
// Lexer: the template as text pieces and tags, each tag a list of tokens.

namespace {

enum class Tok { kName, kString, kInt, kFloat, kOp, kEnd };
struct Token {
  Tok kind;
  std::string text;
  int line;
};

struct Piece {
  enum class Kind { kText, kOutput, kStatement } kind;
  std::string text;             // kText
  std::vector<Token> tokens;    // tags
  int line;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// What @huggingface/jinja and jinja2 (trim_blocks, lstrip_blocks, no kept
// trailing newline) do to the source before reading it.
std::string preprocess(std::string s) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    // lstrip_blocks: spaces and tabs that open a line before {% or {# go.
    if (i == 0 || s[i - 1] == '\n') {
      size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      if (j + 1 < s.size() && s[j] == '{' && (s[j + 1] == '#' || s[j + 1] == '%' || s[j + 1] == '-')) i = j;
    }
    // trim_blocks: the newline right after %} or #} goes.
    if (s[i] == '}' && i > 0 && (s[i - 1] == '%' || s[i - 1] == '#' || s[i - 1] == '-') && i + 1 < s.size() &&
        s[i + 1] == '\n') {
      out += '}';
      i += 2;
      continue;
    }
    out += s[i++];
  }
  return out;
}

std::vector<Token> lex_tag(const std::string& s, size_t& i, const std::string& close, bool& strip_after, int& line) {
  std::vector<Token> out;
  while (true) {
    while (i < s.size() && is_space(s[i])) {
      if (s[i] == '\n') ++line;
      ++i;
    }
    if (i >= s.size()) fail("a tag is not closed (line " + std::to_string(line) + ")");
    if (s.compare(i, close.size(), close) == 0) {
      i += close.size();
      strip_after = false;
      return out;
    }
    if (s[i] == '-' && s.compare(i + 1, close.size(), close) == 0) {
      i += 1 + close.size();
      strip_after = true;
      return out;
    }
    const char c = s[i];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tok::kName, s.substr(i, j - i), line});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      out.push_back({is_float ? Tok::kFloat : Tok::kInt, s.substr(i, j - i), line});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string text;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          switch (e) {
            case 'n': text += '\n'; break;
            case 't': text += '\t'; break;
            case 'r': text += '\r'; break;
            case 'b': text += '\b'; break;
            case 'f': text += '\f'; break;
            case 'v': text += '\v'; break;
            case '\\': text += '\\'; break;
            case '\'': text += '\''; break;
            case '"': text += '"'; break;
            default: text += '\\'; text += e;
          }
        } else {
          if (s[j] == '\n') ++line;
          text += s[j];
        }
      }
      if (j >= s.size()) fail("a string is not closed (line " + std::to_string(line) + ")");
      out.push_back({Tok::kString, text, line});
      i = j + 1;
    } else {
      static const char* const ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                        "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
      bool found = false;
      for (const char* op : ops) {
        const size_t n = std::char_traits<char>::length(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Tok::kOp, op, line});
          i += n;
          found = true;
          break;
        }
      }
      if (!found) fail(std::string("unexpected character '") + c + "' (line " + std::to_string(line) + ")");
    }
  }
}

std::vector<Piece> lex(const std::string& source) {
  const std::string s = preprocess(source);
  std::vector<Piece> out;
  size_t i = 0;
  int line = 1;
  bool strip_next = false;
  while (i < s.size()) {
    size_t open = i;
    while (true) {
      open = s.find('{', open);
      if (open == std::string::npos || open + 1 >= s.size()) {
        open = std::string::npos;
        break;
      }
      const char n = s[open + 1];
      if (n == '{' || n == '%' || n == '#') break;
      ++open;
    }
    std::string text = s.substr(i, open == std::string::npos ? std::string::npos : open - i);
    if (strip_next) {
      size_t k = 0;
      while (k < text.size() && is_space(text[k])) ++k;
      text.erase(0, k);
    }
    const bool strip_before = open != std::string::npos && open + 2 < s.size() && s[open + 2] == '-';
    if (strip_before) {
      while (!text.empty() && is_space(text.back())) text.pop_back();
    }
    if (!text.empty()) out.push_back({Piece::Kind::kText, text, {}, line});
    line += static_cast<int>(std::count(s.begin() + static_cast<std::ptrdiff_t>(i),
                                        open == std::string::npos ? s.end() : s.begin() + static_cast<std::ptrdiff_t>(open), '\n'));
    if (open == std::string::npos) break;
    const char kind = s[open + 1];
    i = open + 2 + (strip_before ? 1 : 0);
    if (kind == '#') {
      const size_t close = s.find("#}", i);
      if (close == std::string::npos) fail("a comment is not closed (line " + std::to_string(line) + ")");
      strip_next = close > i && s[close - 1] == '-';
      line += static_cast<int>(std::count(s.begin() + static_cast<std::ptrdiff_t>(i), s.begin() + static_cast<std::ptrdiff_t>(close), '\n'));
      i = close + 2;
      continue;
    }
    const int tag_line = line;
    Piece p{kind == '{' ? Piece::Kind::kOutput : Piece::Kind::kStatement, "", {}, tag_line};
    p.tokens = lex_tag(s, i, kind == '{' ? "}}" : "%}", strip_next, line);
    p.tokens.push_back({Tok::kEnd, "", line});
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Expressions

class Context;

struct Expr {
  virtual ~Expr() = default;
  virtual Value eval(Context& ctx) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Node {
  virtual ~Node() = default;
  virtual void render(Context& ctx, std::string& out) const = 0;
};
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct LoopControl {
  bool is_break;
};

class Context {
 public:
  explicit Context(const Value& vars) { frames_.push_back(Value::object()); frames_.push_back(vars); }
  Value lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      if (it->is_object()) {
        for (const auto& [k, v] : it->members()) {
          if (k == name) return v;
        }
      }
    }
    return Value();
  }
  void assign(const std::string& name, Value v) { frames_.back().set(name, std::move(v)); }
  void push() {
    // Macros calling macros: bounded, so a template cannot exhaust the stack.
    if (frames_.size() > 256) fail("too deeply nested (more than 256 loops or macro calls)");
    frames_.push_back(Value::object());
  }
  void pop() { frames_.pop_back(); }
  Value& globals() { return frames_.front(); }
  // Bounds on the work and the output of one rendering: a template from a
  // downloaded file must not hang or fill memory.
  void step() { charge(1); }
  static void check_size(const std::string& out) {
    if (out.size() > (size_t(64) << 20)) fail("the template's output passes 64 MiB");
  }

 private:
  std::vector<Value> frames_;
};

namespace {

struct Literal : Expr {
  Value v;
  explicit Literal(Value x) : v(std::move(x)) {}
  Value eval(Context&) const override { return v; }
};

struct Name : Expr {
  std::string name;
  explicit Name(std::string n) : name(std::move(n)) {}
  Value eval(Context& ctx) const override { return ctx.lookup(name); }
};

struct ListExpr : Expr {
  std::vector<ExprPtr> items;
  Value eval(Context& ctx) const override {
    Array a;
    for (const auto& e : items) a.push_back(e->eval(ctx));
    return Value::array(std::move(a));
  }
};

struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(Context& ctx) const override {
    Value o = Value::object();
    for (const auto& [k, v] : items) o.set(k->eval(ctx).str(), v->eval(ctx));
    return o;
  }
};

Value call_value(const Value& f, std::vector<Value> args, std::vector<std::pair<std::string, Value>> kwargs) {
  if (f.kind() != Value::Kind::kFunction) fail("calling something that is not a function");
  return f.call()(args, kwargs);
}

int64_t normalize_index(int64_t i, size_t n) { return i < 0 ? i + static_cast<int64_t>(n) : i; }

// Python's str.isspace().
bool is_unicode_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string encode_cps(const std::vector<char32_t>& cps, size_t b, size_t e) {
  std::string out;
  for (size_t i = b; i < e; ++i) append_utf8(out, cps[i]);
  return out;
}

// Python's str.strip / lstrip / rstrip: whitespace, or the characters given.
std::string strip_chars(const std::string& s, const std::string& chars, bool left, bool right) {
  const std::vector<char32_t> cps = decode_utf8(s, "string");
  const std::vector<char32_t> set = decode_utf8(chars, "string");
  const auto in = [&](char32_t c) {
    return set.empty() ? is_unicode_space(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && in(cps[b])) ++b;
  }
  if (right) {
    while (e > b && in(cps[e - 1])) --e;
  }
  return encode_cps(cps, b, e);
}

std::string map_case(const std::string& s, bool up) {
  std::string out;
  for (char32_t c : decode_utf8(s, "string")) {
    const auto cp = static_cast<utf8proc_int32_t>(c);
    append_utf8(out, static_cast<char32_t>(up ? utf8proc_toupper(cp) : utf8proc_tolower(cp)));
  }
  return out;
}
std::string upper(const std::string& s) { return map_case(s, true); }
std::string lower(const std::string& s) { return map_case(s, false); }

bool is_letter(char32_t c) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: return true;
    default: return false;
  }
}

// Python's str.title(): a letter after a non-letter is upper case, others lower.
std::string title(const std::string& s) {
  std::string out;
  bool start = true;
  for (char32_t c : decode_utf8(s, "string")) {
    const auto cp = static_cast<utf8proc_int32_t>(c);
    const bool letter = is_letter(c);
    append_utf8(out, static_cast<char32_t>(letter ? (start ? utf8proc_totitle(cp) : utf8proc_tolower(cp)) : cp));
    start = !letter;
  }
  return out;
}

// Jinja's title filter (unlike str.title()): words start after whitespace or
// one of -({[<, each capitalized as a whole.
std::string title_words(const std::string& s) {
  std::string out;
  bool start = true;
  for (char32_t c : decode_utf8(s, "string")) {
    const bool sep = is_unicode_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    const auto cp = static_cast<utf8proc_int32_t>(c);
    append_utf8(out, static_cast<char32_t>(sep ? cp : start ? utf8proc_toupper(cp) : utf8proc_tolower(cp)));
    start = sep;
  }
  return out;
}
std::string capitalize(const std::string& s) {
  std::vector<char32_t> cps = decode_utf8(lower(s), "string");
  if (!cps.empty()) cps[0] = static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(cps[0])));
  return encode_cps(cps, 0, cps.size());
}

std::string arg_string(const std::vector<Value>& args, size_t i, const std::string& dflt = "") {
  return i < args.size() && !args[i].is_none() && !args[i].is_undefined() ? args[i].str() : dflt;
}

Value split_string(const std::string& s, const std::vector<Value>& args) {
  Array out;
  const std::string sep = arg_string(args, 0);
  int64_t maxsplit = args.size() > 1 && args[1].is_number() ? args[1].as_int() : -1;
  if (sep.empty()) {  // Python's split(): runs of whitespace, no empty pieces
    const std::vector<char32_t> cps = decode_utf8(s, "string");
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_unicode_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit == 0) {
        out.emplace_back(strip_chars(encode_cps(cps, i, cps.size()), "", false, true));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !is_unicode_space(cps[j])) ++j;
      out.emplace_back(encode_cps(cps, i, j));
      if (maxsplit > 0) --maxsplit;
      i = j;
    }
    return Value::array(std::move(out));
  }
  size_t pos = 0;
  while (true) {
    const size_t at = maxsplit == 0 ? std::string::npos : s.find(sep, pos);
    if (at == std::string::npos) {
      out.emplace_back(s.substr(pos));
      break;
    }
    out.emplace_back(s.substr(pos, at - pos));
    pos = at + sep.size();
    if (maxsplit > 0) --maxsplit;
  }
  return Value::array(std::move(out));
}

std::string replace_all(std::string s, const std::string& from, const std::string& to, int64_t count = -1) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  for (size_t at; count != 0 && (at = s.find(from, pos)) != std::string::npos; pos = at + from.size(), --count) {
    out.append(s, pos, at - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// A method of a string, list or dict, bound to it (Python's str.strip, dict.items, ...).
Value method(const Value& self, const std::string& name) {
  using Args = std::vector<Value>;
  using Kwargs = std::vector<std::pair<std::string, Value>>;
  if (self.is_string()) {
    const std::string s = self.as_string();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return Value::function([s, name](Args& a, Kwargs&) {
        return Value(strip_chars(s, arg_string(a, 0), name != "rstrip", name != "lstrip"));
      });
    }
    if (name == "startswith" || name == "endswith") {
      return Value::function([s, name](Args& a, Kwargs&) {
        std::vector<std::string> options;
        if (!a.empty() && a[0].is_array()) {
          for (const Value& v : a[0].items()) options.push_back(v.str());
        } else {
          options.push_back(arg_string(a, 0));
        }
        for (const std::string& o : options) {
          if (name == "startswith" ? s.starts_with(o) : s.ends_with(o)) return Value(true);
        }
        return Value(false);
      });
    }
    if (name == "split") return Value::function([s](Args& a, Kwargs&) { return split_string(s, a); });
    if (name == "upper") return Value::function([s](Args&, Kwargs&) { return Value(upper(s)); });
    if (name == "lower") return Value::function([s](Args&, Kwargs&) { return Value(lower(s)); });
    if (name == "title") return Value::function([s](Args&, Kwargs&) { return Value(title(s)); });
    if (name == "capitalize") return Value::function([s](Args&, Kwargs&) { return Value(capitalize(s)); });
    if (name == "replace") {
      return Value::function([s](Args& a, Kwargs&) {
        return Value(replace_all(s, arg_string(a, 0), arg_string(a, 1), a.size() > 2 ? a[2].as_int() : -1));
      });
    }
    if (name == "find") {
      return Value::function([s](Args& a, Kwargs&) {
        const size_t at = s.find(arg_string(a, 0));
        if (at == std::string::npos) return Value(int64_t(-1));
        return Value(static_cast<int64_t>(decode_utf8(s.substr(0, at), "string").size()));  // in characters
      });
    }
    if (name == "join") {
      return Value::function([s](Args& a, Kwargs&) {
        std::string out;
        if (!a.empty() && a[0].is_array()) {
          for (size_t i = 0; i < a[0].items().size(); ++i) out += (i ? s : "") + a[0].items()[i].str();
        }
        return Value(out);
      });
    }
  }
  if (self.is_object()) {
    if (name == "items" || name == "keys" || name == "values") {
      return Value::function([self, name](Args&, Kwargs&) {
        Array out;
        for (const auto& [k, v] : self.members()) {
          if (name == "items") out.push_back(Value::array({Value(k), v}));
          else out.push_back(name == "keys" ? Value(k) : v);
        }
        return Value::array(std::move(out));
      });
    }
    if (name == "get") {
      return Value::function([self](Args& a, Kwargs&) {
        const Value v = a.empty() ? Value() : self.get(a[0].str());
        return v.is_undefined() ? (a.size() > 1 ? a[1] : Value::none()) : v;
      });
    }
  }
  if (self.is_array() && name == "append") {
    return Value::function([self](Args& a, Kwargs&) {
      for (const Value& v : a) {
        if (v.holds(self)) fail("a value cannot hold itself");
        if (v.kind() == Value::Kind::kFunction) fail("a list holds values, not functions");
        self.items().push_back(v);
      }
      return Value::none();
    });
  }
  return Value();
}

Value attribute(const Value& obj, const std::string& name) {
  if (obj.is_object()) {
    Value v = obj.get(name);
    if (!v.is_undefined()) return v;
  }
  return method(obj, name);
}

Value subscript(const Value& obj, const Value& key) {
  if (obj.is_object()) return key.is_string() ? attribute(obj, key.as_string()) : obj.get(key.str());
  if (obj.is_array() && key.is_number()) {
    const int64_t i = normalize_index(key.as_int(), obj.items().size());
    if (i < 0 || i >= static_cast<int64_t>(obj.items().size())) return Value();
    return obj.items()[static_cast<size_t>(i)];
  }
  if (obj.is_string() && key.is_number()) {
    const std::vector<char32_t> cps = decode_utf8(obj.as_string(), "string");
    const int64_t i = normalize_index(key.as_int(), cps.size());
    if (i < 0 || i >= static_cast<int64_t>(cps.size())) return Value();
    std::string out;
    append_utf8(out, cps[static_cast<size_t>(i)]);
    return Value(out);
  }
  if (obj.is_string() && key.is_string()) return method(obj, key.as_string());
  return Value();
}

struct Attr : Expr {
  ExprPtr obj;
  std::string name;
  Value eval(Context& ctx) const override { return attribute(obj->eval(ctx), name); }
};

struct Index : Expr {
  ExprPtr obj, key;
  Value eval(Context& ctx) const override { return subscript(obj->eval(ctx), key->eval(ctx)); }
};

struct Slice : Expr {
  ExprPtr obj, start, stop, step;
  Value eval(Context& ctx) const override {
    const Value v = obj->eval(ctx);
    int64_t st = step ? step->eval(ctx).as_int() : 1;
    if (st == 0) fail("slice step cannot be zero");
    if (st == std::numeric_limits<int64_t>::min()) st = -std::numeric_limits<int64_t>::max();  // the same slice
    // The positions b, b + st, ... before e, counted first so no index overflows.
    const auto positions = [&](int64_t b, int64_t e) {
      std::vector<size_t> out;
      const int64_t count = st > 0 ? (b < e ? (e - b - 1) / st + 1 : 0) : (b > e ? (b - e - 1) / -st + 1 : 0);
      for (int64_t k = 0; k < count; ++k) out.push_back(static_cast<size_t>(b + k * st));
      return out;
    };
    // Python's slice over n items.
    const auto bounds = [&](size_t n, int64_t& b, int64_t& e) {
      const auto clampi = [&](const ExprPtr& x, int64_t dflt, int64_t lo, int64_t hi) {
        if (!x) return dflt;
        const Value xv = x->eval(ctx);
        if (xv.is_none() || xv.is_undefined()) return dflt;
        int64_t i = xv.as_int();
        if (i < 0) i += static_cast<int64_t>(n);
        return std::clamp(i, lo, hi);
      };
      const auto N = static_cast<int64_t>(n);
      if (st > 0) {
        b = clampi(start, 0, 0, N);
        e = clampi(stop, N, 0, N);
      } else {
        b = clampi(start, N - 1, -1, N - 1);
        e = clampi(stop, -1, -1, N - 1);
        if (stop) {
          const Value xv = stop->eval(ctx);
          if (!xv.is_none() && !xv.is_undefined() && xv.as_int() < -N) e = -1;
        }
      }
    };
    if (v.is_array()) {
      int64_t b = 0, e = 0;
      bounds(v.items().size(), b, e);
      Array out;
      for (size_t i : positions(b, e)) out.push_back(v.items()[i]);
      return Value::array(std::move(out));
    }
    if (v.is_string()) {
      const std::vector<char32_t> cps = decode_utf8(v.as_string(), "string");
      int64_t b = 0, e = 0;
      bounds(cps.size(), b, e);
      std::string out;
      for (size_t i : positions(b, e)) append_utf8(out, cps[i]);
      return Value(out);
    }
    return Value();
  }
};

struct Call : Expr {
  ExprPtr fn;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  Value eval(Context& ctx) const override {
    const Value f = fn->eval(ctx);
    std::vector<Value> a;
    for (const auto& e : args) a.push_back(e->eval(ctx));
    std::vector<std::pair<std::string, Value>> k;
    for (const auto& [n, e] : kwargs) k.emplace_back(n, e->eval(ctx));
    if (f.is_undefined()) fail("calling an undefined function");
    return call_value(f, std::move(a), std::move(k));
  }
};

Value kwarg(const std::vector<std::pair<std::string, Value>>& kwargs, const std::string& name) {
  for (const auto& [k, v] : kwargs) {
    if (k == name) return v;
  }
  return Value();
}

int64_t length_of(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(decode_utf8(v.as_string(), "string").size());
  if (v.is_array()) return static_cast<int64_t>(v.items().size());
  if (v.is_object()) return static_cast<int64_t>(v.members().size());
  return 0;
}

Array iterate(const Value& v) {
  if (v.is_array()) return v.items();
  if (v.is_object()) {
    Array keys;
    for (const auto& [k, x] : v.members()) keys.emplace_back(k);
    return keys;
  }
  if (v.is_string()) {
    Array chars;
    for (char32_t c : decode_utf8(v.as_string(), "string")) {
      std::string s;
      append_utf8(s, c);
      chars.emplace_back(s);
    }
    return chars;
  }
  if (v.is_undefined() || v.is_none()) return {};
  fail("cannot iterate over " + v.str());
}

bool run_test(const std::string& name, const Value& v, const std::vector<Value>& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind() == K::kInt;
  if (name == "float") return v.kind() == K::kFloat;
  if (name == "boolean") return v.kind() == K::kBool;
  if (name == "true") return v.kind() == K::kBool && v.as_bool();
  if (name == "false") return v.kind() == K::kBool && !v.as_bool();
  if (name == "mapping") return v.is_object();
  if (name == "sequence" || name == "iterable") return v.is_array() || v.is_string() || v.is_object();
  if (name == "callable") return v.kind() == K::kFunction;
  if (name == "odd") return v.is_number() && v.as_int() % 2 != 0;
  if (name == "even") return v.is_number() && v.as_int() % 2 == 0;
  if (name == "divisibleby") {
    if (args.empty() || args[0].as_int() == 0) return false;
    return args[0].as_int() == -1 || v.as_int() % args[0].as_int() == 0;
  }
  if (name == "equalto" || name == "eq" || name == "sameas") return !args.empty() && v.equals(args[0]);
  if (name == "ne") return args.empty() || !v.equals(args[0]);
  if (name == "lower") return v.is_string() && lower(v.as_string()) == v.as_string();
  if (name == "upper") return v.is_string() && upper(v.as_string()) == v.as_string();
  if (name == "in") {
    if (args.empty()) return false;
    const Value& c = args[0];
    if (c.is_string()) return c.as_string().find(v.str()) != std::string::npos;
    if (c.is_array()) return std::any_of(c.items().begin(), c.items().end(), [&](const Value& x) { return x.equals(v); });
    if (c.is_object()) return !c.get(v.str()).is_undefined();
    return false;
  }
  fail("unknown test '" + name + "'");
}

Value apply_filter(const std::string& name, const Value& v, std::vector<Value>& args,
                   std::vector<std::pair<std::string, Value>>& kwargs) {
  charge(v.is_array() ? static_cast<int64_t>(v.items().size()) : v.is_object() ? static_cast<int64_t>(v.members().size()) : 1);
  if (name == "trim") return Value(strip_chars(v.str(), arg_string(args, 0), true, true));
  if (name == "length" || name == "count") return Value(length_of(v));
  if (name == "upper") return Value(upper(v.str()));
  if (name == "lower") return Value(lower(v.str()));
  if (name == "title") return Value(title_words(v.str()));
  if (name == "capitalize") return Value(capitalize(v.str()));
  if (name == "string") return Value(v.str());
  if (name == "safe" || name == "e" || name == "escape" || (name == "list" && v.is_array())) return v;
  if (name == "list") return Value::array(iterate(v));
  if (name == "int") {
    if (v.is_number()) return Value(static_cast<int64_t>(v.as_number()));
    try {
      return Value(static_cast<int64_t>(std::stoll(v.str())));
    } catch (const std::exception&) {
      return Value(int64_t(0));
    }
  }
  if (name == "float") {
    if (v.is_number()) return Value(v.as_number());
    try {
      return Value(std::stod(v.str()));
    } catch (const std::exception&) {
      return Value(0.0);
    }
  }
  if (name == "abs") {
    if (v.kind() != Value::Kind::kInt) return Value(std::fabs(v.as_number()));
    if (v.as_int() == std::numeric_limits<int64_t>::min()) fail("integer overflow in abs");
    return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
  }
  if (name == "default" || name == "d") {
    const bool boolean = (args.size() > 1 && args[1].truthy()) || kwarg(kwargs, "boolean").truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return args.empty() ? Value("") : args[0];
    return v;
  }
  if (name == "first") {
    const Array a = iterate(v);
    return a.empty() ? Value() : a.front();
  }
  if (name == "last") {
    const Array a = iterate(v);
    return a.empty() ? Value() : a.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<char32_t> cps = decode_utf8(v.as_string(), "string");
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) append_utf8(out, *it);
      return Value(out);
    }
    Array a = iterate(v);
    std::reverse(a.begin(), a.end());
    return Value::array(std::move(a));
  }
  if (name == "join") {
    std::string sep = arg_string(args, 0);
    if (sep.empty()) sep = kwarg(kwargs, "d").str();
    const std::string attr = kwarg(kwargs, "attribute").str();
    std::string out;
    const Array a = iterate(v);
    for (size_t i = 0; i < a.size(); ++i) out += (i ? sep : "") + (attr.empty() ? a[i] : attribute(a[i], attr)).str();
    return Value(out);
  }
  if (name == "tojson") {
    const Value indent = args.empty() ? kwarg(kwargs, "indent") : args[0];
    const int64_t width = indent.is_number() ? indent.as_int() : -1;
    if (width > 100) fail("tojson indent wider than 100");
    return Value(v.to_json(width < 0 ? -1 : static_cast<int>(width)));
  }
  if (name == "items") return method(v, "items").is_undefined() ? Value::array() : call_value(method(v, "items"), {}, {});
  if (name == "replace") return Value(replace_all(v.str(), arg_string(args, 0), arg_string(args, 1)));
  if (name == "round") {
    const int64_t digits = args.empty() ? 0 : args[0].as_int();
    const double scale = std::pow(10.0, static_cast<double>(digits));
    return Value(std::round(v.as_number() * scale) / scale);
  }
  if (name == "map") {
    const std::string attr = kwarg(kwargs, "attribute").str();
    Array out;
    for (const Value& x : iterate(v)) {
      if (!attr.empty()) {
        out.push_back(attribute(x, attr));
      } else {
        std::vector<Value> none;
        std::vector<std::pair<std::string, Value>> nokw;
        out.push_back(apply_filter(arg_string(args, 0), x, none, nokw));
      }
    }
    return Value::array(std::move(out));
  }
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    const bool by_attr = name.ends_with("attr");
    const bool keep = name.starts_with("select");
    Array out;
    for (const Value& x : iterate(v)) {
      size_t next = 0;
      Value subject = x;
      if (by_attr) subject = attribute(x, arg_string(args, next++));
      bool pass;
      if (next < args.size()) {
        const std::vector<Value> rest(args.begin() + static_cast<std::ptrdiff_t>(next) + 1, args.end());
        pass = run_test(args[next].str(), subject, rest);
      } else {
        pass = subject.truthy();
      }
      if (pass == keep) out.push_back(x);
    }
    return Value::array(std::move(out));
  }
  if (name == "unique") {
    Array out;
    for (const Value& x : iterate(v)) {
      charge(static_cast<int64_t>(out.size()));
      if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return y.equals(x); })) out.push_back(x);
    }
    return Value::array(std::move(out));
  }
  if (name == "indent") {
    const int64_t width = args.empty() ? 4 : args[0].as_int();
    if (width > 1000) fail("indent wider than 1000");
    const bool first = (args.size() > 1 && args[1].truthy()) || kwarg(kwargs, "first").truthy();
    const std::string pad(static_cast<size_t>(std::max<int64_t>(width, 0)), ' ');
    const std::string s = v.str();
    std::string out;
    size_t line = 0;
    for (size_t pos = 0; pos <= s.size();) {
      size_t eol = s.find('\n', pos);
      if (eol == std::string::npos) eol = s.size();
      const std::string l = s.substr(pos, eol - pos);
      if ((line > 0 || first) && !l.empty()) out += pad;
      out += l;
      if (eol < s.size()) out += '\n';
      pos = eol + 1;
      ++line;
    }
    return Value(out);
  }
  fail("unknown filter '" + name + "'");
}

struct Filter : Expr {
  ExprPtr value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  Value eval(Context& ctx) const override {
    const Value v = value->eval(ctx);
    std::vector<Value> a;
    for (const auto& e : args) a.push_back(e->eval(ctx));
    std::vector<std::pair<std::string, Value>> k;
    for (const auto& [n, e] : kwargs) k.emplace_back(n, e->eval(ctx));
    return apply_filter(name, v, a, k);
  }
};

struct Test : Expr {
  ExprPtr value;
  std::string name;
  std::vector<ExprPtr> args;
  bool negate = false;
  Value eval(Context& ctx) const override {
    const Value v = value->eval(ctx);
    std::vector<Value> a;
    for (const auto& e : args) a.push_back(e->eval(ctx));
    return Value(run_test(name, v, a) != negate);
  }
};

struct Unary : Expr {
  std::string op;
  ExprPtr x;
  Value eval(Context& ctx) const override {
    const Value v = x->eval(ctx);
    if (op == "not") return Value(!v.truthy());
    if (!v.is_number()) fail("unary " + op + " of a non-number");
    if (op == "-") {
      if (v.kind() != Value::Kind::kInt) return Value(-v.as_number());
      if (v.as_int() == std::numeric_limits<int64_t>::min()) fail("integer overflow in '-'");
      return Value(-v.as_int());
    }
    return v;
  }
};

bool contains(const Value& container, const Value& item) { return run_test("in", item, {container}); }

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string x = a.str(), y = b.str();
    check_text(x.size() + y.size());
    return Value(x + y);
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      check_text(a.as_string().size() + b.as_string().size());
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_array() && b.is_array()) {
      charge(static_cast<int64_t>(a.items().size() + b.items().size()));
      Array out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return Value::array(std::move(out));
    }
  }
  if (op == "*" && a.is_string() && b.kind() == Value::Kind::kInt) {
    if (b.as_int() > 0 && !a.as_string().empty() &&
        static_cast<uint64_t>(b.as_int()) > (uint64_t(64) << 20) / a.as_string().size()) {
      fail("a string repeated past 64 MiB");
    }
    std::string out;
    for (int64_t i = 0; i < b.as_int(); ++i) out += a.as_string();
    return Value(out);
  }
  const auto num = [](const Value& v) { return v.is_number() || v.kind() == Value::Kind::kBool; };
  if (!num(a) || !num(b)) fail("cannot apply '" + op + "' to " + a.repr() + " and " + b.repr());
  const auto as_i = [](const Value& v) { return v.kind() == Value::Kind::kBool ? int64_t(v.as_bool()) : v.as_int(); };
  const auto as_f = [](const Value& v) { return v.kind() == Value::Kind::kBool ? double(v.as_bool()) : v.as_number(); };
  const bool ints = a.kind() != Value::Kind::kFloat && b.kind() != Value::Kind::kFloat;
  if (op == "/") {
    if (as_f(b) == 0) fail("division by zero");
    return Value(as_f(a) / as_f(b));
  }
  if (ints) {
    const int64_t x = as_i(a), y = as_i(b);
    int64_t r = 0;
    const auto overflow = [&] { fail("integer overflow in '" + op + "'"); };
    if (op == "+") return __builtin_add_overflow(x, y, &r) ? (overflow(), Value()) : Value(r);
    if (op == "-") return __builtin_sub_overflow(x, y, &r) ? (overflow(), Value()) : Value(r);
    if (op == "*") return __builtin_mul_overflow(x, y, &r) ? (overflow(), Value()) : Value(r);
    if (op == "//" || op == "%") {
      if (y == 0) fail("division by zero");
      if (y == -1) {  // INT64_MIN / -1 overflows (and traps)
        if (op == "%") return Value(int64_t(0));
        if (x == std::numeric_limits<int64_t>::min()) overflow();
        return Value(-x);
      }
      int64_t q = x / y;
      r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;  // Python floors
      return Value(op == "//" ? q : r);
    }
    if (op == "**") {
      if (y < 0) return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
      int64_t result = 1;
      for (int64_t k = 0; k < y; ++k) {
        if (__builtin_mul_overflow(result, x, &result)) overflow();
        if (result == 0 || result == 1) break;  // 0 and 1 stay; -1 alternates below
        if (result == -1) {
          result = (y - k - 1) % 2 == 0 ? -1 : 1;
          break;
        }
      }
      return Value(result);
    }
  }
  const double x = as_f(a), y = as_f(b);
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "//") return Value(std::floor(x / y));
  if (op == "%") return Value(x - y * std::floor(x / y));
  if (op == "**") return Value(std::pow(x, y));
  fail("unknown operator " + op);
}

struct Binary : Expr {
  std::string op;
  ExprPtr a, b;
  Value eval(Context& ctx) const override {
    if (op == "and") {
      Value x = a->eval(ctx);
      return x.truthy() ? b->eval(ctx) : x;
    }
    if (op == "or") {
      Value x = a->eval(ctx);
      return x.truthy() ? x : b->eval(ctx);
    }
    const Value x = a->eval(ctx), y = b->eval(ctx);
    if (op == "==") return Value(x.equals(y));
    if (op == "!=") return Value(!x.equals(y));
    if (op == "in") return Value(contains(y, x));
    if (op == "not in") return Value(!contains(y, x));
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c;
      if (x.is_string() && y.is_string()) {
        c = x.as_string().compare(y.as_string());
      } else if ((x.is_number() || x.kind() == Value::Kind::kBool) && (y.is_number() || y.kind() == Value::Kind::kBool)) {
        const double p = x.kind() == Value::Kind::kBool ? x.as_bool() : x.as_number();
        const double q = y.kind() == Value::Kind::kBool ? y.as_bool() : y.as_number();
        c = p < q ? -1 : p > q ? 1 : 0;
      } else {
        fail("cannot compare " + x.repr() + " and " + y.repr());
      }
      if (op == "<") return Value(c < 0);
      if (op == ">") return Value(c > 0);
      if (op == "<=") return Value(c <= 0);
      return Value(c >= 0);
    }
    return arithmetic(op, x, y);
  }
};

struct Ternary : Expr {
  ExprPtr cond, yes, no;
  Value eval(Context& ctx) const override {
    if (cond->eval(ctx).truthy()) return yes->eval(ctx);
    return no ? no->eval(ctx) : Value();
  }
};

// ---------------------------------------------------------------------------
// Parser

class Parser {
 public:
  Parser(const std::vector<Token>& t) : t_(t) {}
  const Token& peek(size_t k = 0) const { return t_[std::min(pos_ + k, t_.size() - 1)]; }
  bool at_end() const { return peek().kind == Tok::kEnd; }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).kind == Tok::kOp && peek(k).text == op; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).kind == Tok::kName && peek(k).text == n; }
  const Token& next() { return t_[std::min(pos_++, t_.size() - 1)]; }
  [[noreturn]] void error(const std::string& what) const {
    fail(what + " (line " + std::to_string(peek().line) + ")");
  }
  void expect_op(const char* op) {
    if (!is_op(op)) error(std::string("expected '") + op + "', found '" + peek().text + "'");
    ++pos_;
  }
  std::string expect_name() {
    if (peek().kind != Tok::kName) error("expected a name, found '" + peek().text + "'");
    return next().text;
  }
  void expect_end() {
    if (!at_end()) error("unexpected '" + peek().text + "'");
  }

  // expression := ternary
  ExprPtr expression() {
    struct Depth {
      int& d;
      explicit Depth(int& x) : d(x) {
        if (++d > 200) fail("an expression nested more than 200 deep");
      }
      ~Depth() { --d; }
    } depth(depth_);
    ExprPtr x = or_expr();
    if (is_name("if")) {
      ++pos_;
      auto t = std::make_unique<Ternary>();
      t->yes = std::move(x);
      t->cond = or_expr();
      if (is_name("else")) {
        ++pos_;
        t->no = expression();
      }
      return t;
    }
    return x;
  }

  // for's iterable: `xs if cond` is the loop's filter, not a ternary.
  ExprPtr for_iterable(ExprPtr& filter) {
    ExprPtr x = or_expr();
    if (is_name("if")) {
      ++pos_;
      filter = or_expr();
    }
    return x;
  }

  // A name list or expression tuple without brackets, for `for a, b in`.
  std::vector<std::string> target_names() {
    std::vector<std::string> names = {expect_name()};
    while (is_op(",")) {
      ++pos_;
      names.push_back(expect_name());
    }
    return names;
  }

 private:
  ExprPtr binary(std::string op, ExprPtr a, ExprPtr b) {
    count_op();
    auto n = std::make_unique<Binary>();
    n->op = std::move(op);
    n->a = std::move(a);
    n->b = std::move(b);
    return n;
  }
  ExprPtr or_expr() {
    ExprPtr x = and_expr();
    while (is_name("or")) {
      ++pos_;
      x = binary("or", std::move(x), and_expr());
    }
    return x;
  }
  ExprPtr and_expr() {
    ExprPtr x = not_expr();
    while (is_name("and")) {
      ++pos_;
      x = binary("and", std::move(x), not_expr());
    }
    return x;
  }
  ExprPtr not_expr() {
    if (is_name("not")) {
      if (++depth_ > 400) fail("an expression nested more than 200 deep");
      ++pos_;
      auto u = std::make_unique<Unary>();
      u->op = "not";
      u->x = not_expr();
      --depth_;
      return u;
    }
    return comparison();
  }
  ExprPtr comparison() {
    ExprPtr x = additive();
    while (true) {
      if (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">=")) {
        const std::string op = next().text;
        x = binary(op, std::move(x), additive());
      } else if (is_name("in")) {
        ++pos_;
        x = binary("in", std::move(x), additive());
      } else if (is_name("not") && is_name("in", 1)) {
        pos_ += 2;
        x = binary("not in", std::move(x), additive());
      } else if (is_name("is")) {
        ++pos_;
        auto t = std::make_unique<Test>();
        if (is_name("not")) {
          ++pos_;
          t->negate = true;
        }
        t->value = std::move(x);
        if (peek().kind != Tok::kName) error("expected a test name");
        t->name = next().text;
        if (is_op("(")) {
          ++pos_;
          while (!is_op(")")) {
            t->args.push_back(expression());
            if (!is_op(")")) expect_op(",");
          }
          ++pos_;
        } else if (!at_end() && (peek().kind == Tok::kString || peek().kind == Tok::kInt || peek().kind == Tok::kFloat ||
                                 (peek().kind == Tok::kName && !is_name("and") && !is_name("or") && !is_name("if") &&
                                  !is_name("else") && !is_name("in") && !is_name("is") && !is_name("not")))) {
          t->args.push_back(primary_postfix());  // `x is divisibleby 3`, `x is sameas none`
        }
        x = std::move(t);
      } else {
        return x;
      }
    }
  }
  // Jinja's precedence: + - over ~ over * / // % over ** over unary signs,
  // whose operand is primary.postfix; filters then apply to the signed value.
  ExprPtr additive() {
    ExprPtr x = concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      x = binary(op, std::move(x), concat());
    }
    return x;
  }
  ExprPtr concat() {
    ExprPtr x = multiplicative();
    while (is_op("~")) {
      ++pos_;
      x = binary("~", std::move(x), multiplicative());
    }
    return x;
  }
  ExprPtr multiplicative() {
    ExprPtr x = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      x = binary(op, std::move(x), power());
    }
    return x;
  }
  ExprPtr power() {
    ExprPtr x = unary(true);
    while (is_op("**")) {
      ++pos_;
      x = binary("**", std::move(x), unary(true));
    }
    return x;
  }
  ExprPtr unary(bool with_filter) {
    ExprPtr x;
    if (is_op("-") || is_op("+")) {
      if (++depth_ > 400) fail("an expression nested more than 200 deep");
      auto u = std::make_unique<Unary>();
      u->op = next().text;
      u->x = unary(false);
      --depth_;
      x = std::move(u);
    } else {
      x = primary_postfix();
    }
    if (!with_filter) return x;
    while (is_op("|")) {
      ++pos_;
      count_op();
      auto f = std::make_unique<Filter>();
      f->value = std::move(x);
      f->name = expect_name();
      if (is_op("(")) call_args(f->args, f->kwargs);
      x = std::move(f);
    }
    return x;
  }
  // Long chains (1 + 1 + ..., a.b.b.b..., x|f|f|...) make deep trees: bounded,
  // so evaluating one cannot exhaust the stack.
  void count_op() {
    if (++ops_ > 1000) fail("an expression of more than 1000 operations");
  }
  void call_args(std::vector<ExprPtr>& args, std::vector<std::pair<std::string, ExprPtr>>& kwargs) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().kind == Tok::kName && is_op("=", 1)) {
        std::string name = next().text;
        ++pos_;
        kwargs.emplace_back(std::move(name), expression());
      } else {
        args.push_back(expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    ++pos_;
  }
  ExprPtr primary_postfix() {
    ExprPtr x = primary();
    while (true) {
      if (is_op(".") || is_op("[") || is_op("(")) count_op();
      if (is_op(".")) {
        ++pos_;
        auto a = std::make_unique<Attr>();
        a->obj = std::move(x);
        a->name = peek().kind == Tok::kInt ? next().text : expect_name();
        x = std::move(a);
      } else if (is_op("[")) {
        ++pos_;
        ExprPtr parts[3];
        int colons = 0;
        while (!is_op("]")) {
          if (is_op(":")) {
            ++pos_;
            if (++colons > 2) error("a slice has at most two ':'");
            continue;
          }
          parts[colons] = expression();
        }
        ++pos_;
        if (colons == 0) {
          auto i = std::make_unique<Index>();
          i->obj = std::move(x);
          i->key = std::move(parts[0]);
          if (!i->key) error("empty subscript");
          x = std::move(i);
        } else {
          auto s = std::make_unique<Slice>();
          s->obj = std::move(x);
          s->start = std::move(parts[0]);
          s->stop = std::move(parts[1]);
          s->step = std::move(parts[2]);
          x = std::move(s);
        }
      } else if (is_op("(")) {
        auto c = std::make_unique<Call>();
        c->fn = std::move(x);
        call_args(c->args, c->kwargs);
        x = std::move(c);
      } else {
        return x;
      }
    }
  }
  ExprPtr primary() {
    const Token& t = next();
    switch (t.kind) {
      case Tok::kString: {
        std::string s = t.text;
        while (peek().kind == Tok::kString) s += next().text;  // adjacent literals join, as in Python
        return std::make_unique<Literal>(Value(s));
      }
      case Tok::kInt:
      case Tok::kFloat:
        try {
          if (t.kind == Tok::kInt) return std::make_unique<Literal>(Value(static_cast<int64_t>(std::stoll(t.text))));
          return std::make_unique<Literal>(Value(std::stod(t.text)));
        } catch (const std::exception&) {
          error("the number " + t.text + " is out of range");
        }
      case Tok::kName:
        if (t.text == "true" || t.text == "True") return std::make_unique<Literal>(Value(true));
        if (t.text == "false" || t.text == "False") return std::make_unique<Literal>(Value(false));
        if (t.text == "none" || t.text == "None") return std::make_unique<Literal>(Value::none());
        return std::make_unique<Name>(t.text);
      case Tok::kOp:
        if (t.text == "(") {
          ExprPtr x = expression();
          if (is_op(",")) {  // a tuple: a list for our purposes
            auto l = std::make_unique<ListExpr>();
            l->items.push_back(std::move(x));
            while (is_op(",")) {
              ++pos_;
              if (is_op(")")) break;
              l->items.push_back(expression());
            }
            x = std::move(l);
          }
          expect_op(")");
          return x;
        }
        if (t.text == "[") {
          auto l = std::make_unique<ListExpr>();
          while (!is_op("]")) {
            l->items.push_back(expression());
            if (!is_op("]")) expect_op(",");
          }
          ++pos_;
          return l;
        }
        if (t.text == "{") {
          auto d = std::make_unique<DictExpr>();
          while (!is_op("}")) {
            ExprPtr k = expression();
            expect_op(":");
            d->items.emplace_back(std::move(k), expression());
            if (!is_op("}")) expect_op(",");
          }
          ++pos_;
          return d;
        }
        [[fallthrough]];
      default:
        --pos_;
        error("unexpected '" + t.text + "'");
    }
  }

  const std::vector<Token>& t_;
  size_t pos_ = 0;
  int depth_ = 0, ops_ = 0;
};

// ---------------------------------------------------------------------------
// Statements

struct TextNode : Node {
  std::string text;
  void render(Context&, std::string& out) const override { out += text; }
};

struct OutputNode : Node {
  ExprPtr expr;
  void render(Context& ctx, std::string& out) const override { out += expr->eval(ctx).str(); }
};

void render_body(const Body& body, Context& ctx, std::string& out) {
  for (const auto& n : body) {
    ctx.step();
    n->render(ctx, out);
    Context::check_size(out);
  }
}

struct IfNode : Node {
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body otherwise;
  void render(Context& ctx, std::string& out) const override {
    for (const auto& [cond, body] : branches) {
      if (cond->eval(ctx).truthy()) {
        render_body(body, ctx, out);
        return;
      }
    }
    render_body(otherwise, ctx, out);
  }
};

struct ForNode : Node {
  std::vector<std::string> targets;
  ExprPtr iterable, filter;
  Body body, otherwise;
  void render(Context& ctx, std::string& out) const override {
    Array all = iterate(iterable->eval(ctx));
    Array items;
    ctx.push();
    for (Value& v : all) {
      if (filter) {
        bind(ctx, v);
        if (!filter->eval(ctx).truthy()) continue;
      }
      items.push_back(std::move(v));
    }
    ctx.pop();
    if (items.empty()) {
      render_body(otherwise, ctx, out);
      return;
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      ctx.step();
      ctx.push();
      Value loop = Value::object({{"index", Value(i + 1)}, {"index0", Value(i)}, {"revindex", Value(n - i)},
                                  {"revindex0", Value(n - i - 1)}, {"first", Value(i == 0)}, {"last", Value(i == n - 1)},
                                  {"length", Value(n)}});
      if (i > 0) loop.set("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.set("nextitem", items[static_cast<size_t>(i + 1)]);
      ctx.assign("loop", loop);
      bind(ctx, items[static_cast<size_t>(i)]);
      try {
        render_body(body, ctx, out);
      } catch (const LoopControl& c) {
        ctx.pop();
        if (c.is_break) break;
        continue;
      }
      ctx.pop();
    }
  }
  void bind(Context& ctx, const Value& v) const {
    if (targets.size() == 1) {
      ctx.assign(targets[0], v);
      return;
    }
    const Array parts = iterate(v);
    for (size_t k = 0; k < targets.size(); ++k) ctx.assign(targets[k], k < parts.size() ? parts[k] : Value());
  }
};

struct SetNode : Node {
  std::vector<std::string> names;  // one name, or several unpacked
  std::string attr;                // `set ns.attr = ...`
  ExprPtr expr;
  Body block;                      // `{% set x %}...{% endset %}`
  void render(Context& ctx, std::string&) const override {
    Value v;
    if (expr) {
      v = expr->eval(ctx);
    } else {
      std::string text;
      render_body(block, ctx, text);
      v = Value(text);
    }
    if (!attr.empty()) {
      const Value ns = ctx.lookup(names[0]);
      if (!ns.is_namespace()) fail("cannot set '" + attr + "' of " + names[0] + ", which is not a namespace");
      if (v.holds(ns)) fail("a value cannot hold itself");
      if (v.kind() == Value::Kind::kFunction) fail("a namespace holds values, not functions");
      ns.set(attr, v);
      return;
    }
    if (names.size() == 1) {
      ctx.assign(names[0], v);
      return;
    }
    const Array parts = iterate(v);
    for (size_t k = 0; k < names.size(); ++k) ctx.assign(names[k], k < parts.size() ? parts[k] : Value());
  }
};

struct LoopControlNode : Node {
  bool is_break;
  void render(Context&, std::string&) const override { throw LoopControl{is_break}; }
};

struct MacroNode : Node {
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // with defaults
  Body body;
  void render(Context& ctx, std::string&) const override {
    const MacroNode* self = this;
    Context* outer = &ctx;
    ctx.assign(name, Value::function([self, outer](std::vector<Value>& args, std::vector<std::pair<std::string, Value>>& kwargs) {
      outer->push();
      for (size_t k = 0; k < self->params.size(); ++k) {
        Value v = k < args.size() ? args[k] : kwarg(kwargs, self->params[k].first);
        if (v.is_undefined() && self->params[k].second) v = self->params[k].second->eval(*outer);
        outer->assign(self->params[k].first, v);
      }
      std::string text;
      try {
        render_body(self->body, *outer, text);
      } catch (...) {
        outer->pop();
        throw;
      }
      outer->pop();
      return Value(text);
    }));
  }
};

// Builds the statement tree from the lexed pieces.
class TreeBuilder {
 public:
  explicit TreeBuilder(std::vector<Piece> pieces) : pieces_(std::move(pieces)) {}

  Body parse_all() {
    std::string end;
    Body b = parse_until({}, end);
    return b;
  }

 private:
  // Parses nodes until a statement whose keyword is in `ends`; its keyword goes
  // to `found` and its parser stays positioned after the keyword.
  Body parse_until(const std::vector<std::string>& ends, std::string& found) {
    struct Depth {
      int& d;
      explicit Depth(int& x) : d(x) {
        if (++d > 256) fail("blocks nested more than 256 deep");
      }
      ~Depth() { --d; }
    } depth(depth_);
    Body body;
    while (i_ < pieces_.size()) {
      Piece& p = pieces_[i_++];
      if (p.kind == Piece::Kind::kText) {
        auto t = std::make_unique<TextNode>();
        t->text = p.text;
        body.push_back(std::move(t));
        continue;
      }
      Parser parser(p.tokens);
      if (p.kind == Piece::Kind::kOutput) {
        auto o = std::make_unique<OutputNode>();
        o->expr = parser.expression();
        parser.expect_end();
        body.push_back(std::move(o));
        continue;
      }
      const std::string kw = parser.expect_name();
      if (std::find(ends.begin(), ends.end(), kw) != ends.end()) {
        found = kw;
        current_ = &p;
        parser_pos_ = std::make_unique<Parser>(parser);
        return body;
      }
      if (kw == "if") {
        auto n = std::make_unique<IfNode>();
        ExprPtr cond = parser.expression();
        parser.expect_end();
        while (true) {
          std::string end;
          Body b = parse_until({"elif", "else", "endif"}, end);
          if (end.empty()) parser.error("'if' without 'endif'");
          n->branches.emplace_back(std::move(cond), std::move(b));
          if (end == "elif") {
            cond = parser_pos_->expression();
            parser_pos_->expect_end();
            continue;
          }
          if (end == "else") {
            parser_pos_->expect_end();
            std::string e2;
            n->otherwise = parse_until({"endif"}, e2);
            if (e2.empty()) parser.error("'if' without 'endif'");
          }
          break;
        }
        body.push_back(std::move(n));
      } else if (kw == "for") {
        auto n = std::make_unique<ForNode>();
        n->targets = parser.target_names();
        if (!parser.is_name("in")) parser.error("expected 'in'");
        parser.next();
        n->iterable = parser.for_iterable(n->filter);
        if (parser.is_name("recursive")) parser.next();
        parser.expect_end();
        std::string end;
        n->body = parse_until({"else", "endfor"}, end);
        if (end.empty()) parser.error("'for' without 'endfor'");
        if (end == "else") {
          std::string e2;
          n->otherwise = parse_until({"endfor"}, e2);
          if (e2.empty()) parser.error("'for' without 'endfor'");
        }
        body.push_back(std::move(n));
      } else if (kw == "set") {
        auto n = std::make_unique<SetNode>();
        n->names.push_back(parser.expect_name());
        if (parser.is_op(".")) {
          parser.next();
          n->attr = parser.expect_name();
        }
        while (parser.is_op(",")) {
          parser.next();
          n->names.push_back(parser.expect_name());
        }
        if (parser.is_op("=")) {
          parser.next();
          n->expr = parser.expression();
          parser.expect_end();
        } else {
          parser.expect_end();
          std::string end;
          n->block = parse_until({"endset"}, end);
          if (end.empty()) parser.error("'set' block without 'endset'");
        }
        body.push_back(std::move(n));
      } else if (kw == "macro") {
        auto n = std::make_unique<MacroNode>();
        n->name = parser.expect_name();
        parser.expect_op("(");
        while (!parser.is_op(")")) {
          std::string param = parser.expect_name();
          ExprPtr dflt;
          if (parser.is_op("=")) {
            parser.next();
            dflt = parser.expression();
          }
          n->params.emplace_back(std::move(param), std::move(dflt));
          if (!parser.is_op(")")) parser.expect_op(",");
        }
        parser.next();
        parser.expect_end();
        std::string end;
        n->body = parse_until({"endmacro"}, end);
        if (end.empty()) parser.error("'macro' without 'endmacro'");
        body.push_back(std::move(n));
      } else if (kw == "break" || kw == "continue") {
        auto n = std::make_unique<LoopControlNode>();
        n->is_break = kw == "break";
        body.push_back(std::move(n));
      } else if (kw == "generation" || kw == "endgeneration") {
        // Hugging Face's marker of assistant text for training masks: renders nothing.
      } else {
        parser.error("unknown statement '" + kw + "'");
      }
    }
    found.clear();
    return body;
  }

  std::vector<Piece> pieces_;
  size_t i_ = 0;
  int depth_ = 0;
  const Piece* current_ = nullptr;
  std::unique_ptr<Parser> parser_pos_;
};

// The functions every template sees.
void add_globals(Value& g) {
  using Args = std::vector<Value>;
  using Kwargs = std::vector<std::pair<std::string, Value>>;
  g.set("raise_exception", Value::function([](Args& a, Kwargs&) -> Value { fail(a.empty() ? "error" : a[0].str()); }));
  g.set("range", Value::function([](Args& a, Kwargs&) {
    int64_t start = 0, stop = 0, step = 1;
    if (a.size() == 1) {
      stop = a[0].as_int();
    } else if (a.size() >= 2) {
      start = a[0].as_int();
      stop = a[1].as_int();
      if (a.size() > 2) step = a[2].as_int();
    }
    if (step == 0) fail("range() step cannot be zero");
    // Counted in floating point first: huge bounds or steps cannot overflow.
    const double span = static_cast<double>(stop) - static_cast<double>(start);
    const double count = span / static_cast<double>(step) > 0 ? std::ceil(span / static_cast<double>(step)) : 0.0;
    if (count > 1000000) fail("range() longer than a million");
    Array out;
    for (int64_t k = 0; k < static_cast<int64_t>(count); ++k) out.emplace_back(start + k * step);
    return Value::array(std::move(out));
  }));
  const auto make_dict = [](Args& a, Kwargs& k) {
    Value o = Value::object();
    if (!a.empty() && a[0].is_object()) {
      for (const auto& [key, v] : a[0].members()) o.set(key, v);
    }
    for (const auto& [key, v] : k) o.set(key, v);
    return o;
  };
  g.set("namespace", Value::function([make_dict](Args& a, Kwargs& k) {
    Value d = make_dict(a, k);
    return Value::name_space(d.members());
  }));
  g.set("dict", Value::function(make_dict));
  g.set("strftime_now", Value::function([](Args& a, Kwargs&) {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, arg_string(a, 0, "%Y-%m-%d").c_str(), &tm);
    return Value(std::string(buf, n));
  }));
}

}  // namespace

Template::Template(const std::string& source) {
  try {
    body_ = TreeBuilder(lex(source)).parse_all();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(std::string("parsing failed: ") + e.what());
  }
}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Value& context) const {
  t_work = 0;
  try {
    return render_checked(context);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // std::bad_alloc, std::length_error: still one line
    fail(std::string("rendering failed: ") + e.what());
  }
}

std::string Template::render_checked(const Value& context) const {
  Context ctx(context.is_object() ? context : Value::object());
  add_globals(ctx.globals());
  ctx.push();  // the template's own variables
  std::string out;
  try {
    render_body(body_, ctx, out);
  } catch (const LoopControl&) {
    fail("'break' or 'continue' outside a loop");
  }
  return out;
}

}  // namespace gpt::jinja
