#include "gpt/generation/generate.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "gpt/generation/text_stream.h"
#include "gpt/util/error.h"

namespace gpt {

GenerateResult generate(InferenceSession& session, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options, const std::function<void(const std::string&)>& on_text,
                        const std::function<void(const TokenEvent&)>& on_token) {
  GPT_CHECK(!prompt.empty() || session.position() > 0, "generation needs a prompt of at least one token");
  GPT_CHECK(options.max_new_tokens >= 0, "--max-tokens must not be negative");
  using clock = std::chrono::steady_clock;
  StopTextStream stream(options.stop);
  Sampler sampler(options.sampling, options.seed);
  GenerateResult result;

  auto t0 = clock::now();
  const float* logits = nullptr;
  if (!prompt.empty()) logits = session.append(prompt.data(), static_cast<int64_t>(prompt.size()));
  result.prefill_tokens = static_cast<int64_t>(prompt.size());
  result.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  GPT_CHECK(logits != nullptr, "generation needs a prompt of at least one token");

  t0 = clock::now();
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const int32_t next = sampler.sample(logits, session.vocab_size(), session.tokens());
    result.tokens.push_back(next);
    if (on_token) {
      TokenEvent ev{step, next, sampler.probability(next), {}};
      if (options.top_probs > 0) ev.top = sampler.top(options.top_probs);
      on_token(ev);
    }
    const std::string piece = stream.push(tokenizer.token_bytes(next));
    if (!piece.empty() && on_text) on_text(piece);
    // Feed the token back, so the session's context is prompt + generated text
    // (a chat continues from it).
    logits = session.append(&next, 1);
    if (stream.stopped()) break;
  }
  if (const std::string rest = stream.flush(); !rest.empty() && on_text) on_text(rest);
  result.stopped = stream.stopped();
  result.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  result.text = stream.text();
  return result;
}

SamplesReport generate_samples(const InferenceWeights& weights, const Tokenizer& tokenizer,
                               const std::vector<int32_t>& prompt, const GenerateOptions& options, int num_samples,
                               int parallel, const EngineOptions& engine_options,
                               const std::function<void(int, const GenerateResult&)>& on_sample) {
  using clock = std::chrono::steady_clock;
  GPT_CHECK(num_samples > 0, "the number of samples must be positive");
  GPT_CHECK(parallel > 0, "--parallel must be positive");
  GPT_CHECK(options.max_new_tokens > 0, "--max-tokens must be positive for several samples");
  std::vector<StopTextStream> streams(static_cast<size_t>(num_samples), StopTextStream(options.stop));
  const auto t0 = clock::now();
  BatchedEngine engine(weights, engine_options);
  SamplesReport report;
  report.samples.resize(static_cast<size_t>(num_samples));
  std::map<int64_t, int> sample_of;  // engine id -> sample
  std::vector<bool> done(static_cast<size_t>(num_samples), false);
  int next_to_add = 0, next_to_report = 0;
  auto finish = [&](int i) {
    done[static_cast<size_t>(i)] = true;
    while (next_to_report < num_samples && done[static_cast<size_t>(next_to_report)]) {
      if (on_sample) on_sample(next_to_report, report.samples[static_cast<size_t>(next_to_report)]);
      ++next_to_report;
    }
  };
  while (next_to_report < num_samples) {
    while (next_to_add < num_samples && engine.active() < parallel) {
      SequenceOptions so;
      so.sampling = options.sampling;
      so.seed = options.seed + static_cast<uint64_t>(next_to_add);
      so.max_new_tokens = options.max_new_tokens;
      sample_of[engine.add(prompt, so)] = next_to_add++;
    }
    for (const BatchedEngine::Event& e : engine.step()) {
      const int i = sample_of.at(e.id);
      GenerateResult& r = report.samples[static_cast<size_t>(i)];
      r.tokens.push_back(e.token);
      ++report.generated_tokens;
      StopTextStream& stream = streams[static_cast<size_t>(i)];
      stream.push(tokenizer.token_bytes(e.token));
      if (stream.stopped()) {
        r.stopped = true;
        if (engine.contains(e.id)) engine.cancel(e.id);
      }
      if (r.stopped || e.finished != FinishReason::kNone) {
        r.text = stream.text();
        sample_of.erase(e.id);
        finish(i);
      }
    }
  }
  report.reused_positions = engine.reused_positions();
  report.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return report;
}

}  // namespace gpt
