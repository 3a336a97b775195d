#include "gpt/generation/batch_engine.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "gpt/kernels/float16.h"
#include "gpt/kernels/paged_attention.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

// Sequence::registered once a sequence's later pages may not join the prefix
// cache (its chain left the cache, or the cache was dropped).
constexpr int64_t kRegisterNoMore = std::numeric_limits<int64_t>::max() / 2;

int64_t pool_pages(const InferenceWeights& w, KvCacheType type, const EngineOptions& o) {
  GPT_CHECK(o.page_size > 0, "KV page size must be positive");
  if (o.kv_bytes > 0) return KvPagePool::pages_in(w.config, type, o.kv_bytes, o.page_size);
  return 4 * ((w.config.block_size + o.page_size - 1) / o.page_size);  // four full contexts
}

}  // namespace

BatchedEngine::BatchedEngine(const InferenceWeights& weights, EngineOptions options)
    : w_(weights),
      arch_(&architecture_rules(weights.config.arch)),
      options_(options),
      kv_type_(resolve_kv_cache_type(options.kv_cache, weights)),
      pool_(weights.config, kv_type_, pool_pages(weights, kv_type_, options), options.page_size),
      compute_(options.compute) {
  GPT_CHECK(options.max_step_tokens > 0, "max_step_tokens must be positive");
  cached_children_.assign(static_cast<size_t>(pool_.total_pages()), 0);
  arch_->inference_tables(w_, w_.config.block_size, tables_);
}

int64_t BatchedEngine::add(std::span<const int32_t> prompt, const SequenceOptions& options) {
  const ModelConfig& c = w_.config;
  GPT_CHECK(!prompt.empty(), "a sequence needs a prompt of at least one token");
  GPT_CHECK(static_cast<int64_t>(prompt.size()) <= c.block_size,
            "the prompt is " + std::to_string(prompt.size()) + " tokens but the model's context is " +
                std::to_string(c.block_size));
  GPT_CHECK(options.max_new_tokens > 0,
            "max_new_tokens must be positive, got " + std::to_string(options.max_new_tokens));
  for (int32_t t : prompt) {
    GPT_CHECK(t >= 0 && t < c.vocab_size,
              "token id " + std::to_string(t) + " outside the vocabulary of " + std::to_string(c.vocab_size));
  }
  for (int32_t t : options.stop_tokens) {
    GPT_CHECK(t >= 0 && t < c.vocab_size, "stop token " + std::to_string(t) + " outside the vocabulary");
  }
  Sequence s{{prompt.begin(), prompt.end()}, 0, 0, {}, options, Sampler(options.sampling, options.seed), {}, 0};
  take_cached_prefix(s);
  const int64_t id = next_id_++;
  sequences_.emplace(id, std::move(s));
  return id;
}

size_t BatchedEngine::PageKeyHash::operator()(const PageKey& k) const {
  uint64_t h = 1469598103934665603ull ^ static_cast<uint64_t>(static_cast<uint32_t>(k.parent));
  for (int32_t t : k.tokens) h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ull;  // FNV-1a
  return static_cast<size_t>(h);
}

void BatchedEngine::touch(int32_t page) {
  auto it = idle_at_.find(page);
  if (it == idle_at_.end()) return;
  idle_.erase(it->second);
  idle_at_.erase(it);
}

// The prompt's leading full pages that the cache holds, taken by reference. The
// prompt's last token is always computed: its logits give the first token.
void BatchedEngine::take_cached_prefix(Sequence& s) {
  if (!options_.prefix_cache || s.fed != 0 || !s.pages.empty()) return;
  const int64_t P = pool_.page_size(), usable = (static_cast<int64_t>(s.tokens.size()) - 1) / P;
  PageKey key{-1, {}};
  for (int64_t i = 0; i < usable; ++i) {
    key.tokens.assign(s.tokens.begin() + i * P, s.tokens.begin() + (i + 1) * P);
    auto it = cache_.find(key);
    if (it == cache_.end()) break;
    const int32_t page = it->second;
    pool_.retain(page);
    touch(page);
    s.pages.push_back(page);
    key.parent = page;
  }
  const auto taken = static_cast<int64_t>(s.pages.size());
  s.fed = taken * P;
  s.registered = taken;
  reused_positions_ += taken * P;
}

