/*
 * gpt.h: the C API of gpt.cpp (libgptcpp), for C programs and for every language
 * that binds C (Python's ctypes, Rust, Go, ...).
 *
 * - Opaque handles; only C types cross the boundary.
 * - Every call that can fail returns a gpt_status; GPT_OK is 0. On failure,
 *   gpt_last_error() holds a one-line message (per thread, valid until the
 *   thread's next failing call). Nothing is thrown, nothing aborts: a bad path,
 *   a corrupt file, a NULL handle or a buffer too small is an error code.
 * - Buffers are the caller's. A call writing into one takes its capacity; when
 *   it is too small the call returns GPT_ERR_BUFFER_TOO_SMALL and, where the
 *   size needed is not known in advance (text, tokens), stores it, so the caller
 *   can allocate and call again.
 * - The structs are fixed for GPT_API_VERSION 1: what later versions add comes
 *   as new functions, so a program built against this header keeps working.
 * - A model handle is used by one thread at a time (its sessions and trainer
 *   included). Separate models are independent.
 *
 * Link with -lgptcpp (pkg-config gptcpp, or CMake: find_package(gptcpp),
 * target gptcpp::gptcpp).
 */
#ifndef GPT_H
#define GPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GPT_API_VERSION 1

typedef enum gpt_status {
  GPT_OK = 0,
  GPT_ERR_INVALID_ARGUMENT = 1, /* a NULL handle or pointer, a value out of range */
  GPT_ERR_NOT_FOUND = 2,        /* no such file or directory */
  GPT_ERR_BAD_MODEL = 3,        /* a model or tokenizer file that cannot be read: corrupt, truncated, wrong shapes */
  GPT_ERR_BAD_INPUT = 4,        /* text or token ids the model cannot take (unknown characters, ids out of the vocabulary, too long) */
  GPT_ERR_BUFFER_TOO_SMALL = 5, /* the size needed has been stored; call again with a larger buffer */
  GPT_ERR_UNSUPPORTED = 6,      /* e.g. training a model loaded for inference only */
  GPT_ERR_OUT_OF_MEMORY = 7,
  GPT_ERR_IO = 8,               /* writing a file failed */
  GPT_ERR_INTERNAL = 9
} gpt_status;

/* The message of this thread's last failing call ("" if none). */
const char* gpt_last_error(void);
/* "GPT_OK", "GPT_ERR_NOT_FOUND", ... */
const char* gpt_status_name(int status);
/* "0.1.0 (commit abc1234)" */
const char* gpt_version(void);
int gpt_api_version(void);

/* ---------------------------------------------------------------- models */

typedef struct gpt_model gpt_model;

typedef enum gpt_kv_cache_type { GPT_KV_AUTO = 0, GPT_KV_F32 = 1, GPT_KV_F16 = 2 } gpt_kv_cache_type;

typedef struct gpt_model_params {
  int threads;                  /* 0: OpenMP's default (all cores unless OMP_NUM_THREADS says otherwise) */
  int trainable;                /* nonzero: fp32 weights that gpt_trainer_step can update (GGUF and compact weights are dequantized) */
  const char* quantize;         /* NULL, or "f16", "bf16", "q8_0", "q4_0", ..., "q4_k_m", ...: convert the matrices when loading (inference only) */
  int kv_cache;                 /* a gpt_kv_cache_type: keys and values kept while generating */
} gpt_model_params;

gpt_model_params gpt_model_default_params(void);

/* Opens any model `gpt --model` takes: a gpt.cpp checkpoint directory, a Hugging
 * Face GPT-2 directory, or a GGUF file. `params` may be NULL (defaults). */
gpt_status gpt_model_load(const char* path, const gpt_model_params* params, gpt_model** model);
/* Frees the model (NULL is a no-op). Its sessions and trainers keep what they
 * use alive and may be freed before or after it. */
void gpt_model_free(gpt_model* model);

typedef struct gpt_model_info {
  int32_t vocab_size;
  int32_t context_length;  /* tokens the model attends over */
  int32_t n_layer;
  int32_t n_head;
  int32_t n_embd;
  int64_t n_params;
  const char* tokenizer;   /* "char", "byte", "bpe", ... (owned by the model) */
  const char* weight_type; /* "f32", "f16", "bf16", "q8_0", "q4_0" (owned by the model) */
} gpt_model_info;

gpt_status gpt_model_get_info(const gpt_model* model, gpt_model_info* info);

/* Saves the model as a gpt.cpp checkpoint directory (config.json,
 * model.safetensors, the tokenizer), atomically: the directory is replaced as
 * a whole. Needs a trainable model. */
gpt_status gpt_model_save(const gpt_model* model, const char* dir);

/* ------------------------------------------------------------ tokenizing */

/* Encodes `text_len` bytes of `text` into at most `capacity` ids; stores the
 * count in *n_tokens (the count needed when the buffer is too small). */
gpt_status gpt_tokenize(const gpt_model* model, const char* text, size_t text_len, int32_t* tokens,
                        size_t capacity, size_t* n_tokens);
/* Decodes ids into `text` (bytes, then a terminating NUL); *n_bytes gets the
 * byte count without the NUL. `capacity` must hold the NUL too. Byte-level
 * tokens may end inside a UTF-8 character; the bytes are given as they are. */
