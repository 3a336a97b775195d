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

std::string loss_curve_svg(const std::vector<LossPoint>& points, const std::string& title, const std::string& metric) {
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& p : points) {
    for (const auto& v : {p.loss, p.val_loss}) {
      if (!v || !std::isfinite(*v)) continue;
      x0 = std::min(x0, static_cast<double>(p.step));
      x1 = std::max(x1, static_cast<double>(p.step));
      y0 = std::min(y0, *v);
      y1 = std::max(y1, *v);
    }
  }
  GPT_CHECK(x0 <= x1, "nothing to plot: the log holds no " + metric + " values");
  if (x1 == x0) x1 = x0 + 1;
  if (y1 - y0 < 1e-6) y1 = y0 + 1e-3;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const double W = 800, H = 480, left = 70, right = 24, top = 44, bottom = 58;
  const double pw = W - left - right, ph = H - top - bottom;
  auto X = [&](double s) { return left + (s - x0) / (x1 - x0) * pw; };
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
  svg += "<text x=\"" + fmt(left + pw / 2) + "\" y=\"" + fmt(H - 14) + "\" text-anchor=\"middle\">step</text>\n";
  svg += "<text x=\"18\" y=\"" + fmt(top + ph / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " +
         fmt(top + ph / 2) + ")\">" + xml_escape(metric == "loss" ? "loss (nats/token)" : metric) + "</text>\n";
  // The curves.
  std::string train_pts, val_pts, val_dots;
  size_t n_train = 0, n_val = 0;
  for (const auto& p : points) {
    if (p.loss && std::isfinite(*p.loss)) {
      // (Appended piece by piece: GCC 12 warns falsely about "literal" + string, bug 105329.)
      if (n_train++ > 0) train_pts += ' ';
      train_pts += fmt1(X(static_cast<double>(p.step)));
      train_pts += ',';
      train_pts += fmt1(Y(*p.loss));
    }
    if (p.val_loss && std::isfinite(*p.val_loss)) {
      const std::string x = fmt1(X(static_cast<double>(p.step))), y = fmt1(Y(*p.val_loss));
      val_pts += (n_val++ ? " " : "") + x + "," + y;
      val_dots += "<circle class=\"val-point\" cx=\"" + x + "\" cy=\"" + y + "\" r=\"3\"><title>step " +
                  std::to_string(p.step) + ": val " + fmt(*p.val_loss) + "</title></circle>\n";
    }
  }
  if (n_train > 0)
    svg += "<polyline class=\"train\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"" + train_pts + "\"/>\n";
  if (n_val > 0) {
    svg += "<polyline class=\"val\" fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" points=\"" + val_pts + "\"/>\n";
    svg += "<g fill=\"#ff7f0e\">\n" + val_dots + "</g>\n";
  }
  // Legend.
  const double lx = left + pw - 150, ly = top + 12;
  svg += "<g class=\"legend\">\n";
  svg += "<rect x=\"" + fmt(lx - 8) + "\" y=\"" + fmt(ly - 10) + "\" width=\"150\" height=\"46\" fill=\"white\" stroke=\"#999\"/>\n";
  svg += "<line x1=\"" + fmt(lx) + "\" x2=\"" + fmt(lx + 24) + "\" y1=\"" + fmt(ly) + "\" y2=\"" + fmt(ly) +
         "\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"" + fmt(lx + 30) + "\" y=\"" + fmt(ly + 4) + "\">train " +
         xml_escape(metric) + "</text>\n";
  svg += "<line x1=\"" + fmt(lx) + "\" x2=\"" + fmt(lx + 24) + "\" y1=\"" + fmt(ly + 22) + "\" y2=\"" + fmt(ly + 22) +
         "\" stroke=\"#ff7f0e\" stroke-width=\"2\"/><text x=\"" + fmt(lx + 30) + "\" y=\"" + fmt(ly + 26) +
         "\">validation " + xml_escape(metric) + "</text>\n";
  svg += "</g>\n</svg>\n";
  return svg;
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
