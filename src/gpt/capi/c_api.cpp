// The C API (include/gpt.h) over the C++ library: opaque handles around
// OpenedModel, InferenceSession and OptimizerStep. Every entry point catches
// everything: a C caller gets a status and a one-line message, never an
// exception or an abort.
#include "gpt.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "gpt/distributed/communicator.h"
#include "gpt/generation/generate.h"
#include "gpt/generation/kv_cache.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/model_loader.h"
#include "gpt/kernels/build_info.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/training/evaluate.h"
#include "gpt/training/optimizer_step.h"
#include "gpt/util/error.h"

struct gpt_model {
  bool trainable = false;  // loaded for training: fp32 weights that gpt_trainer_step updates
  gpt::OpenedModel opened;
  gpt::InferenceWeights weights;  // views that keep the model alive (sessions outlive the handle safely)
  std::unique_ptr<gpt::ComputeContext> compute;
  gpt::KvCacheType kv = gpt::KvCacheType::kAuto;
  std::string tokenizer_type, weight_type;
  std::unique_ptr<gpt::InferenceSession> generation;  // gpt_generate's, made on first use
};

struct gpt_session {
  std::unique_ptr<gpt::InferenceSession> session;  // its weights keep the model alive
};

struct gpt_trainer {
  std::shared_ptr<gpt::GPT> model;  // keeps the weights alive after gpt_model_free
  std::unique_ptr<gpt::OptimizerStep> optimizer;
  gpt_train_params params{};
  int64_t steps = 0;
  std::unique_ptr<gpt::ComputeContext> compute;  // the model's options; its own bf16 scratch
};

namespace {

// The message of the thread's last failure: a fixed buffer, so recording one
// never allocates (it may follow an out-of-memory error) and never throws.
thread_local char last_error[1024];

struct StopRequested {};  // thrown through generate() when the callback asks to stop

gpt_status fail(gpt_status status, const char* message) noexcept {
  std::snprintf(last_error, sizeof last_error, "%s", message);
  for (char* c = last_error; *c != '\0'; ++c)
    if (*c == '\n') *c = ' ';  // one line
  return status;
}
gpt_status fail(gpt_status status, const std::string& message) noexcept { return fail(status, message.c_str()); }

// Runs `body`, turning every exception into a status: gpt::Error (bad input)
// becomes `input_error`, the rest by kind. Every entry point runs all its work,
// argument checks and messages included, in here: nothing escapes into C.
template <class F>
gpt_status guarded(gpt_status input_error, F&& body) noexcept {
  try {
    return body();
  } catch (const gpt::Error& e) {
    return fail(input_error, e.what());
  } catch (const std::bad_alloc&) {
    return fail(GPT_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::filesystem::filesystem_error& e) {
    return fail(GPT_ERR_IO, e.what());
  } catch (const std::exception& e) {
    char message[sizeof last_error];
    std::snprintf(message, sizeof message, "internal error: %s", e.what());
    return fail(GPT_ERR_INTERNAL, message);
  } catch (...) {
    return fail(GPT_ERR_INTERNAL, "unknown internal error");
  }
}

#define GPT_REQUIRE(pointer, name)                                                         \
  do {                                                                                     \
    if ((pointer) == nullptr) return fail(GPT_ERR_INVALID_ARGUMENT, name " is NULL");    \
  } while (0)

bool finite_nonnegative(float x) { return std::isfinite(x) && x >= 0; }

// `s` and a NUL into the caller's buffer, or GPT_ERR_BUFFER_TOO_SMALL.
gpt_status copy_text(const std::string& s, char* text, size_t capacity) {
  if (s.size() + 1 > capacity) {
    return fail(GPT_ERR_BUFFER_TOO_SMALL,
                "the text is " + std::to_string(s.size()) + " bytes and a NUL; the buffer holds " + std::to_string(capacity));
  }
  std::memcpy(text, s.data(), s.size());
  text[s.size()] = '\0';
  return GPT_OK;
}

gpt_status check_ids(const int32_t* ids, size_t n, int64_t vocab, const char* what) {
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return fail(GPT_ERR_BAD_INPUT, std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                                         " is outside the vocabulary (0.." + std::to_string(vocab - 1) + ")");
    }
  }
  return GPT_OK;
}

