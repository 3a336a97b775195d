// Drawings as SVG files: the training loss curve and attention heat maps. SVG is
// text, opens in any browser, and needs no plotting library.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gpt {

struct LossPoint {
  long long step = 0;
  std::optional<double> loss;      // training loss at this step
  std::optional<double> val_loss;  // validation loss, where evaluated
};

// Train (line) and validation (line + dots) loss against steps, with axes, ticks
// and a legend. Throws gpt::Error if there is nothing to draw.
// `metric` names what is drawn (the y axis and the legend: "train <metric>",
// "validation <metric>"); the loss by default.
std::string loss_curve_svg(const std::vector<LossPoint>& points, const std::string& title,
                           const std::string& metric = "loss");

// Several curves on one plot (runs against wall-clock time, say): each series a
// line (with a dot per point where `dots`), drawn in `color` or the next of a
// palette, a legend entry each, and where given a dashed horizontal line at
// `target` (a loss to reach). Polylines and dots carry `css_class`. Throws
// gpt::Error if no series has a finite point.
struct CurveSeries {
  std::string name;
  std::string css_class = "curve";
  std::vector<std::pair<double, double>> points;  // (x, y)
  bool dots = false;
  std::string color;
};
// Whether `c` has a point curves_svg can draw (x and y both finite).
bool has_finite_point(const CurveSeries& c);
std::string curves_svg(const std::vector<CurveSeries>& series, const std::string& title, const std::string& x_label,
                       const std::string& y_label, std::optional<double> target = std::nullopt);

// Attention weights of one layer: `heads` holds one (T x T) row-major matrix per
// head (row = query position, column = key position); drawn as a grid of heat
// maps labelled with the tokens. `head_ids` names each matrix.
std::string attention_svg(const std::vector<std::string>& token_labels, const std::vector<std::vector<float>>& heads,
                          const std::vector<int>& head_ids, int layer);

// A token's bytes made visible: spaces as '␣', newlines as '↵', other control or
// invalid bytes as <xNN>.
std::string visible_token(const std::string& bytes);

std::string xml_escape(const std::string& s);

// "Nice" tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
std::vector<double> nice_ticks(double lo, double hi, int target_count = 6);

}  // namespace gpt
