#include "gpt/viz/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "gpt/util/error.h"
#include "gpt/util/utf8.h"

namespace gpt {

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string visible_token(const std::string& bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (b == ' ') { out += "\u2423"; ++i; continue; }
    if (b == '\n') { out += "\u21b5"; ++i; continue; }
    if (b == '\t') { out += "\u21e5"; ++i; continue; }
    if (b >= 0x80) {  // keep whole valid characters, show stray bytes as hex
      size_t len = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
      if (len > 0 && i + len <= bytes.size() && !find_invalid_utf8(bytes.substr(i, len))) {
        out += bytes.substr(i, len);
        i += len;
        continue;
      }
    }
    if (b < 0x20 || b >= 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<x%02X>", b);
      out += buf;
    } else {
      out += static_cast<char>(b);
    }
    ++i;
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target_count) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / std::max(1, target_count);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  // Of the steps 1, 2, 5 and 10 times the magnitude, take the one whose tick count
  // is closest to the target.
  auto ticks_for = [&](double step) {
    std::vector<double> ticks;
    for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(t);
    return ticks;
  };
  std::vector<double> best;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    auto ticks = ticks_for(m * mag);
    if (best.empty() || std::abs(static_cast<int>(ticks.size()) - target_count) <
                            std::abs(static_cast<int>(best.size()) - target_count)) {
      best = std::move(ticks);
    }
  }
  return best;
}

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string fmt1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

}  // namespace

bool has_finite_point(const CurveSeries& c) {
  return std::any_of(c.points.begin(), c.points.end(),
                     [](const auto& p) { return std::isfinite(p.first) && std::isfinite(p.second); });
}

