#include "gpt/generation/kv_pages.h"

#include <string>

#include "gpt/util/error.h"

namespace gpt {

KvPagePool::KvPagePool(const ModelConfig& config, KvCacheType type, int64_t pages, int64_t page_size)
    : type_(type), page_size_(page_size) {
  GPT_CHECK(type == KvCacheType::kF32 || type == KvCacheType::kF16, "a KV page pool holds f32 or f16 values");
  GPT_CHECK(page_size > 0, "KV page size must be positive");
  GPT_CHECK(pages > 0 && pages < (int64_t(1) << 31), "KV page pool needs between 1 and 2^31 pages, got " +
                                                          std::to_string(pages));
  layer_elements_ = static_cast<int64_t>(config.kv_dim()) * page_size;  // NKV heads
  page_elements_ = 2 * static_cast<int64_t>(config.n_layer) * layer_elements_;
  const auto total = static_cast<size_t>(pages * page_elements_);
  if (type == KvCacheType::kF16) {
    f16_ = ZeroedBuffer<uint16_t>(total);
  } else {
    f32_ = ZeroedBuffer<float>(total);
  }
  refs_.assign(static_cast<size_t>(pages), 0);
  free_.reserve(static_cast<size_t>(pages));
  for (int64_t p = pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));  // page 0 first
}

int64_t KvPagePool::bytes_per_position(const ModelConfig& config, KvCacheType type) {
  return 2 * static_cast<int64_t>(config.n_layer) * config.kv_dim() * (type == KvCacheType::kF16 ? 2 : 4);
}

int64_t KvPagePool::pages_in(const ModelConfig& config, KvCacheType type, int64_t bytes, int64_t page_size) {
  return bytes / (bytes_per_position(config, type) * page_size);
}

int32_t KvPagePool::allocate() {
  if (free_.empty()) {
    throw Error("the KV cache is full: all " + std::to_string(total_pages()) + " pages (" +
                std::to_string(total_pages() * page_size_) + " positions) are in use");
  }
  const int32_t page = free_.back();
  free_.pop_back();
  refs_[static_cast<size_t>(page)] = 1;
  return page;
}

void KvPagePool::retain(int32_t page) {
  GPT_CHECK(page >= 0 && page < total_pages() && refs_[static_cast<size_t>(page)] > 0,
            "retain of KV page " + std::to_string(page) + ", which is not in use");
  ++refs_[static_cast<size_t>(page)];
}

void KvPagePool::release(int32_t page) {
  GPT_CHECK(page >= 0 && page < total_pages() && refs_[static_cast<size_t>(page)] > 0,
            "release of KV page " + std::to_string(page) + ", which is not in use");
  if (--refs_[static_cast<size_t>(page)] == 0) free_.push_back(page);
}

}  // namespace gpt
