// The KV cache of many sequences, in pages: a page holds the keys and values of
// `page_size` consecutive positions of one sequence, for every layer and head,
// and comes from one pool sized by a memory budget (vLLM's PagedAttention). A
// sequence holds a list of pages as its context grows, so a 20-token sequence
// does not reserve a whole context; pages are reference-counted so that
// sequences with a common prefix can share them.
//
// Page layout: [layer][keys | values][head][position in page][head dim], so one
// head's keys of one page are page_size x hs contiguous values. Positions are
// only indices into pages: nothing here assumes absolute positions.
#pragma once
#include <cstdint>
#include <vector>

#include "gpt/generation/kv_cache.h"
#include "gpt/model/config.h"
#include "gpt/util/zeroed_buffer.h"

namespace gpt {

class KvPagePool {
 public:
  // `type` kF32 or kF16. Memory is reserved for `pages` pages and resident as used.
  KvPagePool(const ModelConfig& config, KvCacheType type, int64_t pages, int64_t page_size = 16);
  // Bytes of keys and values one position takes in every layer (NKV heads).
  static int64_t bytes_per_position(const ModelConfig& config, KvCacheType type);
  // How many pages `bytes` of KV memory hold.
  static int64_t pages_in(const ModelConfig& config, KvCacheType type, int64_t bytes, int64_t page_size = 16);

  // A free page with one reference; gpt::Error when every page is in use.
  int32_t allocate();
  void retain(int32_t page);   // one more reference (a sequence sharing it)
  void release(int32_t page);  // one fewer; at zero the page is free again
  int32_t references(int32_t page) const { return refs_[static_cast<size_t>(page)]; }

  int64_t page_size() const { return page_size_; }
  int64_t total_pages() const { return static_cast<int64_t>(refs_.size()); }
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }
  int64_t bytes_per_page() const { return page_elements_ * element_bytes(); }
  int64_t page_elements() const { return page_elements_; }  // from one page's start to the next
  KvCacheType type() const { return type_; }

  // Keys or values of one layer of a page: (NKV, page_size, hs) (NKV: the key/value heads).
  float* keys(int32_t page, int64_t layer) { return f32_.data() + offset(page, layer, 0); }
  float* values(int32_t page, int64_t layer) { return f32_.data() + offset(page, layer, 1); }
  const float* keys(int32_t page, int64_t layer) const { return f32_.data() + offset(page, layer, 0); }
  const float* values(int32_t page, int64_t layer) const { return f32_.data() + offset(page, layer, 1); }
  uint16_t* keys_f16(int32_t page, int64_t layer) { return f16_.data() + offset(page, layer, 0); }
  uint16_t* values_f16(int32_t page, int64_t layer) { return f16_.data() + offset(page, layer, 1); }
  const uint16_t* keys_f16(int32_t page, int64_t layer) const { return f16_.data() + offset(page, layer, 0); }
  const uint16_t* values_f16(int32_t page, int64_t layer) const { return f16_.data() + offset(page, layer, 1); }

 private:
  int64_t element_bytes() const { return type_ == KvCacheType::kF16 ? 2 : 4; }
  size_t offset(int32_t page, int64_t layer, int kv) const {
    return static_cast<size_t>(page) * static_cast<size_t>(page_elements_) +
           static_cast<size_t>((2 * layer + kv) * layer_elements_);
  }

  KvCacheType type_;
  int64_t page_size_, layer_elements_, page_elements_;  // per keys-or-values of a layer; per page
  ZeroedBuffer<float> f32_;
  ZeroedBuffer<uint16_t> f16_;
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;  // a stack: the most recently freed page is reused first
};

}  // namespace gpt
