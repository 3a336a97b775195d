// Drawings are valid SVG (parsed here by pugixml) and show what they claim.
#include <gtest/gtest.h>
#include <pugixml.hpp>

#include <cmath>

#include "gpt/training/trainer.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/viz/svg.h"
#include "test_support.h"

namespace gpt {
namespace {

pugi::xml_document parse(const std::string& svg) {
  pugi::xml_document doc;
  const auto result = doc.load_string(svg.c_str());
  EXPECT_TRUE(result) << result.description() << " at offset " << result.offset;
  EXPECT_STREQ(doc.document_element().name(), "svg");
  return doc;
}

size_t count_points(const char* points) {
  size_t n = 0;
  for (const char* p = points; *p; ++p) n += *p == ',';
  return n;
}

TEST(LossCurve, OnePointPerLoggedStepAndADotPerEvaluation) {
  std::vector<LossPoint> pts;
  for (int s = 1; s <= 137; ++s) {
    LossPoint p;
    p.step = s;
    p.loss = 4.0 * std::exp(-s / 50.0) + 1.5;
    if (s % 25 == 0) p.val_loss = *p.loss + 0.1;
    pts.push_back(p);
  }
  const auto doc = parse(loss_curve_svg(pts, "test <run> & co"));
  const auto train = doc.select_node("//polyline[@class='train']").node();
  ASSERT_TRUE(train);
  EXPECT_EQ(count_points(train.attribute("points").value()), 137u);
  EXPECT_EQ(doc.select_nodes("//circle[@class='val-point']").size(), 5u);
  EXPECT_EQ(count_points(doc.select_node("//polyline[@class='val']").node().attribute("points").value()), 5u);
  EXPECT_GE(doc.select_nodes("//g[@class='x-ticks']/text").size(), 3u);
  EXPECT_GE(doc.select_nodes("//g[@class='y-ticks']/text").size(), 3u);
  EXPECT_EQ(doc.select_nodes("//g[@class='legend']/text").size(), 2u);
  // The loss falls, so the curve goes down the page: the first point's y (SVG y
  // grows downwards) is smaller than the last one's.
  const std::string pts_text = train.attribute("points").value();
  const double first_y = std::stod(pts_text.substr(pts_text.find(',') + 1));
  const double last_y = std::stod(pts_text.substr(pts_text.rfind(',') + 1));
  EXPECT_LT(first_y, last_y);
  EXPECT_THROW(loss_curve_svg({}, "empty"), Error);
}

TEST(Curves, OneLineAndLegendEntryPerRunAndTheTargetInView) {
  CurveSeries slow{"baseline", "val", {}, true, {}}, fast{"fast", "val", {}, true, {}};
  for (int m = 0; m <= 20; m += 2) {
    slow.points.emplace_back(m, 3.0 - 0.03 * m);
    fast.points.emplace_back(m + 0.5, 2.5 - 0.04 * m);
  }
  CurveSeries empty{"nothing", "val", {{1.0, std::nan("")}}, true, {}};
  const auto doc = parse(curves_svg({slow, fast, empty}, "race", "minutes", "validation loss", 1.47));
  const auto lines = doc.select_nodes("//polyline[@class='val']");
  ASSERT_EQ(lines.size(), 2u);  // the series without a finite point is left out, legend too
  EXPECT_EQ(doc.select_nodes("//g[@class='legend']/text").size(), 2u);
  EXPECT_EQ(doc.select_nodes("//circle[@class='val-point']").size(), 22u);
  EXPECT_NE(std::string(lines[0].node().attribute("stroke").value()), lines[1].node().attribute("stroke").value());
  // The target is below every point, yet drawn inside the plot, below the curves.
  const auto target = doc.select_node("//line[@class='target']").node();
  ASSERT_TRUE(target);
  const double target_y = target.attribute("y1").as_double();
  for (const auto& dot : doc.select_nodes("//circle[@class='val-point']"))
    EXPECT_LT(dot.node().attribute("cy").as_double(), target_y);
  const auto frame = doc.select_node("//rect[@stroke='#333']").node();
  EXPECT_LT(target_y, frame.attribute("y").as_double() + frame.attribute("height").as_double());
  // Time on the x axis: the label says so, and a later point is further right.
  bool labelled = false;
  for (const auto& t : doc.select_nodes("//text")) labelled |= std::string(t.node().child_value()) == "minutes";
  EXPECT_TRUE(labelled);
  EXPECT_THROW(curves_svg({empty}, "none", "minutes", "loss"), Error);
}

TEST(LossCurve, TicksAreNiceNumbers) {
  EXPECT_EQ(nice_ticks(0, 2000), (std::vector<double>{0, 500, 1000, 1500, 2000}));
  const auto t = nice_ticks(1.83, 4.21);
  ASSERT_GE(t.size(), 3u);
  EXPECT_DOUBLE_EQ(t[1] - t[0], 0.5);
}

TEST(AttentionMap, OneCellPerQueryKeyPairWithTheWeights) {
  const std::vector<std::string> labels = {"T", "h", "e", " ", "<&>"};
  const int T = 5;
  std::vector<float> w(T * T, 0.0f);
  for (int i = 0; i < T; ++i)
    for (int j = 0; j <= i; ++j) w[static_cast<size_t>(i * T + j)] = 1.0f / static_cast<float>(i + 1);
  const auto doc = parse(attention_svg(labels, {w, w}, {0, 3}, 2));
  EXPECT_EQ(doc.select_nodes("//g[@class='head']").size(), 2u);
  const auto cells = doc.select_nodes("//g[@data-head='3']/rect[@class='cell']");
  ASSERT_EQ(cells.size(), static_cast<size_t>(T * T));
  int i = 0;
  for (const auto& c : cells) {
    EXPECT_NEAR(c.node().attribute("data-weight").as_double(), w[static_cast<size_t>(i)], 1e-6) << i;
    ++i;
  }
  const auto qlabels = doc.select_nodes("//g[@data-head='0']/text[@class='query-label']");
  ASSERT_EQ(qlabels.size(), 5u);
  EXPECT_STREQ(qlabels[3].node().text().get(), "\u2423");  // a space, made visible
  EXPECT_STREQ(qlabels[4].node().text().get(), "<&>");    // escaped in the file, intact when parsed
}

TEST(VisibleToken, ShowsWhitespaceAndStrayBytes) {
  EXPECT_EQ(visible_token("a b\n"), "a\u2423b\u21b5");
  EXPECT_EQ(visible_token("\xff"), "<xFF>");
  EXPECT_EQ(visible_token("한"), "한");
  EXPECT_EQ(visible_token(std::string("\xed\x95", 2)), "<xED><x95>");  // half a character
}

TEST(TrainingLog, ReadsWhatTrainingWritesAndSkipsATornLastLine) {
  testing::TempDir dir;
  write_file_atomic(dir / "log.jsonl", "{\"step\":1,\"loss\":4.5,\"lr\":0.001}\n{\"step\":2,\"loss\":4.0,\"val_loss\":4.2}\n{\"step\":3,\"lo");
  const auto log = read_training_log((dir / "log.jsonl").string());
  ASSERT_EQ(log.size(), 2u);
  EXPECT_FLOAT_EQ(log[1].loss, 4.0f);
  ASSERT_TRUE(log[1].val_loss.has_value());
  write_file_atomic(dir / "bad.jsonl", "hello\n{\"step\":1}\n");
  EXPECT_THROW(read_training_log((dir / "bad.jsonl").string()), Error);
  EXPECT_THROW(read_training_log((dir / "missing.jsonl").string()), Error);
}

}  // namespace
}  // namespace gpt
