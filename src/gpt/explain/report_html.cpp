// The HTML page of `gpt explain`: inline SVG drawn here, no scripts, no
// external files; English or Korean text beside each step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "gpt/explain/explain.h"
#include "gpt/viz/svg.h"  // visible_token, xml_escape

namespace gpt {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Diverging colour for x in [-1, 1]: blue, white, red.
std::string diverging(float x) {
  x = std::clamp(x, -1.0f, 1.0f);
  const int a = static_cast<int>(std::lround(255 * (1 - std::abs(x))));
  char buf[16];
  if (x >= 0) {
    std::snprintf(buf, sizeof buf, "#ff%02x%02x", a, a);
  } else {
    std::snprintf(buf, sizeof buf, "#%02x%02xff", a, a);
  }
  return buf;
}

// A vector as a strip of coloured cells.
std::string heat_strip(const std::vector<float>& v, const std::string& label) {
  float scale = 1e-12f;
  for (float x : v) scale = std::max(scale, std::abs(x));
  std::string s = "<svg class=\"strip\" viewBox=\"0 0 " + std::to_string(v.size()) +
                  " 10\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"" + xml_escape(label) + "\">";
  for (size_t i = 0; i < v.size(); ++i) {
    s += "<rect x=\"" + std::to_string(i) + "\" width=\"1\" height=\"10\" fill=\"" + diverging(v[i] / scale) + "\"/>";
  }
  return s + "</svg>";
}

// Attention of one head over positions, in at most 128 bins (sums).
std::string attention_strip(const std::vector<float>& w) {
  const size_t bins = std::min<size_t>(w.size(), 128);
  std::vector<float> b(bins, 0.0f);
  for (size_t j = 0; j < w.size(); ++j) b[j * bins / w.size()] += w[j];
  float max = 1e-12f;
  for (float x : b) max = std::max(max, x);
  std::string s = "<svg class=\"att\" viewBox=\"0 0 " + std::to_string(bins) + " 4\" preserveAspectRatio=\"none\">";
  for (size_t i = 0; i < bins; ++i) {
    const int a = static_cast<int>(std::lround(255 * (1 - b[i] / max)));
    char fill[16];
    std::snprintf(fill, sizeof fill, "#%02x%02x%02x", 255, a, a);
    s += "<rect x=\"" + std::to_string(i) + "\" width=\"1\" height=\"4\" fill=\"" + fill + "\"/>";
  }
  return s + "</svg>";
}

std::string bar(float fraction) {
  return "<span class=\"bar\"><span style=\"width:" + fmt("%.1f", 100.0 * std::clamp(fraction, 0.0f, 1.0f)) +
         "%\"></span></span>";
}

struct Text {
  const char* title;
  const char* tokens_h;
  const char* tokens_p;
  const char* embed_h;
  const char* embed_p;
  const char* blocks_h;
  const char* blocks_p;
  const char* output_h;
  const char* output_p;
  const char* token_vec;
  const char* pos_vec;
  const char* nearest;
  const char* head;
  const char* reads;
  const char* attn;
  const char* ffn;
  const char* stream;
  const char* lens;
  const char* entropy;
  const char* setting;
  const char* kept;
  const char* top_prob;
  const char* rotary;  // in place of the position vector, for rotary positions
};

const Text kEnglish = {
    "Watching one prediction",
    "1. Tokenization",
    "The text is cut into tokens, the units the model reads; each has an id in the vocabulary. The highlighted one is the position whose next token is predicted below.",
    "2. Embedding and position",
    "The token becomes a vector (a row of the embedding table), and a vector for its position is added, so the model knows both what and where. Each cell is one dimension: red positive, blue negative.",
    "3. The blocks",
    "Each block first lets the token look back at earlier tokens (self-attention: one row per head, darker = more weight), then transforms the result (the feed-forward network). Both add their output to the residual stream; the bars show how large each contribution is. The logit lens shows what the model would predict if it stopped after the block.",
    "4. The output",
    "After the last block a final normalisation and the output layer turn the stream into a score for every token, and softmax turns the scores into probabilities. Sampling then picks one; the table shows what common settings would leave to choose from.",
    "token vector", "position vector", "nearest tokens (cosine)", "head", "reads most", "attention output",
    "feed-forward output", "stream", "logit lens", "entropy", "setting", "candidates", "top probability",
    "Rotary positions: no position vector is added here; inside each block's attention the queries and keys are "
    "rotated by an angle that grows with the position, so a score depends on how far apart two tokens are."};

const Text kKorean = {
    "예측 하나를 지켜보기",
    "1. 토큰화",
    "텍스트는 모델이 읽는 단위인 토큰으로 나뉘고, 각 토큰은 어휘 사전의 번호를 가집니다. 강조된 토큰이 아래에서 다음 토큰을 예측하는 위치입니다.",
    "2. 임베딩과 위치",
    "토큰은 벡터(임베딩 표의 한 행)가 되고, 위치를 나타내는 벡터가 더해져 모델은 무엇이 어디에 있는지 알게 됩니다. 칸 하나가 한 차원입니다: 빨강은 양수, 파랑은 음수.",
    "3. 블록",
    "각 블록은 먼저 토큰이 앞의 토큰들을 돌아보게 하고(셀프 어텐션: 헤드마다 한 줄, 진할수록 가중치가 큼), 그 결과를 변환합니다(피드포워드 신경망). 둘 다 출력을 잔차 스트림에 더하며, 막대는 각 기여의 크기입니다. 로짓 렌즈는 모델이 그 블록에서 멈춘다면 무엇을 예측할지 보여 줍니다.",
    "4. 출력",
    "마지막 블록 뒤에 최종 정규화와 출력층이 스트림을 모든 토큰의 점수로 바꾸고, 소프트맥스가 점수를 확률로 바꿉니다. 샘플링이 그중 하나를 고르며, 표는 흔한 설정이 후보를 얼마나 남기는지 보여 줍니다.",
    "토큰 벡터", "위치 벡터", "가장 가까운 토큰 (코사인)", "헤드", "가장 많이 읽는 토큰", "어텐션 출력",
    "피드포워드 출력", "스트림", "로짓 렌즈", "엔트로피", "설정", "후보 수", "최고 확률",
    "회전 위치 인코딩: 여기서는 위치 벡터를 더하지 않습니다. 각 블록의 어텐션 안에서 쿼리와 키가 위치에 비례하는 "
    "각도만큼 회전하므로, 점수는 두 토큰이 얼마나 떨어져 있는지에 따라 달라집니다."};

}  // namespace

