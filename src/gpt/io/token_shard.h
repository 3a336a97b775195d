// Token shards: a prepared, tokenized corpus that training maps into memory
// instead of re-tokenizing. Layout (little-endian):
//   bytes 0-7   magic "GPTTOKS\0"
//   8-11        version (1)
//   12-15       bytes per token: 2 (uint16, vocab <= 65536) or 4 (uint32)
//   16-23       token count
//   24-31       vocabulary size of the tokenizer that wrote it
//   32-         the tokens
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace gpt {

inline constexpr char kShardMagic[8] = {'G', 'P', 'T', 'T', 'O', 'K', 'S', '\0'};
inline constexpr size_t kShardHeaderBytes = 32;

// Writes ids atomically; uint16 when vocab_size <= 65536.
void write_token_shard(const std::filesystem::path& path, std::span<const int32_t> ids, int64_t vocab_size);

// True if the file starts with the shard magic.
bool is_token_shard(const std::filesystem::path& path);

// A shard mapped read-only into memory; validated on open.
class TokenShard {
 public:
  explicit TokenShard(const std::filesystem::path& path);
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  int64_t size() const { return count_; }
  int64_t vocab_size() const { return vocab_size_; }
  int32_t operator[](int64_t i) const {
    return width_ == 2 ? static_cast<const uint16_t*>(data_)[i] : static_cast<int32_t>(static_cast<const uint32_t*>(data_)[i]);
  }

 private:
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const void* data_ = nullptr;
  int64_t count_ = 0, vocab_size_ = 0;
  int width_ = 0;
};

}  // namespace gpt
