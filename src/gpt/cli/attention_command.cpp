// gpt attention: draw where each token of a prompt looks, as SVG heat maps.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <omp.h>

#include "gpt/cli/commands.h"
#include "gpt/cli/loss_plot.h"
#include "gpt/cli/model_flags.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"
#include "gpt/training/trainer.h"
#include "gpt/viz/svg.h"

namespace gpt::cli {

Command add_attention_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("attention", "Draw a model's attention weights on a prompt (SVG)");
  app->footer("\nExamples:\n  gpt attention --model out/mymodel --prompt \"To be, or not to be\" --out attention.svg\n  gpt attention --model out/mymodel --prompt \"To be, or not to be\" --layer 0 --head 3 --out head3.svg");
  struct Options {
    ModelFlags model;
    std::string prompt, out;
    int layer = -1, head = -1;
  };
  auto o = std::make_shared<Options>();
  add_model_flags(app, o->model, /*allow_quantize=*/false);
  app->add_option("--prompt", o->prompt, "Text to look at")->required();
  app->add_option("--out", o->out, "SVG file to write")->required();
  app->add_option("--layer", o->layer, "Layer (default: the last)");
  app->add_option("--head", o->head, "Head (default: a grid of all heads)");
  auto run = [o]() -> int {
    if (auto bad = find_invalid_utf8(o->prompt)) {
      throw Error("the prompt is not valid UTF-8 (first bad byte at offset " + std::to_string(*bad) + ")");
    }
    OpenedModel m = open_model(o->model, /*dequantize=*/true);
    const ModelConfig& c = m.fp32->config();
    const int layer = o->layer < 0 ? c.n_layer - 1 : o->layer;
    GPT_CHECK(layer < c.n_layer, "--layer " + std::to_string(layer) + " out of range: the model has " +
                                 std::to_string(c.n_layer) + " layers (0 .. " + std::to_string(c.n_layer - 1) + ")");
    GPT_CHECK(o->head < c.n_head, "--head " + std::to_string(o->head) + " out of range: the model has " +
                                  std::to_string(c.n_head) + " heads");
    const std::vector<int32_t> ids = m.tokenizer->encode_prompt(o->prompt);
    GPT_CHECK(!ids.empty(), "the prompt is empty");
    GPT_CHECK(static_cast<int64_t>(ids.size()) <= c.block_size,
          "the prompt is " + std::to_string(ids.size()) + " tokens but the model's context is " +
              std::to_string(c.block_size));
    const auto T = static_cast<int64_t>(ids.size());
    m.fp32->forward(ids.data(), nullptr, 1, T);
    const float* att = m.fp32->attention_weights(layer);  // (1, NH, T, T)
    std::vector<std::vector<float>> heads;
    std::vector<int> head_ids;
    for (int h = 0; h < c.n_head; ++h) {
      if (o->head >= 0 && h != o->head) continue;
      heads.emplace_back(att + h * T * T, att + (h + 1) * T * T);
      head_ids.push_back(h);
    }
    std::vector<std::string> labels;
    for (int32_t id : ids) labels.push_back(m.tokenizer->token_bytes(id));
    write_file_atomic(o->out, attention_svg(labels, heads, head_ids, layer));
    std::printf("%s\n", o->out.c_str());
    return 0;
  };
  return {app, run};
}

Command add_plot_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("plot", "Draw a training log's curves (SVG), or several runs' side by side");
  app->footer("\nExamples:\n  gpt plot out/mymodel/train_log.jsonl --out loss.svg\n"
              "  gpt plot out/ppo/train_log.jsonl --metric reward --out reward.svg\n"
              "  gpt plot out/base/train_log.jsonl out/fast/train_log.jsonl --label baseline,fast --x minutes "
              "--target 1.47 --out race.svg");
  struct Options {
    std::vector<std::string> logs, labels;
    std::string out, metric = "loss", x = "step", title;
    std::optional<double> target;
  };
  auto o = std::make_shared<Options>();
  app->add_option("log", o->logs, "Training logs (JSON lines, as written by gpt train, sft, reward, dpo, rlhf); "
                                  "with several, each one's validation curve (else its training curve)")
      ->required();
  app->add_option("--out", o->out, "SVG file to write")->required();
  app->add_option("--metric", o->metric,
                  "What to draw: loss, or any number in the log (reward, kl, entropy, clip_fraction, accuracy, margin, ...)")
      ->capture_default_str();
  app->add_option("--x", o->x, "Horizontal axis: step, or minutes of wall-clock since the run began")
      ->check(CLI::IsMember({"step", "minutes"}))
      ->capture_default_str();
  app->add_option("--label", o->labels, "A name per log for the legend (comma-separated; default: each log's directory)")
      ->delimiter(',')
      ->allow_extra_args(false);
  app->add_option("--target", o->target, "Draw a dashed line at this value (a loss to reach)");
  app->add_option("--title", o->title, "The drawing's title (default: what is drawn, and from which log)");
  auto run = [o]() -> int {
    const bool compare = o->logs.size() > 1 || o->x != "step" || o->target || !o->labels.empty();
    std::string title = o->title;
    if (title.empty()) {
      title = (o->metric == "loss" ? std::string(o->logs.size() > 1 ? "Validation loss" : "Training loss") : o->metric) + ": " +
              (o->logs.size() == 1 ? o->logs[0] : std::to_string(o->logs.size()) + " runs");
    }
    if (compare) {
      draw_log_comparison(o->logs, o->labels, o->metric, o->x == "minutes", o->target, o->out, title);
    } else {
      draw_log_metric(o->logs[0], o->metric, o->out, title);
    }
    std::printf("%s\n", o->out.c_str());
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
