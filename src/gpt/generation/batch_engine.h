// Many sequences decoded together (continuous batching). Decoding one sequence
// reads every weight once per token; a step of the engine runs the next
// positions of every active sequence at once — prompt chunks of sequences that
// joined and one token of each running one — so the linear layers are one
// product over all those rows and the weights are read once for all of them.
// Attention runs per sequence over its own pages of a shared KV page pool
// (kv_pages.h). Sequences join and leave at any step; a finished or cancelled
// sequence returns its pages at once.
//
// Each sequence has its own sampler settings, seed, penalties and token budget,
// and its tokens do not depend on what else is in the batch (its logits match
// single-sequence decoding up to the rounding of a product over more rows; with
// fp32 weights in panels they are the same bit for bit alone or in any batch).
//
// Shared prefixes (vLLM's automatic prefix caching): every page a sequence fills
// is registered under its tokens and the page before it, and stays cached after
// the sequence leaves, until the pool needs it (least recently used first). A
// new sequence whose prompt starts with cached pages takes them (references,
// not copies) and reads only the rest; one whose prompt shares whole pages with
// a prompt still being read waits for those pages instead of computing them
// twice. Shared pages are full, and sequences only write past what they read,
// so a shared page is never written: the first page that differs is the
// sequence's own (the part of it that was common is recomputed, not copied).
#pragma once
#include <cstdint>
#include <list>
#include <map>
#include <span>
#include <unordered_map>
#include <vector>

#include "gpt/generation/kv_pages.h"
#include "gpt/generation/sampler.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/kernels/paged_attention.h"
#include "gpt/model/arch/architecture.h"
#include "gpt/model/inference_weights.h"

namespace gpt {

struct SequenceOptions {
  SamplingOptions sampling;
  uint64_t seed = 1337;
  int64_t max_new_tokens = 64;       // must be positive
  std::vector<int32_t> stop_tokens;  // ends the sequence when sampled (kept as its last token)
  bool keep_logits = false;          // keep each step's logits (V) for last_logits()
  int top_probs = 0;                 // > 0: each event lists this many most likely tokens
};

enum class FinishReason { kNone, kLength, kStopToken, kContextFull, kCancelled };

struct EngineOptions {
  KvCacheType kv_cache = KvCacheType::kAuto;
  int64_t kv_bytes = 0;            // KV memory budget; 0: four full contexts
  int64_t page_size = 16;          // positions per KV page
  int64_t max_step_tokens = 512;   // prompt rows per step (a prompt longer than that takes several steps)
  bool prefix_cache = true;        // share and keep full pages of common prefixes (above)
  // When the KV pool runs out of pages: false, the sequence that asked is cancelled
  // and step() throws; true (a server), the youngest sequence holding pages gives
  // them back and reads its tokens (prompt and generated) again once pages are
  // free, as vLLM's recompute preemption does: the oldest always progresses, and
  // only a sequence larger than the whole pool fails.
  bool preempt_when_full = false;
  ComputeOptions compute = current_compute_options();
};

// The blocks are the architecture's (model/arch/); the engine is their cache.
class BatchedEngine final : private InferenceCache {
 public:
  // The weights must outlive the engine unless weights.owner keeps them alive.
  explicit BatchedEngine(const InferenceWeights& weights, EngineOptions options = {});

  // A new sequence; returns its id. gpt::Error for an empty prompt, a prompt
  // that fills the context, a token outside the vocabulary or a bad budget.
  int64_t add(std::span<const int32_t> prompt, const SequenceOptions& options);
  // Ends a sequence now and frees its pages. gpt::Error for an unknown id.
  void cancel(int64_t id);

  struct Event {
    int64_t id;
    int32_t token;          // sampled this step
    FinishReason finished;  // kNone while the sequence goes on
    float prob = 0;         // of `token`, in the distribution it was drawn from (Sampler::probability)
    std::vector<TokenProbability> top;  // SequenceOptions::top_probs most likely, before truncation
  };
  // One step of every active sequence; the tokens sampled in it. A sequence whose
  // prompt is not yet fully read produces none. When the KV pool runs out of
  // pages: with preempt_when_full the youngest holders wait (see EngineOptions);
  // otherwise gpt::Error (the sequence that could not get one is cancelled).
  std::vector<Event> step();