std::string weight_type_name(const gpt::OpenedModel& m) {
  std::string s = gpt::ggml_type_name(m.type);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

extern "C" {

const char* gpt_last_error(void) { return last_error; }

const char* gpt_status_name(int status) {
  switch (status) {
    case GPT_OK: return "GPT_OK";
    case GPT_ERR_INVALID_ARGUMENT: return "GPT_ERR_INVALID_ARGUMENT";
    case GPT_ERR_NOT_FOUND: return "GPT_ERR_NOT_FOUND";
    case GPT_ERR_BAD_MODEL: return "GPT_ERR_BAD_MODEL";
    case GPT_ERR_BAD_INPUT: return "GPT_ERR_BAD_INPUT";
    case GPT_ERR_BUFFER_TOO_SMALL: return "GPT_ERR_BUFFER_TOO_SMALL";
    case GPT_ERR_UNSUPPORTED: return "GPT_ERR_UNSUPPORTED";
    case GPT_ERR_OUT_OF_MEMORY: return "GPT_ERR_OUT_OF_MEMORY";
    case GPT_ERR_IO: return "GPT_ERR_IO";
    case GPT_ERR_INTERNAL: return "GPT_ERR_INTERNAL";
  }
  return "GPT_ERR_UNKNOWN";
}

const char* gpt_version(void) { return gpt::version_string(); }
int gpt_api_version(void) { return GPT_API_VERSION; }

gpt_model_params gpt_model_default_params(void) {
  gpt_model_params p;
  p.threads = 0;
  p.trainable = 0;
  p.quantize = nullptr;
  p.kv_cache = GPT_KV_AUTO;
  return p;
}

gpt_status gpt_model_load(const char* path, const gpt_model_params* params, gpt_model** model) {
  return guarded(GPT_ERR_BAD_MODEL, [&] {
  GPT_REQUIRE(model, "model (the output pointer)");
  *model = nullptr;
  GPT_REQUIRE(path, "path");
  const gpt_model_params p = params ? *params : gpt_model_default_params();
  if (p.threads < 0) return fail(GPT_ERR_INVALID_ARGUMENT, "threads must be >= 0, not " + std::to_string(p.threads));
  if (p.kv_cache < GPT_KV_AUTO || p.kv_cache > GPT_KV_F16) {
    return fail(GPT_ERR_INVALID_ARGUMENT, "kv_cache must be GPT_KV_AUTO, GPT_KV_F32 or GPT_KV_F16");
  }
  if (p.trainable && p.quantize != nullptr) {
    return fail(GPT_ERR_INVALID_ARGUMENT, "a trainable model keeps fp32 weights: quantize must be NULL");
  }
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  if (ec) return fail(GPT_ERR_IO, std::string("cannot look at ") + path + ": " + ec.message());
  if (!exists) return fail(GPT_ERR_NOT_FOUND, std::string("model not found: ") + path);
    auto m = std::make_unique<gpt_model>();
    m->trainable = p.trainable != 0;
    m->compute = std::make_unique<gpt::ComputeContext>(gpt::ComputeOptions{gpt::MatmulPrecision::kFloat32, p.threads});
    const gpt::ComputeScope scope(*m->compute);
    gpt::ModelOpenOptions options;
    options.dequantize = m->trainable;
    // As `gpt generate` loads: fp32 matrices re-laid for the few-rows kernels
    // (on CPUs that run them).
    options.panels = !m->trainable;
    if (p.quantize != nullptr) {
      try {
        options.convert_to = gpt::QuantRecipe::parse(p.quantize);
      } catch (const gpt::Error& e) {
        return fail(GPT_ERR_INVALID_ARGUMENT, e.what());
      }
    }
    m->opened = gpt::open_model(path, options);
    m->weights = m->opened.inference_weights();
    m->kv = p.kv_cache == GPT_KV_F32 ? gpt::KvCacheType::kF32
            : p.kv_cache == GPT_KV_F16 ? gpt::KvCacheType::kF16
                                       : gpt::KvCacheType::kAuto;
    m->tokenizer_type = m->opened.tokenizer->type();
    m->weight_type = weight_type_name(m->opened);
    *model = m.release();
    return GPT_OK;
  });
}

void gpt_model_free(gpt_model* model) { delete model; }

gpt_status gpt_model_get_info(const gpt_model* model, gpt_model_info* info) {
  return guarded(GPT_ERR_INTERNAL, [&] {
    GPT_REQUIRE(model, "model");
    GPT_REQUIRE(info, "info");
    const gpt::ModelConfig& c = model->opened.config();
    info->vocab_size = c.vocab_size;
    info->context_length = c.block_size;
    info->n_layer = c.n_layer;
    info->n_head = c.n_head;
    info->n_embd = c.n_embd;
    info->n_params = static_cast<int64_t>(gpt::ParameterLayout(c).total());
    info->tokenizer = model->tokenizer_type.c_str();
    info->weight_type = model->weight_type.c_str();
    return GPT_OK;
  });
}

gpt_status gpt_model_save(const gpt_model* model, const char* dir) {
  return guarded(GPT_ERR_IO, [&] {
    GPT_REQUIRE(model, "model");
    GPT_REQUIRE(dir, "dir");
    if (!model->trainable) {
      return fail(GPT_ERR_UNSUPPORTED, "saving needs a model loaded with trainable = 1 (its fp32 weights)");
    }
    gpt::CheckpointContents contents;
    contents.model = model->opened.fp32.get();
    contents.tokenizer = model->opened.tokenizer.get();
    gpt::save_checkpoint(dir, contents);
    return GPT_OK;
  });
}

gpt_status gpt_tokenize(const gpt_model* model, const char* text, size_t text_len, int32_t* tokens, size_t capacity,
                        size_t* n_tokens) {
  return guarded(GPT_ERR_BAD_INPUT, [&] {
    GPT_REQUIRE(model, "model");
    GPT_REQUIRE(n_tokens, "n_tokens");
    if (text == nullptr && text_len > 0) return fail(GPT_ERR_INVALID_ARGUMENT, "text is NULL");
    if (tokens == nullptr && capacity > 0) return fail(GPT_ERR_INVALID_ARGUMENT, "tokens is NULL");
    const std::vector<int32_t> ids = model->opened.tokenizer->encode(std::string_view(text ? text : "", text_len));
    *n_tokens = ids.size();
    if (ids.size() > capacity) {
      return fail(GPT_ERR_BUFFER_TOO_SMALL, "the text is " + std::to_string(ids.size()) +
                                                " tokens; the buffer holds " + std::to_string(capacity));
    }
    std::copy(ids.begin(), ids.end(), tokens);
    return GPT_OK;
  });
}

gpt_status gpt_detokenize(const gpt_model* model, const int32_t* tokens, size_t n_tokens, char* text,
                          size_t capacity, size_t* n_bytes) {
  return guarded(GPT_ERR_BAD_INPUT, [&] {
    GPT_REQUIRE(model, "model");
    GPT_REQUIRE(n_bytes, "n_bytes");
    if (tokens == nullptr && n_tokens > 0) return fail(GPT_ERR_INVALID_ARGUMENT, "tokens is NULL");
    if (text == nullptr && capacity > 0) return fail(GPT_ERR_INVALID_ARGUMENT, "text is NULL");
    if (gpt_status s = check_ids(tokens, n_tokens, model->opened.config().vocab_size, "tokens"); s != GPT_OK) return s;
    const std::string bytes = model->opened.tokenizer->decode({tokens, n_tokens});
    *n_bytes = bytes.size();
    return copy_text(bytes, text, capacity);
  });
}

gpt_status gpt_session_create(gpt_model* model, gpt_session** session) {
  return guarded(GPT_ERR_INTERNAL, [&] {
    GPT_REQUIRE(session, "session (the output pointer)");
    *session = nullptr;
    GPT_REQUIRE(model, "model");
    auto s = std::make_unique<gpt_session>();
    s->session = std::make_unique<gpt::InferenceSession>(model->weights, model->kv, model->compute->options());
    *session = s.release();
    return GPT_OK;
  });
}

void gpt_session_free(gpt_session* session) { delete session; }

gpt_status gpt_session_reset(gpt_session* session) {
  return guarded(GPT_ERR_INTERNAL, [&] {
    GPT_REQUIRE(session, "session");
    session->session->reset();
    return GPT_OK;
  });
}

int64_t gpt_session_position(const gpt_session* session) { return session ? session->session->position() : -1; }

gpt_status gpt_session_eval(gpt_session* session, const int32_t* tokens, size_t n_tokens, int all_positions,
                            float* logits, size_t capacity) {
  return guarded(GPT_ERR_BAD_INPUT, [&] {
    GPT_REQUIRE(session, "session");
    GPT_REQUIRE(tokens, "tokens");
    if (n_tokens == 0) return fail(GPT_ERR_INVALID_ARGUMENT, "n_tokens is 0");
    if (logits == nullptr && capacity > 0) return fail(GPT_ERR_INVALID_ARGUMENT, "logits is NULL");
    gpt::InferenceSession& s = *session->session;
    const int64_t V = s.vocab_size();
    // First the context, so that n_tokens * V below cannot overflow.
    const auto free_positions = static_cast<size_t>(s.capacity() - s.position());
    if (all_positions && n_tokens > free_positions) {
      return fail(GPT_ERR_BAD_INPUT, "logits for all " + std::to_string(n_tokens) +
                                         " tokens need them in the free context (" + std::to_string(free_positions) +
                                         " positions)");
    }
    if (gpt_status st = check_ids(tokens, n_tokens, V, "tokens"); st != GPT_OK) return st;
    const size_t needed = static_cast<size_t>(V) * (all_positions ? n_tokens : 1);
    if (logits != nullptr && capacity < needed) {
      return fail(GPT_ERR_BUFFER_TOO_SMALL, "the logits need " + std::to_string(needed) + " floats; the buffer holds " +
                                                std::to_string(capacity));
    }
    const float* out = s.append(tokens, static_cast<int64_t>(n_tokens), all_positions != 0);
    if (logits != nullptr) std::memcpy(logits, all_positions ? s.logits() : out, needed * sizeof(float));
    return GPT_OK;
  });
}

gpt_status gpt_score_text(gpt_model* model, const char* text, size_t text_len, gpt_text_score* score) {
  return guarded(GPT_ERR_BAD_INPUT, [&] {
    GPT_REQUIRE(model, "model");
    GPT_REQUIRE(score, "score");
    if (text == nullptr && text_len > 0) return fail(GPT_ERR_INVALID_ARGUMENT, "text is NULL");
    const gpt::ComputeScope scope(*model->compute);
    const gpt::TextEvaluation e =
        gpt::evaluate_text(model->weights, *model->opened.tokenizer, std::string(text ? text : "", text_len));
    score->mean_loss = e.mean_loss;
    score->perplexity = e.perplexity;
    score->bits_per_byte = e.bits_per_byte;
    score->tokens = e.tokens;
    return GPT_OK;
  });
}

gpt_generate_params gpt_generate_default_params(void) {
  const gpt::GenerateOptions g;
  gpt_generate_params p;
  p.max_tokens = static_cast<int32_t>(g.max_new_tokens);
  p.greedy = g.sampling.greedy;
  p.temperature = g.sampling.temperature;
  p.top_k = g.sampling.top_k;
  p.top_p = g.sampling.top_p;
  p.min_p = g.sampling.min_p;
  p.repeat_penalty = g.sampling.repeat_penalty;
  p.repeat_last_n = g.sampling.repeat_last_n;
  p.presence_penalty = g.sampling.presence_penalty;
  p.frequency_penalty = g.sampling.frequency_penalty;
  p.seed = g.seed;
  p.stop = nullptr;
  p.n_stop = 0;
  return p;
}

gpt_status gpt_generate(gpt_model* model, const char* prompt, const gpt_generate_params* params,
                        gpt_text_callback callback, void* user_data, char* text, size_t capacity, size_t* n_bytes) {
  return guarded(GPT_ERR_BAD_INPUT, [&] {
  GPT_REQUIRE(model, "model");
  GPT_REQUIRE(prompt, "prompt");
  if (text == nullptr && capacity > 0) return fail(GPT_ERR_INVALID_ARGUMENT, "text is NULL");
  if (text != nullptr && n_bytes == nullptr) return fail(GPT_ERR_INVALID_ARGUMENT, "n_bytes is NULL");
  const gpt_generate_params p = params ? *params : gpt_generate_default_params();
  gpt::GenerateOptions g;
  if (p.max_tokens < 0) return fail(GPT_ERR_INVALID_ARGUMENT, "max_tokens must be >= 0");
  g.max_new_tokens = p.max_tokens;
  g.sampling.greedy = p.greedy != 0;
  g.sampling.temperature = p.temperature;
  g.sampling.top_k = p.top_k;
  g.sampling.top_p = p.top_p;
  g.sampling.min_p = p.min_p;
  g.sampling.repeat_penalty = p.repeat_penalty;
  g.sampling.repeat_last_n = p.repeat_last_n;
  g.sampling.presence_penalty = p.presence_penalty;
  g.sampling.frequency_penalty = p.frequency_penalty;
  g.seed = p.seed;
  if (p.n_stop > 0 && p.stop == nullptr) return fail(GPT_ERR_INVALID_ARGUMENT, "stop is NULL but n_stop > 0");
  for (size_t i = 0; i < p.n_stop; ++i) {
    if (p.stop[i] == nullptr || p.stop[i][0] == '\0') {
      return fail(GPT_ERR_INVALID_ARGUMENT, "stop[" + std::to_string(i) + "] is NULL or empty");
    }
    g.stop.emplace_back(p.stop[i]);
  }
  try {
    g.sampling.validate();
  } catch (const gpt::Error& e) {
    return fail(GPT_ERR_INVALID_ARGUMENT, e.what());
  }
    const gpt::ComputeScope scope(*model->compute);
    const gpt::Tokenizer& tok = *model->opened.tokenizer;
    const std::vector<int32_t> ids = tok.encode_prompt(prompt);
    const int64_t context = model->opened.config().block_size;
    GPT_CHECK(static_cast<int64_t>(ids.size()) <= context,
              "the prompt is " + std::to_string(ids.size()) + " tokens but the model's context is " +
                  std::to_string(context));
    if (!model->generation) {
      model->generation = std::make_unique<gpt::InferenceSession>(model->weights, model->kv, model->compute->options());
    }
    model->generation->reset();
    std::string produced;
    auto on_text = [&](const std::string& piece) {
      produced += piece;
      if (callback != nullptr && callback(piece.data(), piece.size(), user_data) != 0) throw StopRequested{};
    };
    try {
      const gpt::GenerateResult r = gpt::generate(*model->generation, tok, ids, g, on_text);
      produced = r.text;
    } catch (const StopRequested&) {
      // The caller has what it wanted; `produced` holds the text up to here.
    }
    if (n_bytes != nullptr) *n_bytes = produced.size();
    if (text == nullptr) return GPT_OK;
    return copy_text(produced, text, capacity);
  });
}

gpt_train_params gpt_train_default_params(void) {
  const gpt::OptimizerStepOptions o;
  gpt_train_params p;
  p.learning_rate = 3e-4f;
  p.beta1 = o.adamw.beta1;
  p.beta2 = o.adamw.beta2;
  p.eps = o.adamw.eps;
  p.weight_decay = o.adamw.weight_decay;
  p.grad_clip = o.grad_clip;
  return p;
}

gpt_status gpt_trainer_create(gpt_model* model, const gpt_train_params* params, gpt_trainer** trainer) {
  return guarded(GPT_ERR_INTERNAL, [&] {
  GPT_REQUIRE(trainer, "trainer (the output pointer)");
  *trainer = nullptr;
  GPT_REQUIRE(model, "model");
  if (!model->trainable) {
    return fail(GPT_ERR_UNSUPPORTED, "training needs a model loaded with trainable = 1 (fp32 weights)");
  }
  const gpt_train_params p = params ? *params : gpt_train_default_params();
  if (!finite_nonnegative(p.learning_rate) || !(p.beta1 >= 0 && p.beta1 < 1) || !(p.beta2 >= 0 && p.beta2 < 1) ||
      !(std::isfinite(p.eps) && p.eps > 0) || !finite_nonnegative(p.weight_decay) || !finite_nonnegative(p.grad_clip)) {
    return fail(GPT_ERR_INVALID_ARGUMENT,
                "train params out of range: learning_rate, weight_decay, grad_clip finite and >= 0; "
                "0 <= beta1, beta2 < 1; eps finite and > 0");
  }
    auto t = std::make_unique<gpt_trainer>();
    t->model = model->opened.fp32;
    t->params = p;
    gpt::OptimizerStepOptions o;
    o.adamw.beta1 = p.beta1;
    o.adamw.beta2 = p.beta2;
    o.adamw.eps = p.eps;
    o.adamw.weight_decay = p.weight_decay;
    o.grad_clip = p.grad_clip;
    // One process: MPI, if the host program uses it, is not ours to start or join.
    t->optimizer = std::make_unique<gpt::OptimizerStep>(t->model->layout(), gpt::Communicator::single_process(), o);
    t->compute = std::make_unique<gpt::ComputeContext>(model->compute->options());
    *trainer = t.release();
    return GPT_OK;
  });
}

void gpt_trainer_free(gpt_trainer* trainer) { delete trainer; }

int64_t gpt_trainer_steps(const gpt_trainer* trainer) { return trainer ? trainer->steps : -1; }

gpt_status gpt_trainer_set_learning_rate(gpt_trainer* trainer, float learning_rate) {
  GPT_REQUIRE(trainer, "trainer");
  if (!finite_nonnegative(learning_rate)) return fail(GPT_ERR_INVALID_ARGUMENT, "learning_rate must be finite and >= 0");
  trainer->params.learning_rate = learning_rate;
  return GPT_OK;
}

gpt_status gpt_trainer_step(gpt_trainer* trainer, const int32_t* inputs, const int32_t* targets, int32_t batch,
                            int32_t seq_len, float* loss, float* grad_norm) {
  return guarded(GPT_ERR_BAD_INPUT, [&] {
  GPT_REQUIRE(trainer, "trainer");
  GPT_REQUIRE(inputs, "inputs");
  GPT_REQUIRE(targets, "targets");
  GPT_REQUIRE(loss, "loss");
  gpt::GPT& model = *trainer->model;
  const int64_t context = model.config().block_size;
  if (batch < 1) return fail(GPT_ERR_INVALID_ARGUMENT, "batch must be >= 1, not " + std::to_string(batch));
  if (seq_len < 1 || seq_len > context) {
    return fail(GPT_ERR_INVALID_ARGUMENT, "seq_len must be 1.." + std::to_string(context) + " (the context), not " +
                                              std::to_string(seq_len));
  }
  const size_t n = static_cast<size_t>(batch) * static_cast<size_t>(seq_len);
  const int64_t V = model.config().vocab_size;
  if (gpt_status s = check_ids(inputs, n, V, "inputs"); s != GPT_OK) return s;
  if (gpt_status s = check_ids(targets, n, V, "targets"); s != GPT_OK) return s;
    const gpt::ComputeScope scope(*trainer->compute);
    model.zero_grad();
    const float l = model.forward_backward(inputs, targets, batch, seq_len);
    const float norm = trainer->optimizer->apply(model, trainer->params.learning_rate, trainer->steps + 1);
    ++trainer->steps;
    *loss = l;
    if (grad_norm != nullptr) *grad_norm = norm;
    return GPT_OK;
  });
}

}  // extern "C"