// Whether an earlier sequence still reading its prompt will fill pages this one
// could take (whole pages of a common prefix): then this one waits for them.
bool BatchedEngine::waits_for_shared_prompt(int64_t id, const Sequence& s) const {
  if (!options_.prefix_cache || s.fed != 0) return false;
  const int64_t P = pool_.page_size(), usable = (static_cast<int64_t>(s.tokens.size()) - 1) / P;
  if (usable == 0) return false;
  for (const auto& [other_id, o] : sequences_) {
    if (other_id >= id) break;
    if (o.generated > 0 || o.fed >= usable * P) continue;  // its prompt is read, or as far as we could share
    const size_t limit = std::min(o.tokens.size(), static_cast<size_t>(usable * P));
    size_t common = 0;
    while (common < limit && o.tokens[common] == s.tokens[common]) ++common;
    if (static_cast<int64_t>(common) / P > o.fed / P) return true;
  }
  return false;
}

// Offers the pages this step filled to the cache. A page joins only if the page
// before it is cached (so every cached chain is whole) and no page with the
// same contents is cached already.
void BatchedEngine::register_full_pages(Sequence& s) {
  if (!options_.prefix_cache) return;
  const int64_t P = pool_.page_size(), full = s.fed / P;
  for (; s.registered < full; ++s.registered) {
    const int64_t i = s.registered;
    const int32_t parent = i > 0 ? s.pages[static_cast<size_t>(i - 1)] : -1;
    const int32_t page = s.pages[static_cast<size_t>(i)];
    if (key_of_.count(page) != 0) continue;  // taken from the cache
    if (parent >= 0 && key_of_.count(parent) == 0) {
      s.registered = kRegisterNoMore;  // its chain left the cache: none after it
      return;
    }
    PageKey key{parent, {s.tokens.begin() + i * P, s.tokens.begin() + (i + 1) * P}};
    if (cache_.count(key) != 0) {  // computed twice (side by side): keep the first
      s.registered = kRegisterNoMore;
      return;
    }
    pool_.retain(page);
    cache_.emplace(key, page);
    key_of_.emplace(page, std::move(key));
    if (parent >= 0) ++cached_children_[static_cast<size_t>(parent)];
  }
}

// A page from the pool; when none is free, the least recently used cached page
// that no sequence holds and no cached page follows is evicted first.
int32_t BatchedEngine::allocate_page() {
  if (pool_.free_pages() == 0) {
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      const int32_t page = *it;
      if (cached_children_[static_cast<size_t>(page)] != 0) continue;
      auto k = key_of_.find(page);
      if (k->second.parent >= 0) --cached_children_[static_cast<size_t>(k->second.parent)];
      cache_.erase(k->second);
      key_of_.erase(k);
      idle_at_.erase(page);
      idle_.erase(it);
      pool_.release(page);
      break;
    }
  }
  return pool_.allocate();
}

void BatchedEngine::drop_prefix_cache() {
  for (const auto& [page, key] : key_of_) pool_.release(page);
  cache_.clear();
  key_of_.clear();
  idle_.clear();
  idle_at_.clear();
  std::fill(cached_children_.begin(), cached_children_.end(), 0);
  for (auto& [id, s] : sequences_) s.registered = kRegisterNoMore;
}

void BatchedEngine::release(Sequence& s) {
  // Last page first: a chain's later pages become the older idle ones, evicted first.
  for (auto it = s.pages.rbegin(); it != s.pages.rend(); ++it) {
    const int32_t page = *it;
    pool_.release(page);
    if (key_of_.count(page) != 0 && pool_.references(page) == 1) idle_at_[page] = idle_.insert(idle_.end(), page);
  }
  s.pages.clear();
}

void BatchedEngine::cancel(int64_t id) {
  auto it = sequences_.find(id);
  GPT_CHECK(it != sequences_.end(), "no sequence with id " + std::to_string(id));
  release(it->second);
  sequences_.erase(it);
}

const BatchedEngine::Sequence& BatchedEngine::find(int64_t id) const {
  auto it = sequences_.find(id);
  GPT_CHECK(it != sequences_.end(), "no sequence with id " + std::to_string(id));
  return it->second;
}

const std::vector<int32_t>& BatchedEngine::tokens(int64_t id) const { return find(id).tokens; }
const std::vector<float>& BatchedEngine::last_logits(int64_t id) const { return find(id).logits; }

