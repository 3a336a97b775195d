#include "gpt/finetune/chat_data.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gpt/kernels/cross_entropy.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/rng.h"
#include "gpt/util/utf8.h"

namespace gpt {

int add_chat_tokens(std::shared_ptr<GPT>& model, std::unique_ptr<Tokenizer>& tokenizer, const ChatTemplate& chat_template) {
  const int before = tokenizer->vocab_size();
  GPT_CHECK(before <= model->config().vocab_size, "the tokenizer has more tokens than the model has rows");
  tokenizer = tokenizer->with_special_tokens(chat_template.markers());
  const int after = tokenizer->vocab_size();
  if (after == before) return -1;
  if (after > model->config().vocab_size) {
    model = std::make_shared<GPT>(with_vocabulary(*model, after));
  }
  reset_token_rows(*model, before, after);
  return before;
}

Conversation conversation_from_json(const nlohmann::json& j) {
  const nlohmann::json* list = &j;
  if (j.is_object()) {
    const auto it = j.find("messages");
    GPT_CHECK(it != j.end(), "no \"messages\" list");
    list = &*it;
  }
  GPT_CHECK(list->is_array(), "\"messages\" is not a list");
  GPT_CHECK(!list->empty(), "\"messages\" is empty");
  Conversation c;
  for (size_t i = 0; i < list->size(); ++i) {
    const nlohmann::json& m = (*list)[i];
    const std::string where = "message " + std::to_string(i + 1);
    GPT_CHECK(m.is_object(), where + " is not an object");
    const auto role = m.find("role"), content = m.find("content");
    GPT_CHECK(role != m.end() && role->is_string(), where + " has no \"role\" string");
    GPT_CHECK(content != m.end() && content->is_string(), where + " has no \"content\" string");
    ChatMessage msg{role->get<std::string>(), content->get<std::string>()};
    GPT_CHECK(msg.role == "system" || msg.role == "user" || msg.role == "assistant",
              where + " has role '" + msg.role + "' (expected system, user or assistant)");
    if (auto bad = find_invalid_utf8(msg.content)) {
      throw Error(where + "'s content is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
    }
    c.push_back(std::move(msg));
  }
  return c;
}

void for_each_jsonl(const std::filesystem::path& file, const std::function<void(const nlohmann::json&)>& fn,
                    const std::string& what) {
  for_each_jsonl_line(read_text_file(file), file, fn, what);
}

void for_each_jsonl_line(const std::string& text, const std::filesystem::path& file,
                         const std::function<void(const nlohmann::json&)>& fn, const std::string& what) {
  std::istringstream in(text);
  std::string line;
  int64_t number = 0, seen = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      fn(nlohmann::json::parse(line));
      ++seen;
    } catch (const nlohmann::json::exception& e) {
      throw Error(file.string() + ":" + std::to_string(number) + ": not valid JSON (" + e.what() + ")");
    } catch (const Error& e) {
      throw Error(file.string() + ":" + std::to_string(number) + ": " + e.what());
    }
  }
  GPT_CHECK(seen > 0, file.string() + " holds no " + what);
}

std::vector<Conversation> read_chat_jsonl(const std::filesystem::path& file) {
  return parse_chat_jsonl(read_text_file(file), file);
}

std::vector<Conversation> parse_chat_jsonl(const std::string& text, const std::filesystem::path& file) {
  std::vector<Conversation> out;
  for_each_jsonl_line(text, file, [&](const nlohmann::json& j) { out.push_back(conversation_from_json(j)); },
                      "conversations");
  return out;
}

