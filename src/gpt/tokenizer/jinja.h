// The part of Jinja that chat templates use (Hugging Face's apply_chat_template:
// jinja2 with trim_blocks and lstrip_blocks, its raise_exception, tojson and
// strftime_now): {{ expressions }}, {% if / for / set / macro %} with loop
// variables, break/continue and namespace(), Python's string and dict methods,
// Jinja's common filters and tests. Values behave as Python's: lists and dicts
// are shared by reference, undefined names are falsy and print as nothing.
//
// No C++ Jinja engine is packaged in Debian; this one is written against the
// templates Llama 2/3, Mistral, Zephyr/TinyLlama, Qwen2/3, Gemma and ChatML ship,
// and checked against npm's @huggingface/jinja (tests/js/tokenizer).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gpt::jinja {

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // insertion-ordered, as Python's dict
using Function = std::function<Value(std::vector<Value>& args, std::vector<std::pair<std::string, Value>>& kwargs)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };
  Value() = default;
  static Value none();
  Value(bool b);                // NOLINT: implicit, as Python literals
  Value(int64_t i);             // NOLINT
  Value(int i) : Value(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double f);              // NOLINT
  Value(std::string s);         // NOLINT
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  static Value array(Array a = {});
  static Value object(Object o = {});
  // A namespace(): the only dict `{% set ns.attr = ... %}` may change.
  static Value name_space(Object o = {});
  bool is_namespace() const { return is_namespace_; }
  static Value function(Function f);
  static Value from_json(const nlohmann::json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool truthy() const;

  bool as_bool() const { return b_; }
  // Floats truncate toward zero, as Python's int(); booleans are 0 or 1.
  int64_t as_int() const;
  double as_number() const { return kind_ == Kind::kInt ? static_cast<double>(i_) : f_; }
  const std::string& as_string() const { return s_; }
  Array& items() const { return *a_; }
  Object& members() const { return *o_; }
  const Function& call() const { return *fn_; }
  // A dict's value for `key`, or undefined.
  Value get(const std::string& key) const;
  void set(const std::string& key, Value v) const;

  // What {{ value }} prints (Python's str(): True, None, ['a', 1]).
  std::string str() const;
  // Python's repr() (strings quoted).
  std::string repr() const;
  // JSON as Python's json.dumps(ensure_ascii=False) writes it.
  std::string to_json(int indent = -1, int depth = 0) const;
  bool equals(const Value& other) const;
  // Whether this value is `other` (the same list or dict) or holds it, at any depth.
  bool holds(const Value& other) const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0.0;
  std::string s_;
  std::shared_ptr<Array> a_;
  std::shared_ptr<Object> o_;
  std::shared_ptr<Function> fn_;
  bool is_namespace_ = false;
};

struct Node;

class Template {
 public:
  // Parses the source; gpt::Error "chat template: ..." naming the line on a syntax error.
  explicit Template(const std::string& source);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  // Renders with `context` (a dict of variables) on top of the globals
  // (raise_exception, range, namespace, strftime_now); gpt::Error on
  // raise_exception or a type error.
  std::string render(const Value& context) const;

 private:
  std::string render_checked(const Value& context) const;
  std::vector<std::unique_ptr<Node>> body_;
};

}  // namespace gpt::jinja