std::string explanation_html(const Explanation& e, const std::string& lang) {
  const Text& t = lang == "ko" ? kKorean : kEnglish;
  auto piece = [&](int32_t id) { return xml_escape(visible_token(e.piece_of.at(id))); };
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"" + std::string(lang == "ko" ? "ko" : "en") + "\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" + std::string(t.title) +
       " — gpt.cpp</title>\n";
  h += R"(<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#1d1d1f}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
p.why{color:#444;max-width:48rem}
.tok{display:inline-block;border:1px solid #ccc;border-radius:4px;margin:2px;padding:1px 4px;font-family:monospace}
.tok small{display:block;color:#777;font-size:.7rem}
.tok.at{background:#fff3c4;border-color:#c90}
svg.strip{width:100%;height:18px;display:block;margin:.2rem 0 .6rem}
svg.att{width:18rem;height:10px;vertical-align:middle}
.bar{display:inline-block;width:9rem;height:.7rem;background:#eee;vertical-align:middle;margin-right:.4rem}
.bar span{display:block;height:100%;background:#2457c5}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:2px 8px;text-align:left;vertical-align:top}
th{font-weight:600;color:#555}
code{font-family:monospace;background:#f4f4f4;padding:0 3px}
section.block{border:1px solid #e3e3e3;border-radius:8px;padding:.5rem .8rem;margin:.8rem 0}
</style>
</head>
<body>
)";
  h += "<h1>" + std::string(t.title) + "</h1>\n";
  h += "<p>gpt.cpp · " + std::to_string(e.config.n_layer) + " × " + std::to_string(e.config.n_head) + " heads · " +
       std::to_string(e.config.n_embd) + " dims · vocabulary " + std::to_string(e.config.vocab_size) + " · context " +
       std::to_string(e.config.block_size) + "</p>\n";

  // 1. Tokens.
  h += "<section id=\"tokens\">\n<h2>" + std::string(t.tokens_h) + "</h2>\n<p class=\"why\">" + t.tokens_p + "</p>\n<p>";
  for (size_t i = 0; i < e.tokens.size(); ++i) {
    const bool at = static_cast<int64_t>(i) == e.position;
    h += std::string("<span class=\"tok") + (at ? " at" : "") + "\">" + xml_escape(visible_token(e.pieces[i])) + "<small>" +
         std::to_string(e.tokens[i]) + " · " + std::to_string(e.pieces[i].size()) + " B</small></span>";
  }
  h += "</p>\n</section>\n";

  // 2. Embedding.
  auto vnorm = [](const std::vector<float>& v) {
    double s = 0;
    for (float x : v) s += static_cast<double>(x) * x;
    return std::sqrt(s);
  };
  h += "<section id=\"embedding\">\n<h2>" + std::string(t.embed_h) + "</h2>\n<p class=\"why\">" + t.embed_p + "</p>\n";
  h += "<p>" + std::string(t.token_vec) + " <code>" + piece(e.tokens[static_cast<size_t>(e.position)]) + "</code> |v| = " +
       fmt("%.3f", vnorm(e.token_vector)) + "</p>" + heat_strip(e.token_vector, t.token_vec) + "\n";
  if (e.position_vector.empty()) {
    h.append("<p>").append(t.rotary).append("</p>\n");
  } else {
    h += "<p>" + std::string(t.pos_vec) + " " + std::to_string(e.position) + " |v| = " +
         fmt("%.3f", vnorm(e.position_vector)) + "</p>" + heat_strip(e.position_vector, t.pos_vec) + "\n";
  }
  h += "<p>" + std::string(t.nearest) + ": ";
  for (const auto& n : e.nearest) h += "<code>" + piece(n.token) + "</code> " + fmt("%.2f", n.prob) + " &nbsp; ";
  h += "</p>\n</section>\n";

  // 3. Blocks.
  float biggest = 1e-12f;
  for (const auto& b : e.blocks) biggest = std::max({biggest, b.attention_norm, b.ffn_norm, b.residual_norm});
  h += "<section id=\"blocks\">\n<h2>" + std::string(t.blocks_h) + "</h2>\n<p class=\"why\">" + t.blocks_p + "</p>\n";
  for (size_t l = 0; l < e.blocks.size(); ++l) {
    const auto& b = e.blocks[l];
    h += "<section class=\"block\" id=\"block-" + std::to_string(l) + "\">\n<h3>Block " + std::to_string(l) + "</h3>\n<table>\n";
    for (size_t hd = 0; hd < b.heads.size(); ++hd) {
      const auto& w = b.heads[hd].weights;
      std::vector<size_t> order(w.size());
      for (size_t j = 0; j < w.size(); ++j) order[j] = j;
      const size_t k = std::min<size_t>(3, w.size());
      std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(k), order.end(),
                        [&](size_t a, size_t c) { return w[a] > w[c]; });
      h += "<tr><th>" + std::string(t.head) + " " + std::to_string(hd) + "</th><td>" + attention_strip(w) + "</td><td>";
      for (size_t j = 0; j < k; ++j) {
        h += "<code>" + piece(e.tokens[order[j]]) + "</code>@" + std::to_string(order[j]) + " " + fmt("%.2f", w[order[j]]) + " ";
      }
      h += "</td></tr>\n";
    }
    h += "</table>\n<table>\n";
    h += "<tr><th>" + std::string(t.attn) + "</th><td>" + bar(b.attention_norm / biggest) + fmt("%.3f", b.attention_norm) + "</td></tr>\n";
    h += "<tr><th>" + std::string(t.ffn) + "</th><td>" + bar(b.ffn_norm / biggest) + fmt("%.3f", b.ffn_norm) + "</td></tr>\n";
    h += "<tr><th>" + std::string(t.stream) + "</th><td>" + bar(b.residual_norm / biggest) + fmt("%.3f", b.residual_norm) + "</td></tr>\n";
    h += "<tr><th>" + std::string(t.lens) + "</th><td>";
    for (const auto& p : b.lens) h += "<code>" + piece(p.token) + "</code> " + fmt("%.3f", p.prob) + " &nbsp; ";
    h += '(';  // (not "(" + string: GCC 12 warns falsely about it, bug 105329)
    h += t.entropy;
    h += ' ' + fmt("%.2f", b.lens_entropy) + ")</td></tr>\n</table>\n</section>\n";
  }
  h += "</section>\n";

  // 4. Output.
  h += "<section id=\"output\">\n<h2>" + std::string(t.output_h) + "</h2>\n<p class=\"why\">" + t.output_p + "</p>\n<table>\n";
  for (const auto& p : e.top) {
    h += "<tr><td><code>" + piece(p.token) + "</code></td><td>" + bar(p.prob) + fmt("%.4f", p.prob) + "</td></tr>\n";
  }
  h += "</table>\n<p>" + std::string(t.entropy) + ": " + fmt("%.3f", e.entropy) + " nats</p>\n<table>\n<tr><th>" + t.setting +
       "</th><th>" + t.kept + "</th><th>" + t.top_prob + "</th><th>" + t.entropy + "</th></tr>\n";
  for (const auto& s : e.sampling) {
    h += "<tr><td>" + xml_escape(s.setting) + "</td><td>" + std::to_string(s.kept) + "</td><td>" + fmt("%.4f", s.top_prob) +
         "</td><td>" + fmt("%.3f", s.entropy) + "</td></tr>\n";
  }
  h += "</table>\n</section>\n</body>\n</html>\n";
  return h;
}

}  // namespace gpt