ChatDataset::ChatDataset(const std::vector<Conversation>& chats, const ChatTemplate& chat_template,
                         const Tokenizer& tokenizer, double val_fraction, int64_t block_size, int64_t rows_per_step,
                         uint64_t seed)
    : rows_per_step_(rows_per_step) {
  GPT_CHECK(val_fraction > 0 && val_fraction < 1, "the held-out fraction must be in (0, 1)");
  stats_.conversations = static_cast<int64_t>(chats.size());
  for (size_t i = 0; i < chats.size(); ++i) {
    EncodedChat e;
    try {
      e = chat_template.encode_for_training(chats[i], tokenizer);
    } catch (const Error& err) {
      throw Error("conversation " + std::to_string(i + 1) + ": " + err.what());
    }
    if (static_cast<int64_t>(e.ids.size()) > block_size + 1) {
      ++stats_.truncated;
      e.ids.resize(static_cast<size_t>(block_size + 1));
      e.is_reply.resize(e.ids.size());
    }
    // Inputs are ids[0..n-1), targets ids[1..n) where the assistant wrote them.
    const int64_t n = static_cast<int64_t>(e.ids.size()) - 1;
    int64_t replies = 0;
    for (int64_t t = 0; t < n; ++t) replies += e.is_reply[static_cast<size_t>(t + 1)];
    if (n <= 0 || replies == 0) {
      ++stats_.dropped;
      continue;
    }
    examples_.push_back({x_.size(), n});
    for (int64_t t = 0; t < n; ++t) {
      x_.push_back(e.ids[static_cast<size_t>(t)]);
      y_.push_back(e.is_reply[static_cast<size_t>(t + 1)] ? e.ids[static_cast<size_t>(t + 1)] : kIgnoreTarget);
    }
    stats_.reply_tokens += replies;
  }
  const auto n = static_cast<int64_t>(examples_.size());
  GPT_CHECK(n >= 2, "fine-tuning needs at least 2 usable conversations (one is held out), found " +
                        std::to_string(n) + (stats_.dropped > 0 ? " (" + std::to_string(stats_.dropped) +
                                                                      " had no reply within the context)"
                                                                : ""));
  // The split: a shuffle by the seed, the first share held out.
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  Rng rng(mix64(seed ^ 0x5f7a11d5ull));
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.next_u64() % static_cast<uint64_t>(i + 1))]);
  const int64_t n_val = std::clamp<int64_t>(std::llround(static_cast<double>(n) * val_fraction), 1, n - 1);
  val_.assign(order.begin(), order.begin() + n_val);
  train_.assign(order.begin() + n_val, order.end());
  std::sort(val_.begin(), val_.end());
  std::sort(train_.begin(), train_.end());
  for (int64_t e : train_) train_tokens_ += examples_[static_cast<size_t>(e)].length;
  for (int64_t e : val_) val_tokens_ += examples_[static_cast<size_t>(e)].length;
  stats_.train = static_cast<int64_t>(train_.size());
  stats_.val = n_val;
}

int64_t ChatDataset::fill(const std::vector<int64_t>& examples, int64_t B, int64_t T, int32_t* x, int32_t* y) const {
  int64_t longest = 1;
  for (int64_t e : examples) longest = std::max(longest, examples_[static_cast<size_t>(e)].length);
  const int64_t Tb = std::min(longest, T);
  for (int64_t r = 0; r < B; ++r) {
    int32_t* xr = x + r * Tb;
    int32_t* yr = y + r * Tb;
    int64_t len = 0;
    if (r < static_cast<int64_t>(examples.size())) {
      const Example& ex = examples_[static_cast<size_t>(examples[static_cast<size_t>(r)])];
      len = std::min(ex.length, Tb);
      std::copy_n(x_.data() + ex.offset, len, xr);
      std::copy_n(y_.data() + ex.offset, len, yr);
    }
    // Padding: any token (0) as input, nothing to learn. Causal attention keeps the
    // example's own positions from ever seeing it.
    std::fill(xr + len, xr + Tb, 0);
    std::fill(yr + len, yr + Tb, kIgnoreTarget);
  }
  return Tb;
}

const std::vector<int32_t>& ChatDataset::epoch_order(uint64_t seed, int64_t epoch) const {
  if (epoch != order_epoch_ || seed != order_seed_) {
    const auto n = static_cast<int64_t>(train_.size());
    order_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    Rng rng(mix64(seed ^ mix64(static_cast<uint64_t>(epoch) + 0x9e3779b97f4a7c15ull)));
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(rng.next_u64() % static_cast<uint64_t>(i + 1))]);
    order_epoch_ = epoch;
    order_seed_ = seed;
  }
  return order_;
}

std::vector<int64_t> ChatDataset::pick(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t first_row) const {
  // Global row g of the run: each epoch visits every training example once, in its own shuffled order.
  const std::lock_guard<std::mutex> lock(order_mutex_);
  const auto n = static_cast<int64_t>(train_.size());
  std::vector<int64_t> picked(static_cast<size_t>(B));
  for (int64_t r = 0; r < B; ++r) {
    const int64_t g = step * rows_per_step_ + micro * B + first_row + r;
    const std::vector<int32_t>& order = epoch_order(seed, g / n);
    picked[static_cast<size_t>(r)] = train_[static_cast<size_t>(order[static_cast<size_t>(g % n)])];
  }
  return picked;
}