  bool idle() const { return sequences_.empty(); }
  int64_t active() const { return static_cast<int64_t>(sequences_.size()); }
  bool contains(int64_t id) const { return sequences_.count(id) != 0; }
  // The tokens of a sequence so far (prompt, then generated); its logits of the
  // last sampled position (with keep_logits).
  const std::vector<int32_t>& tokens(int64_t id) const;
  const std::vector<float>& last_logits(int64_t id) const;

  const KvPagePool& pool() const { return pool_; }
  // Pages held only by the prefix cache (free to take when the pool runs out).
  int64_t cached_pages() const { return static_cast<int64_t>(idle_.size()); }
  // Prompt positions taken from cached pages instead of computed, since the start.
  int64_t reused_positions() const { return reused_positions_; }
  // Sequences that gave their pages back to let older ones go on (preempt_when_full).
  int64_t preemptions() const { return preemptions_; }
  // Empties the prefix cache: its pages go back to the pool unless a sequence holds them.
  void drop_prefix_cache();
  // KV memory of pages that sequences hold (idle cached pages not counted).
  int64_t kv_bytes_in_use() const {
    return (pool_.total_pages() - pool_.free_pages() - cached_pages()) * pool_.bytes_per_page();
  }
  int64_t kv_bytes_reserved() const { return pool_.total_pages() * pool_.bytes_per_page(); }
  const InferenceWeights& weights() const { return w_; }

 private:
  struct Sequence {
    std::vector<int32_t> tokens;  // prompt + generated
    int64_t fed = 0;              // tokens whose keys and values are in the cache
    int64_t generated = 0;
    std::vector<int32_t> pages;
    SequenceOptions options;
    Sampler sampler;
    std::vector<float> logits;
    int64_t registered = 0;  // leading pages offered to the prefix cache
  };
  void release(Sequence& s);
  const Sequence& find(int64_t id) const;
  // InferenceCache: each row's key and value into its sequence's page, then
  // attention over the pages.
  void attend(int64_t layer, InferenceRows& rows) override;
  // Prefix cache: pages by (previous page, tokens); see the comment at the top.
  struct PageKey {
    int32_t parent;  // the page before it in its sequence, -1 for the first
    std::vector<int32_t> tokens;
    bool operator==(const PageKey&) const = default;
  };
  struct PageKeyHash {
    size_t operator()(const PageKey& k) const;
  };
  void take_cached_prefix(Sequence& s);
  bool waits_for_shared_prompt(int64_t id, const Sequence& s) const;
  void register_full_pages(Sequence& s);
  int32_t allocate_page();
  void touch(int32_t page);
  std::unordered_map<PageKey, int32_t, PageKeyHash> cache_;
  std::unordered_map<int32_t, PageKey> key_of_;          // cached page -> its key
  std::list<int32_t> idle_;                              // cached pages no sequence holds, oldest first
  std::unordered_map<int32_t, std::list<int32_t>::iterator> idle_at_;
  std::vector<int32_t> cached_children_;  // per page: cached pages whose parent it is (evicted only at 0)
  int64_t reused_positions_ = 0;
  int64_t preemptions_ = 0;

  InferenceWeights w_;
  const ArchitectureRules* arch_;
  EngineOptions options_;
  KvCacheType kv_type_;
  KvPagePool pool_;
  ComputeContext compute_;
  std::map<int64_t, Sequence> sequences_;  // by id: steps run them in the order they joined
  int64_t next_id_ = 0;
  // Step scratch, grown to the largest step so far: rows of all sequences.
  std::vector<float> x_, ln_, qkv_, atty_, fch_, stats_, logits_;
  InferenceTables tables_;              // RoPE's angles or the sinusoid
  std::vector<int32_t> row_tokens_, row_positions_;  // each row's token and position this step
  struct RowOf {
    Sequence* s;
    int64_t position;
  };
  std::vector<RowOf> row_of_;
  std::vector<PagedQuery> queries_;
  QuantScratch quant_scratch_;
};

}  // namespace gpt
