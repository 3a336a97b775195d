// safetensors: round trip, and a clear error (never a crash) for every kind of
// damaged file.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "gpt/io/safetensors.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt {
namespace {

std::vector<uint8_t> make_file(const std::string& header_json, size_t data_bytes) {
  std::vector<uint8_t> bytes(8 + header_json.size() + data_bytes, 0);
  const uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(header_json.begin(), header_json.end(), bytes.begin() + 8);
  return bytes;
}

std::string error_of(const std::vector<uint8_t>& bytes) {
  try {
    SafetensorsFile::parse(bytes, "x.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, RoundTripKeepsNamesShapesValuesAndMetadata) {
  testing::TempDir dir;
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {-1.5f};
  write_safetensors(dir / "t.safetensors", {{"h.0.w", {2, 3}, a.data()}, {"b", {1}, b.data()}}, {{"step", "7"}});
  const auto f = SafetensorsFile::load(dir / "t.safetensors");
  EXPECT_EQ(f.metadata().at("step"), "7");
  std::vector<float> a2(6), b2(1);
  f.read_f32("h.0.w", {2, 3}, a2.data());
  f.read_f32("b", {1}, b2.data());
  EXPECT_EQ(a, a2);
  EXPECT_EQ(b, b2);
  // The data section starts 8-byte aligned, as the format recommends.
  const auto bytes = read_binary_file(dir / "t.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_THROW(f.read_f32("h.0.w", {3, 2}, a2.data()), Error);  // wrong shape for the name
  EXPECT_THROW(f.read_f32("missing", {1}, a2.data()), Error);
}

TEST(Safetensors, ConvertsHalfAndBfloat16) {
  // F16 1.0 = 0x3C00, -2.0 = 0xC000; BF16 1.0 = 0x3F80, 0.5 = 0x3F00.
  auto bytes = make_file(R"({"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}})", 8);
  const size_t d = bytes.size() - 8;
  const uint8_t raw[8] = {0x00, 0x3C, 0x00, 0xC0, 0x80, 0x3F, 0x00, 0x3F};
  std::memcpy(bytes.data() + d, raw, 8);
  const auto f = SafetensorsFile::parse(bytes, "x");
  float h[2], b[2];
  f.read_f32("h", {2}, h);
  f.read_f32("b", {2}, b);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], 0.5f);
}

TEST(Safetensors, RejectsDamagedFiles) {
  EXPECT_NE(error_of({1, 2, 3}).find("not a safetensors file"), std::string::npos);
  auto huge = make_file("{}", 0);
  huge[5] = 0x7F;
  EXPECT_NE(error_of(huge).find("implausible"), std::string::npos);
  auto truncated_header = make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  truncated_header.resize(20);
  EXPECT_NE(error_of(truncated_header).find("truncated"), std::string::npos);
  EXPECT_NE(error_of(make_file("{not json", 0)).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)).find("run past"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)).find("needs 12"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12))
                .find("overlap"), std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)).find("hole"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}})", 4)).find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)).find("malformed shape"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[1]}})", 4)).find("lacks"), std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 6)).find("trailing"),
            std::string::npos);
}

TEST(Safetensors, EveryTruncationOfARealFileIsAnErrorNotACrash) {
  testing::TempDir dir;
  std::vector<float> a(40, 1.0f);
  write_safetensors(dir / "t.safetensors", {{"a", {40}, a.data()}}, {});
  const auto bytes = read_binary_file(dir / "t.safetensors");
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(len));
    EXPECT_FALSE(error_of(cut).empty()) << "truncated to " << len << " bytes";
  }
  EXPECT_TRUE(error_of(bytes).empty());
}

}  // namespace
}  // namespace gpt