int64_t ChatDataset::train_batch(uint64_t seed, int64_t step, int64_t micro, int64_t B, int64_t T, int32_t* x,
                                 int32_t* y, int64_t first_row) const {
  return fill(pick(seed, step, micro, B, first_row), B, T, x, y);
}

BatchSource::PackedShape ChatDataset::train_batch_packed(uint64_t seed, int64_t step, int64_t micro, int64_t B,
                                                         int64_t T, int32_t* x, int32_t* y, int32_t* positions,
                                                         int32_t* examples, int64_t first_row) const {
  const std::vector<int64_t> picked = pick(seed, step, micro, B, first_row);
  // First-fit decreasing into rows of a capacity: the longest examples first,
  // each into the first row with room. A batch computes rows x (its fullest
  // row) positions, so the capacity is chosen for the fewest: from the longest
  // example (k = B: no more than padding computes) up to the context, at the
  // total split k ways for every k.
  std::vector<int64_t> by_length(picked.size());
  for (size_t i = 0; i < picked.size(); ++i) by_length[i] = static_cast<int64_t>(i);
  const auto length = [&](int64_t i) {
    return std::min(T, examples_[static_cast<size_t>(picked[static_cast<size_t>(i)])].length);
  };
  // Longest first, ties in batch order (std::sort with the tie broken: the same
  // order as a stable sort, without its temporary buffer).
  std::sort(by_length.begin(), by_length.end(),
            [&](int64_t a, int64_t b) { return length(a) != length(b) ? length(a) > length(b) : a < b; });
  int64_t total = 0;
  for (int64_t i : by_length) total += length(i);
  const int64_t longest = by_length.empty() ? 1 : length(by_length.front());
  std::vector<int64_t> fill_of;               // tokens placed in each row
  std::vector<std::vector<int64_t>> row_of;  // the examples (indices into picked) of each row
  const auto pack = [&](int64_t capacity) {
    fill_of.clear();
    row_of.clear();
    for (int64_t i : by_length) {
      size_t r = 0;
      while (r < fill_of.size() && fill_of[r] + length(i) > capacity) ++r;
      if (r == fill_of.size()) {
        fill_of.push_back(0);
        row_of.emplace_back();
      }
      fill_of[r] += length(i);
      row_of[r].push_back(i);
    }
    return static_cast<int64_t>(fill_of.size()) * *std::max_element(fill_of.begin(), fill_of.end());
  };
  int64_t best_capacity = longest, best_cost = -1;
  for (int64_t k = 1; k <= B; ++k) {
    const int64_t capacity = std::max(longest, (total + k - 1) / k);
    if (capacity > T) continue;
    const int64_t cost = pack(capacity);
    if (best_cost < 0 || cost < best_cost) best_cost = cost, best_capacity = capacity;
  }
  pack(best_capacity);
  PackedShape shape;
  shape.rows = static_cast<int64_t>(fill_of.size());
  shape.T = std::max<int64_t>(1, *std::max_element(fill_of.begin(), fill_of.end()));
  for (int64_t r = 0; r < shape.rows; ++r) {
    int64_t t = r * shape.T;
    for (int64_t i : row_of[static_cast<size_t>(r)]) {
      const Example& ex = examples_[static_cast<size_t>(picked[static_cast<size_t>(i)])];
      const int64_t len = length(i);
      std::copy_n(x_.data() + ex.offset, len, x + t);
      std::copy_n(y_.data() + ex.offset, len, y + t);
      for (int64_t p = 0; p < len; ++p) {
        positions[t + p] = static_cast<int32_t>(p);
        examples[t + p] = static_cast<int32_t>(i);
      }
      t += len;
    }
    // The row's tail: padding, an example of its own that nothing attends to or learns from.
    for (int64_t p = 0; t < (r + 1) * shape.T; ++t, ++p) {
      x[t] = 0;
      y[t] = kIgnoreTarget;
      positions[t] = static_cast<int32_t>(p);
      examples[t] = static_cast<int32_t>((1 << 30) + r);  // rows of their own, apart from every real example's
    }
  }
  return shape;
}

int64_t ChatDataset::val_batch(uint64_t /*seed*/, int64_t index, int64_t B, int64_t T, int32_t* x, int32_t* y) const {
  std::vector<int64_t> picked;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t i = index * B + r;
    if (i < static_cast<int64_t>(val_.size())) picked.push_back(val_[static_cast<size_t>(i)]);
  }
  GPT_CHECK(!picked.empty(), "validation batch " + std::to_string(index) + " is past the held-out conversations");
  return fill(picked, B, T, x, y);
}

}  // namespace gpt
