#include "gpt/generation/text_stream.h"

#include <algorithm>

#include "gpt/util/error.h"
#include "gpt/util/utf8.h"

namespace gpt {
namespace {

// Length of the longest suffix of `text` that is a proper prefix of a stop string:
// those bytes must wait, they may be the start of a stop string.
size_t stop_prefix_overlap(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& s : stops) {
    for (size_t len = std::min(s.size() - 1, text.size()); len > hold; --len) {
      if (text.compare(text.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

StopTextStream::StopTextStream(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& s : stops_) GPT_CHECK(!s.empty(), "stop strings must not be empty");
}

std::string StopTextStream::push(std::string_view bytes) {
  if (stopped_) return {};
  const size_t before = text_.size();
  text_ += bytes;
  // A stop string can only end in the new bytes: search from where it could start.
  size_t stop_at = std::string::npos;
  for (const auto& s : stops_) {
    stop_at = std::min(stop_at, text_.find(s, before >= s.size() ? before - s.size() + 1 : 0));
  }
  if (stop_at != std::string::npos) {
    text_.resize(stop_at);
    stopped_ = true;
    return flush();
  }
  const size_t ready = text_.size() - stop_prefix_overlap(text_, stops_);
  if (ready <= released_) return {};
  const size_t whole = complete_utf8_prefix(std::string_view(text_).substr(released_, ready - released_));
  std::string out = text_.substr(released_, whole);
  released_ += whole;
  return out;
}

std::string StopTextStream::flush() {
  std::string out = text_.substr(std::min(released_, text_.size()));
  released_ = text_.size();
  return out;
}

}  // namespace gpt