std::vector<BatchedEngine::Event> BatchedEngine::step() {
  const ComputeScope scope(compute_);
  std::vector<Event> events;
  if (sequences_.empty()) return events;
  const ModelConfig& c = w_.config;
  const int64_t C = c.n_embd, V = c.vocab_size, P = pool_.page_size();

  // Rows of this step, in the order sequences joined: every running sequence's
  // last token (outside the budget), and chunks of the prompts still being read
  // within the step's row budget.
  struct Work {
    int64_t id;
    Sequence* s;
    int64_t first, n;  // positions first .. first + n - 1
    bool samples;      // its last row ends what the sequence has to read: sample after it
  };
  std::vector<Work> work;
  int64_t budget = options_.max_step_tokens;
  for (auto& [id, s] : sequences_) {
    if (s.fed == 0) {  // not started: pages cached since it joined, or ones it should wait for
      take_cached_prefix(s);
      if (waits_for_shared_prompt(id, s)) continue;
    }
    const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.fed;
    if (pending == 1) {
      work.push_back({id, &s, s.fed, 1, true});  // decoding (or a prompt's last token)
    } else if (budget > 0) {
      const int64_t n = std::min(pending, budget);
      budget -= n;
      work.push_back({id, &s, s.fed, n, n == pending});
    }
  }
  if (work.empty()) return events;

  // Pages for the new positions. When the pool is out of pages: with preemption,
  // the youngest sequence holding pages gives them back and will read its tokens
  // again later (possibly the one asking: it then waits); otherwise, or when the
  // one asking is alone, it is cancelled and the step fails.
  for (size_t i = 0; i < work.size(); ++i) {
    Work& wk = work[i];
    if (wk.n == 0) continue;  // preempted this step
    Sequence& s = *wk.s;
    const int64_t need = (wk.first + wk.n + P - 1) / P;
    while (static_cast<int64_t>(s.pages.size()) < need) {
      if (pool_.free_pages() == 0 && cached_pages() == 0 && options_.preempt_when_full) {
        int64_t victim = -1, holders = 0;  // the youngest sequence holding pages; how many hold any
        for (auto it = sequences_.rbegin(); it != sequences_.rend(); ++it) {
          if (it->second.pages.empty()) continue;
          if (victim < 0) victim = it->first;
          ++holders;
        }
        if (victim >= 0 && victim < wk.id) {  // every holder is older: the one asking waits
          wk.n = 0;
          break;
        }
        // (The one asking, alone with pages, does not fit in the pool at all.)
        if (victim >= 0 && (victim != wk.id || holders > 1)) {
          Sequence& v = sequences_.at(victim);
          release(v);
          v.fed = 0;
          v.registered = 0;
          ++preemptions_;
          for (Work& other : work) {
            if (other.s == &v) other.n = 0;  // not run this step
          }
          if (victim == wk.id) break;
          continue;
        }
      }
      try {
        s.pages.push_back(allocate_page());
      } catch (const Error& e) {
        cancel(wk.id);
        throw Error(std::string(e.what()) + "; sequence " + std::to_string(wk.id) + " was cancelled");
      }
    }
  }
  std::erase_if(work, [](const Work& wk) { return wk.n == 0; });
  if (work.empty()) return events;

  int64_t R = 0, S = 0;
  for (const Work& wk : work) {
    R += wk.n;
    S += wk.samples ? 1 : 0;
  }
  auto grow = [](std::vector<float>& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  };
  grow(x_, R * C);
  grow(ln_, R * C);
  grow(qkv_, R * c.qkv_dim());
  grow(atty_, R * C);
  grow(fch_, R * arch_->mlp_width(c));
  grow(stats_, 2 * R);
  if (row_tokens_.size() < static_cast<size_t>(R)) row_tokens_.resize(static_cast<size_t>(R));
  if (row_positions_.size() < static_cast<size_t>(R)) row_positions_.resize(static_cast<size_t>(R));
  if (queries_.size() < static_cast<size_t>(R)) queries_.resize(static_cast<size_t>(R));
  if (row_of_.size() < static_cast<size_t>(R)) row_of_.resize(static_cast<size_t>(R));

  // Each row's token, sequence and position, then the blocks over all rows.
  int64_t r = 0;
  for (const Work& wk : work) {
    for (int64_t i = 0; i < wk.n; ++i, ++r) {
      const int64_t pos = wk.first + i;
      row_tokens_[static_cast<size_t>(r)] = wk.s->tokens[static_cast<size_t>(pos)];
      queries_[static_cast<size_t>(r)] = {qkv_.data() + r * c.qkv_dim(), atty_.data() + r * C, pos,
                                          wk.s->pages.data()};
      row_of_[static_cast<size_t>(r)] = {wk.s, pos};
      row_positions_[static_cast<size_t>(r)] = static_cast<int32_t>(pos);
    }
  }
  InferenceRows rows{R,           row_positions_.data(), x_.data(), ln_.data(), stats_.data(), qkv_.data(),
                     atty_.data(), fch_.data(),          &tables_,  &quant_scratch_};
  arch_->embed(w_, row_tokens_.data(), rows);
  arch_->blocks(w_, rows, *this);

  // Final norm and LM head for the rows that end what their sequence had to read.
  int64_t k = 0;
  r = 0;
  for (const Work& wk : work) {
    r += wk.n;
    wk.s->fed += wk.n;
    register_full_pages(*wk.s);
    if (!wk.samples) continue;
    std::memcpy(atty_.data() + k * C, x_.data() + (r - 1) * C, sizeof(float) * static_cast<size_t>(C));
    ++k;
  }
  if (S > 0) {
    arch_->norm(c, ln_.data(), stats_.data(), atty_.data(), w_.ln_f_weight, w_.ln_f_bias, S);
    grow(logits_, S * V);
    linear_apply(w_.lm_head, logits_.data(), ln_.data(), S, quant_scratch_);
  }

  // Sample each sequence with its own sampler; finished ones leave at once.
  k = 0;
  for (const Work& wk : work) {
    if (!wk.samples) continue;
    Sequence& s = *wk.s;
    const float* logits = logits_.data() + k * V;
    ++k;
    if (s.options.keep_logits) s.logits.assign(logits, logits + V);
    const int32_t token = s.sampler.sample(logits, V, s.tokens);
    s.tokens.push_back(token);
    ++s.generated;
    FinishReason done = FinishReason::kNone;
    if (std::find(s.options.stop_tokens.begin(), s.options.stop_tokens.end(), token) != s.options.stop_tokens.end()) {
      done = FinishReason::kStopToken;
    } else if (s.generated >= s.options.max_new_tokens) {
      done = FinishReason::kLength;
    } else if (static_cast<int64_t>(s.tokens.size()) > c.block_size) {
      done = FinishReason::kContextFull;  // the new token has no position left to be read at
    }
    events.push_back({wk.id, token, done, s.sampler.probability(token),
                      s.options.top_probs > 0 ? s.sampler.top(s.options.top_probs) : std::vector<TokenProbability>{}});
    if (done != FinishReason::kNone) {
      release(s);
      sequences_.erase(wk.id);
    }
  }
  return events;
}