std::string curves_svg(const std::vector<CurveSeries>& series, const std::string& title, const std::string& x_label,
                       const std::string& y_label, std::optional<double> target) {
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& c : series) {
    for (const auto& [x, y] : c.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  GPT_CHECK(x0 <= x1, "nothing to plot: no " + y_label + " values");
  if (target && std::isfinite(*target)) {  // the target stays in view
    y0 = std::min(y0, *target);
    y1 = std::max(y1, *target);
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 - y0 < 1e-6) y1 = y0 + 1e-3;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const double W = 800, H = 480, left = 70, right = 24, top = 44, bottom = 58;
  const double pw = W - left - right, ph = H - top - bottom;
  auto X = [&](double v) { return left + (v - x0) / (x1 - x0) * pw; };
  auto Y = [&](double v) { return top + (y1 - v) / (y1 - y0) * ph; };

  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W) + "\" height=\"" + fmt(H) +
                    "\" viewBox=\"0 0 " + fmt(W) + " " + fmt(H) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + fmt(W / 2) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">" + xml_escape(title) + "</text>\n";
  // Grid, ticks and their labels.
  svg += "<g class=\"y-ticks\" stroke=\"#ddd\">\n";
  for (double t : nice_ticks(y0, y1)) {
    svg += "<line x1=\"" + fmt(left) + "\" x2=\"" + fmt(left + pw) + "\" y1=\"" + fmt1(Y(t)) + "\" y2=\"" + fmt1(Y(t)) + "\"/>";
    svg += "<text class=\"tick\" x=\"" + fmt(left - 6) + "\" y=\"" + fmt1(Y(t) + 4) +
           "\" text-anchor=\"end\" stroke=\"none\" fill=\"#333\">" + fmt(t) + "</text>\n";
  }
  svg += "</g>\n<g class=\"x-ticks\" stroke=\"#ddd\">\n";
  for (double t : nice_ticks(x0, x1)) {
    svg += "<line x1=\"" + fmt1(X(t)) + "\" x2=\"" + fmt1(X(t)) + "\" y1=\"" + fmt(top) + "\" y2=\"" + fmt(top + ph) + "\"/>";
    svg += "<text class=\"tick\" x=\"" + fmt1(X(t)) + "\" y=\"" + fmt(top + ph + 18) +
           "\" text-anchor=\"middle\" stroke=\"none\" fill=\"#333\">" + fmt(t) + "</text>\n";
  }
  svg += "</g>\n";
  svg += "<rect x=\"" + fmt(left) + "\" y=\"" + fmt(top) + "\" width=\"" + fmt(pw) + "\" height=\"" + fmt(ph) +
         "\" fill=\"none\" stroke=\"#333\"/>\n";
  svg += "<text x=\"" + fmt(left + pw / 2) + "\" y=\"" + fmt(H - 14) + "\" text-anchor=\"middle\">" + xml_escape(x_label) +
         "</text>\n";
  svg += "<text x=\"18\" y=\"" + fmt(top + ph / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " +
         fmt(top + ph / 2) + ")\">" + xml_escape(y_label) + "</text>\n";
  if (target && std::isfinite(*target)) {
    svg += "<line class=\"target\" x1=\"" + fmt(left) + "\" x2=\"" + fmt(left + pw) + "\" y1=\"" + fmt1(Y(*target)) +
           "\" y2=\"" + fmt1(Y(*target)) + "\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>";
    svg += "<text x=\"" + fmt(left + 6) + "\" y=\"" + fmt1(Y(*target) - 5) + "\" fill=\"#d62728\">" + fmt(*target) +
           "</text>\n";
  }
  // The curves, and a legend entry each (top right, in a box sized to the names).
  static const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"};
  // Names longer than kLongest characters show their end (paths differ there).
  constexpr size_t kLongest = 48;
  auto shown = [&](const std::string& name) {
    if (name.size() <= kLongest) return name;
    size_t from = name.size() - (kLongest - 3);
    while (from < name.size() && (static_cast<unsigned char>(name[from]) & 0xC0) == 0x80) ++from;  // whole characters
    return "..." + name.substr(from);
  };
  size_t longest = 0, entries = 0;
  for (const auto& c : series) {
    if (!has_finite_point(c)) continue;
    longest = std::max(longest, std::min(c.name.size(), kLongest));
    ++entries;
  }
  const double lw = 46 + 7.0 * static_cast<double>(longest), lx = left + pw - lw + 8, ly = top + 12;
  std::string legend = "<g class=\"legend\">\n<rect x=\"" + fmt(lx - 8) + "\" y=\"" + fmt(ly - 10) + "\" width=\"" +
                       fmt(lw) + "\" height=\"" + fmt(22.0 * static_cast<double>(entries) + 2) +
                       "\" fill=\"white\" stroke=\"#999\"/>\n";
  size_t entry = 0;
  for (size_t k = 0; k < series.size(); ++k) {
    const CurveSeries& c = series[k];
    if (!has_finite_point(c)) continue;
    const std::string color = xml_escape(c.color.empty() ? kPalette[k % std::size(kPalette)] : c.color);
    const std::string css = xml_escape(c.css_class);
    std::string pts, dots;
    for (const auto& [x, y] : c.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      // (Appended piece by piece: GCC 12 warns falsely about "literal" + string, bug 105329.)
      if (!pts.empty()) pts += ' ';
      pts += fmt1(X(x));
      pts += ',';
      pts += fmt1(Y(y));
      if (c.dots) {
        dots += "<circle class=\"" + css + "-point\" cx=\"" + fmt1(X(x)) + "\" cy=\"" + fmt1(Y(y)) +
                "\" r=\"3\"><title>" + xml_escape(x_label) + " " + fmt(x) + ": " + xml_escape(c.name) + " " + fmt(y) +
                "</title></circle>\n";
      }
    }
    svg += "<polyline class=\"" + css + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"" +
           (c.dots ? "2" : "1.5") + "\" points=\"" + pts + "\"/>\n";
    if (c.dots) svg += "<g fill=\"" + color + "\">\n" + dots + "</g>\n";
    const double y = ly + 22.0 * static_cast<double>(entry++);
    legend += "<line x1=\"" + fmt(lx) + "\" x2=\"" + fmt(lx + 24) + "\" y1=\"" + fmt(y) + "\" y2=\"" + fmt(y) +
              "\" stroke=\"" + color + "\" stroke-width=\"2\"/><text x=\"" + fmt(lx + 30) + "\" y=\"" + fmt(y + 4) + "\">" +
              xml_escape(shown(c.name)) + "</text>\n";
  }
  svg += legend + "</g>\n</svg>\n";
  return svg;
}

std::string loss_curve_svg(const std::vector<LossPoint>& points, const std::string& title, const std::string& metric) {
  CurveSeries train{"train " + metric, "train", {}, false, "#1f77b4"};
  CurveSeries val{"validation " + metric, "val", {}, true, "#ff7f0e"};
  for (const auto& p : points) {
    if (p.loss) train.points.emplace_back(static_cast<double>(p.step), *p.loss);
    if (p.val_loss) val.points.emplace_back(static_cast<double>(p.step), *p.val_loss);
  }
  return curves_svg({train, val}, title, "step", metric == "loss" ? "loss (nats/token)" : metric);
}

std::string attention_svg(const std::vector<std::string>& labels, const std::vector<std::vector<float>>& heads,
                          const std::vector<int>& head_ids, int layer) {
  const auto T = static_cast<int>(labels.size());
  GPT_CHECK(T > 0 && !heads.empty() && heads.size() == head_ids.size(), "nothing to draw");
  for (const auto& h : heads) GPT_CHECK(h.size() == static_cast<size_t>(T) * T, "attention matrix does not match the tokens");
  const int n = static_cast<int>(heads.size());
  const int cols = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int rows = (n + cols - 1) / cols;
  const double cell = std::clamp(360.0 / T, 3.0, 22.0);
  const bool show_labels = cell >= 8.0;
  const double label_w = show_labels ? 70 : 10, title_h = 26;
  const double panel_w = label_w + cell * T + 20, panel_h = title_h + label_w + cell * T + 10;
  const double W = cols * panel_w + 20, H = rows * panel_h + 50;

  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W) + "\" height=\"" + fmt(H) +
                    "\" viewBox=\"0 0 " + fmt(W) + " " + fmt(H) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"10\" y=\"22\" font-size=\"15\">Attention weights, layer " + std::to_string(layer) +
         " (row: query token, column: key token it attends to)</text>\n";
  for (int k = 0; k < n; ++k) {
    const double ox = 10 + (k % cols) * panel_w, oy = 40 + (k / cols) * panel_h;
    const double gx = ox + label_w, gy = oy + title_h + label_w;
    svg += "<g class=\"head\" data-head=\"" + std::to_string(head_ids[static_cast<size_t>(k)]) + "\">\n";
    svg += "<text x=\"" + fmt(gx) + "\" y=\"" + fmt(oy + 14) + "\" font-size=\"13\">head " +
           std::to_string(head_ids[static_cast<size_t>(k)]) + "</text>\n";
    if (show_labels) {
      for (int t = 0; t < T; ++t) {
        const std::string lab = xml_escape(visible_token(labels[static_cast<size_t>(t)]));
        svg += "<text class=\"query-label\" x=\"" + fmt(gx - 4) + "\" y=\"" + fmt1(gy + (t + 0.7) * cell) +
               "\" text-anchor=\"end\">" + lab + "</text>";
        const double tx = gx + (t + 0.7) * cell, ty = gy - 4;
        svg += "<text class=\"key-label\" x=\"" + fmt1(tx) + "\" y=\"" + fmt(ty) + "\" transform=\"rotate(-90 " +
               fmt1(tx) + " " + fmt(ty) + ")\">" + lab + "</text>\n";
      }
    }
    const auto& w = heads[static_cast<size_t>(k)];
    for (int i = 0; i < T; ++i) {
      for (int j = 0; j < T; ++j) {
        const float a = std::clamp(w[static_cast<size_t>(i) * T + j], 0.0f, 1.0f);
        // White (0) to deep blue (1); sqrt so that small weights stay visible.
        const double s = std::sqrt(static_cast<double>(a));
        char color[16];
        std::snprintf(color, sizeof color, "#%02x%02x%02x", static_cast<int>(255 - 225 * s),
                      static_cast<int>(255 - 175 * s), static_cast<int>(255 - 75 * s));
        svg += "<rect class=\"cell\" x=\"" + fmt1(gx + j * cell) + "\" y=\"" + fmt1(gy + i * cell) + "\" width=\"" +
               fmt1(cell) + "\" height=\"" + fmt1(cell) + "\" fill=\"" + color + "\" data-weight=\"" + fmt(a) + "\"/>";
      }
      svg += "\n";
    }
    svg += "<rect x=\"" + fmt(gx) + "\" y=\"" + fmt(gy) + "\" width=\"" + fmt1(cell * T) + "\" height=\"" +
           fmt1(cell * T) + "\" fill=\"none\" stroke=\"#666\"/>\n</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace gpt
