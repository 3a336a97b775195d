// Generated tokens -> text a reader can be shown as it comes. Token bytes may
// end inside a UTF-8 character, and the newest bytes may be the start of a stop
// string; both are held back until they resolve. Text up to (not including) the
// first stop string is all that is ever released.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace gpt {

class StopTextStream {
 public:
  explicit StopTextStream(std::vector<std::string> stops = {});  // gpt::Error for an empty stop string

  // Appends one token's bytes; returns the text that became safe to show
  // (whole characters that cannot become part of a stop string).
  std::string push(std::string_view bytes);
  // The text still held back (at the end of generation: show it).
  std::string flush();
  bool stopped() const { return stopped_; }
  // All text so far, cut at the stop string.
  const std::string& text() const { return text_; }

 private:
  std::vector<std::string> stops_;
  std::string text_;
  size_t released_ = 0;
  bool stopped_ = false;
};

}  // namespace gpt