gpt_status gpt_detokenize(const gpt_model* model, const int32_t* tokens, size_t n_tokens, char* text,
                          size_t capacity, size_t* n_bytes);

/* ------------------------------------------------- evaluating (logits, loss) */

/* A KV-cache session: tokens appended one call after another, each call
 * computing only the new positions. When the context is full it slides (keeps
 * the most recent half and reads it again). */
typedef struct gpt_session gpt_session;

gpt_status gpt_session_create(gpt_model* model, gpt_session** session);
void gpt_session_free(gpt_session* session);
gpt_status gpt_session_reset(gpt_session* session);
/* Tokens in the session's cache, or -1 for a NULL session. */
int64_t gpt_session_position(const gpt_session* session);

/* Appends `n_tokens` ids. `logits`, if not NULL, receives the logits: for the
 * last token only (vocab_size floats), or with `all_positions` for each
 * appended token in order (n_tokens * vocab_size floats; then the tokens must
 * fit in the free context). `capacity` counts floats; a smaller one is
 * GPT_ERR_BUFFER_TOO_SMALL and the session is left as it was. */
gpt_status gpt_session_eval(gpt_session* session, const int32_t* tokens, size_t n_tokens, int all_positions,
                            float* logits, size_t capacity);

typedef struct gpt_text_score {
  double mean_loss;     /* nats per predicted token */
  double perplexity;    /* exp(mean_loss) */
  double bits_per_byte; /* total bits / bytes of the predicted tokens */
  int64_t tokens;       /* tokens predicted: every token after the first */
} gpt_text_score;

/* How well the model predicts `text` (as `gpt eval`): every token after the
 * first predicted once, in consecutive windows of the context length. */
gpt_status gpt_score_text(gpt_model* model, const char* text, size_t text_len, gpt_text_score* score);

/* ------------------------------------------------------------ generating */

typedef struct gpt_generate_params {
  int32_t max_tokens;       /* new tokens at most */
  int greedy;               /* nonzero: always the most likely token */
  float temperature;        /* 1: the model's distribution */
  int32_t top_k;            /* 0: off */
  float top_p;              /* 1: off */
  float min_p;              /* 0: off */
  float repeat_penalty;     /* 1: off */
  int32_t repeat_last_n;    /* window of the penalties; -1: whole context */
  float presence_penalty;   /* 0: off */
  float frequency_penalty;  /* 0: off */
  uint64_t seed;            /* same seed, same text */
  const char* const* stop;  /* n_stop strings; generation ends where one appears (it is not output) */
  size_t n_stop;
} gpt_generate_params;

/* The defaults of `gpt generate`. */
gpt_generate_params gpt_generate_default_params(void);

/* Receives the text as it is generated, whole UTF-8 characters only, never part
 * of a stop string. Returning nonzero stops generation (the call still returns
 * GPT_OK with the text so far). */
typedef int (*gpt_text_callback)(const char* piece, size_t len, void* user_data);

/* Continues `prompt` (NUL-terminated) from an empty context. The generated text
 * (without the prompt) goes to `callback` as it comes, if given, and to `text`
 * (then NUL-terminated) if not NULL; *n_bytes gets its length. If `text` is too
 * small the result is GPT_ERR_BUFFER_TOO_SMALL with the length needed (the
 * callback has still seen all of it). `params` may be NULL (defaults). */
gpt_status gpt_generate(gpt_model* model, const char* prompt, const gpt_generate_params* params,
                        gpt_text_callback callback, void* user_data, char* text, size_t capacity, size_t* n_bytes);

/* -------------------------------------------------------------- training */

typedef struct gpt_trainer gpt_trainer;

typedef struct gpt_train_params {
  float learning_rate;
  float beta1, beta2, eps;
  float weight_decay;  /* decoupled, on matrices only (as `gpt train`) */
  float grad_clip;     /* clip the global gradient norm to this; 0: off */
} gpt_train_params;

gpt_train_params gpt_train_default_params(void);

/* AdamW over all of a trainable model's parameters. */
gpt_status gpt_trainer_create(gpt_model* model, const gpt_train_params* params, gpt_trainer** trainer);
void gpt_trainer_free(gpt_trainer* trainer);

/* One step on a batch: `inputs` and `targets` are (batch, seq_len) ids, row-major
 * (targets[i] is the token that follows inputs[i]); seq_len <= context_length.
 * Stores the mean cross-entropy before the update in *loss and, if not NULL, the
 * gradient norm before clipping in *grad_norm. Sessions of the model see the
 * new weights at their next call. */
gpt_status gpt_trainer_step(gpt_trainer* trainer, const int32_t* inputs, const int32_t* targets, int32_t batch,
                            int32_t seq_len, float* loss, float* grad_norm);
/* For schedules: the learning rate of the following steps. */
gpt_status gpt_trainer_set_learning_rate(gpt_trainer* trainer, float learning_rate);
/* Steps taken. -1 for a NULL trainer. */
int64_t gpt_trainer_steps(const gpt_trainer* trainer);

#ifdef __cplusplus
}
#endif

#endif /* GPT_H */
