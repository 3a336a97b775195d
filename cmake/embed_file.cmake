# Writes INPUT's bytes into OUTPUT as a C++ array (the server's web page: no
# files to install, works offline). Run by add_custom_command in CMakeLists.txt.
file(READ "${INPUT}" content HEX)
string(LENGTH "${content}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
file(WRITE "${OUTPUT}" "// Generated from ${INPUT} by cmake/embed_file.cmake: do not edit.
#include <string_view>
namespace gpt::serving {
static const unsigned char kBytes[] = {${bytes} 0};
std::string_view ${SYMBOL}() { return {reinterpret_cast<const char*>(kBytes), ${size}}; }
}  // namespace gpt::serving
")