void BatchedEngine::attend(int64_t l, InferenceRows& rows) {
  const ModelConfig& c = w_.config;
  const int64_t C = c.n_embd, NH = c.n_head, hs = c.head_size(), P = pool_.page_size(), NKV = c.kv_heads(),
                QKV = c.qkv_dim();
  const bool f16 = kv_type_ == KvCacheType::kF16;
  // Key/value head h of a row at (h, slot) of its sequence's page for its position.
  for (int64_t i = 0; i < rows.n; ++i) {
    const auto [s, pos] = row_of_[static_cast<size_t>(i)];
    const int32_t page = s->pages[static_cast<size_t>(pos / P)];
    const int64_t at = (pos % P) * hs;
    if (f16) {
      store_key_value(c, rows.qkv + i * QKV, pool_.keys_f16(page, l) + at, pool_.values_f16(page, l) + at, P * hs);
    } else {
      store_key_value(c, rows.qkv + i * QKV, pool_.keys(page, l) + at, pool_.values(page, l) + at, P * hs);
    }
  }
  PagedKv kv;
  kv.page_size = P;
  kv.float16 = f16;
  kv.page_stride = pool_.page_elements();
  kv.group = NH / NKV;
  if (f16) {
    kv.k_base = pool_.keys_f16(0, l);
    kv.v_base = pool_.values_f16(0, l);
  } else {
    kv.k_base = pool_.keys(0, l);
    kv.v_base = pool_.values(0, l);
  }
  paged_attention(queries_.data(), rows.n, kv, C, NH);
}

}  // namespace gpt
