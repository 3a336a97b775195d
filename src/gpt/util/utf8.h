// UTF-8 decoding with validation (used by the character tokenizer and by
// streaming output, which must print whole characters only).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gpt {

// Byte offset of the first invalid UTF-8 sequence, or nullopt if `text` is valid.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// Decodes valid UTF-8 into code points; throws gpt::Error naming the offset otherwise.
std::vector<char32_t> decode_utf8(std::string_view text, std::string_view what);

void append_utf8(std::string& out, char32_t code_point);

// Length of the longest prefix of `bytes` that ends on a whole UTF-8 character
// boundary (an incomplete trailing sequence is held back; invalid bytes are not).
size_t complete_utf8_prefix(std::string_view bytes);

}  // namespace gpt
