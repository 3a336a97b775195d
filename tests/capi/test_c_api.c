/* The C API (include/gpt.h) from C: what it computes, and every error path — a
 * bad path, a corrupt or truncated file, NULL handles and pointers, buffers too
 * small, ids outside the vocabulary — each an error code and a message, never a
 * crash (CI runs this under ASan + UBSan too).
 *
 * Usage: test_c_api CASE (one CTest test per case; see tests/CMakeLists.txt). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpt.h"

static const char* fixture = GPT_SOURCE_DIR "/tests/fixtures/hf_gpt2_tiny";
static int failures = 0;

#define CHECK(cond)                                                               \
  do {                                                                            \
    if (!(cond)) {                                                                \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
      ++failures;                                                                 \
    }                                                                             \
  } while (0)

/* A call that must fail with `expected` and say something containing `needle`. */
#define CHECK_FAILS(call, expected, needle)                                                          \
  do {                                                                                               \
    gpt_status s_ = (call);                                                                          \
    if (s_ != (expected)) {                                                                          \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__, __LINE__, #call,        \
              gpt_status_name(s_), gpt_status_name(expected), gpt_last_error());                     \
      ++failures;                                                                                    \
    } else if (strstr(gpt_last_error(), (needle)) == NULL) {                                         \
      fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, #call,          \
              gpt_last_error(), (needle));                                                           \
      ++failures;                                                                                    \
    } else if (strchr(gpt_last_error(), '\n') != NULL) {                                             \
      fprintf(stderr, "%s:%d: message is not one line: %s\n", __FILE__, __LINE__, gpt_last_error()); \
      ++failures;                                                                                    \
    }                                                                                                \
  } while (0)

#define CHECK_OK(call)                                                                                 \
  do {                                                                                                 \
    gpt_status s_ = (call);                                                                            \
    if (s_ != GPT_OK) {                                                                                \
      fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call, gpt_status_name(s_),    \
              gpt_last_error());                                                                       \
      exit(1);                                                                                         \
    }                                                                                                  \
  } while (0)

static gpt_model* load_fixture(int trainable) {
  gpt_model_params p = gpt_model_default_params();
  p.threads = 2;
  p.trainable = trainable;
  gpt_model* m = NULL;
  CHECK_OK(gpt_model_load(fixture, &p, &m));
  return m;
}

static char* make_temp_dir(void) {
  const char* base = getenv("TMPDIR");
  char* dir = malloc(4096);
  snprintf(dir, 4096, "%s/gpt_c_api_XXXXXX", base ? base : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    exit(1);
  }
  return dir;
}

static int mkdir_p_ok(const char* dir) { return mkdir(dir, 0755) == 0; }

static void remove_tree(const char* dir) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* Copies `from` to `to`, keeping only the first `keep` bytes (all if keep < 0). */
static void copy_file(const char* from, const char* to, long keep) {
  FILE* in = fopen(from, "rb");
  FILE* out = fopen(to, "wb");
  if (!in || !out) {
    perror("copy_file");
    exit(1);
  }
  char buf[65536];
  long total = 0;
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
    if (keep >= 0 && total + (long)n > keep) n = (size_t)(keep - total);
    fwrite(buf, 1, n, out);
    total += (long)n;
    if (keep >= 0 && total >= keep) break;
  }
  fclose(in);
  fclose(out);
}

/* ------------------------------------------------------------------ cases */

static void test_version(void) {
  CHECK(gpt_api_version() == GPT_API_VERSION);
  CHECK(strstr(gpt_version(), "commit") != NULL);
  CHECK(strcmp(gpt_status_name(GPT_ERR_BUFFER_TOO_SMALL), "GPT_ERR_BUFFER_TOO_SMALL") == 0);
  CHECK(strcmp(gpt_status_name(12345), "GPT_ERR_UNKNOWN") == 0);
  CHECK(strcmp(gpt_last_error(), "") == 0);  /* nothing has failed on this thread yet */
}

static void test_load_and_info(void) {
  gpt_model* m = load_fixture(0);
  gpt_model_info info;
  CHECK_OK(gpt_model_get_info(m, &info));
  CHECK(info.vocab_size == 50257);
  CHECK(info.context_length == 64);
  CHECK(info.n_layer == 2 && info.n_head == 2 && info.n_embd == 32);
  /* wte + wpe + 2 blocks + final norm, as config.json describes */
  const int64_t C = 32, V = 50257, T = 64;
  CHECK(info.n_params == V * C + T * C + 2 * (12 * C * C + 13 * C) + 2 * C);
  CHECK(strcmp(info.weight_type, "f32") == 0);
  CHECK(strlen(info.tokenizer) > 0);
  gpt_model_free(m);
  gpt_model_free(NULL); /* a no-op */
}

static void test_load_errors(void) {
  gpt_model* m = (gpt_model*)0x1;
  CHECK_FAILS(gpt_model_load(NULL, NULL, &m), GPT_ERR_INVALID_ARGUMENT, "path is NULL");
  CHECK(m == NULL); /* the output is cleared on failure */
  CHECK_FAILS(gpt_model_load(fixture, NULL, NULL), GPT_ERR_INVALID_ARGUMENT, "model (the output pointer) is NULL");
  CHECK_FAILS(gpt_model_load("/no/such/model", NULL, &m), GPT_ERR_NOT_FOUND, "/no/such/model");
  gpt_model_params p = gpt_model_default_params();
  p.quantize = "q9_9";
  CHECK_FAILS(gpt_model_load(fixture, &p, &m), GPT_ERR_INVALID_ARGUMENT, "q9_9");
  p.quantize = "q8_0";
  p.trainable = 1;
  CHECK_FAILS(gpt_model_load(fixture, &p, &m), GPT_ERR_INVALID_ARGUMENT, "trainable");
  p = gpt_model_default_params();
  p.threads = -1;
  CHECK_FAILS(gpt_model_load(fixture, &p, &m), GPT_ERR_INVALID_ARGUMENT, "threads");
  p = gpt_model_default_params();
  p.kv_cache = 7;
  CHECK_FAILS(gpt_model_load(fixture, &p, &m), GPT_ERR_INVALID_ARGUMENT, "kv_cache");

  char* dir = make_temp_dir();
  char path[4600], from[4600];
  /* A file that is not a model. */
  snprintf(path, sizeof path, "%s/garbage.gguf", dir);
  FILE* f = fopen(path, "wb");
  fputs("this is not a GGUF file, nor anything else", f);
  fclose(f);
  CHECK_FAILS(gpt_model_load(path, NULL, &m), GPT_ERR_BAD_MODEL, "GGUF");
  /* A model directory whose weights were cut short. */
  snprintf(path, sizeof path, "%s/truncated", dir);
  CHECK(mkdir_p_ok(path));
  const char* files[] = {"config.json", "vocab.json", "merges.txt"};
  for (int i = 0; i < 3; ++i) {
    char to[4700];
    snprintf(from, sizeof from, "%s/%s", fixture, files[i]);
    snprintf(to, sizeof to, "%s/%s", path, files[i]);
    copy_file(from, to, -1);
  }
  {
    char to[4700];
    snprintf(from, sizeof from, "%s/model.safetensors", fixture);
    snprintf(to, sizeof to, "%s/model.safetensors", path);
    copy_file(from, to, 100000);
  }
  CHECK_FAILS(gpt_model_load(path, NULL, &m), GPT_ERR_BAD_MODEL, "safetensors");
  CHECK(m == NULL);
  /* A directory with no model in it. */
  snprintf(path, sizeof path, "%s/empty", dir);
  CHECK(mkdir_p_ok(path));
  CHECK_FAILS(gpt_model_load(path, NULL, &m), GPT_ERR_BAD_MODEL, "has no config.json");
  remove_tree(dir);
  free(dir);
}

static void test_null_handles(void) {
  size_t n = 0;
  int32_t ids[4] = {0, 1, 2, 3};
  char text[16];
  float logits[8];
  gpt_model_info info;
  gpt_text_score score;
  gpt_session* s = NULL;
  gpt_trainer* t = NULL;
  float loss = 0;
  CHECK_FAILS(gpt_model_get_info(NULL, &info), GPT_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK_FAILS(gpt_tokenize(NULL, "hi", 2, ids, 4, &n), GPT_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK_FAILS(gpt_detokenize(NULL, ids, 4, text, sizeof text, &n), GPT_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK_FAILS(gpt_session_create(NULL, &s), GPT_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK(s == NULL);
  CHECK_FAILS(gpt_session_eval(NULL, ids, 4, 0, logits, 8), GPT_ERR_INVALID_ARGUMENT, "session is NULL");
  CHECK_FAILS(gpt_session_reset(NULL), GPT_ERR_INVALID_ARGUMENT, "session is NULL");
  CHECK(gpt_session_position(NULL) == -1);
  CHECK_FAILS(gpt_score_text(NULL, "hi", 2, &score), GPT_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK_FAILS(gpt_generate(NULL, "hi", NULL, NULL, NULL, text, sizeof text, &n), GPT_ERR_INVALID_ARGUMENT,
              "model is NULL");
  CHECK_FAILS(gpt_model_save(NULL, "/tmp/x"), GPT_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK_FAILS(gpt_trainer_create(NULL, NULL, &t), GPT_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK_FAILS(gpt_trainer_step(NULL, ids, ids, 1, 4, &loss, NULL), GPT_ERR_INVALID_ARGUMENT, "trainer is NULL");
  CHECK_FAILS(gpt_trainer_set_learning_rate(NULL, 1e-3f), GPT_ERR_INVALID_ARGUMENT, "trainer is NULL");
  CHECK(gpt_trainer_steps(NULL) == -1);
  gpt_session_free(NULL);
  gpt_trainer_free(NULL);

  gpt_model* m = load_fixture(0);
  CHECK_FAILS(gpt_tokenize(m, NULL, 2, ids, 4, &n), GPT_ERR_INVALID_ARGUMENT, "text is NULL");
  CHECK_FAILS(gpt_tokenize(m, "hi", 2, NULL, 4, &n), GPT_ERR_INVALID_ARGUMENT, "tokens is NULL");
  CHECK_FAILS(gpt_tokenize(m, "hi", 2, ids, 4, NULL), GPT_ERR_INVALID_ARGUMENT, "n_tokens is NULL");
  CHECK_FAILS(gpt_generate(m, NULL, NULL, NULL, NULL, text, sizeof text, &n), GPT_ERR_INVALID_ARGUMENT,
              "prompt is NULL");
  CHECK_FAILS(gpt_model_get_info(m, NULL), GPT_ERR_INVALID_ARGUMENT, "info is NULL");
  CHECK_OK(gpt_session_create(m, &s));
  CHECK_FAILS(gpt_session_eval(s, NULL, 4, 0, logits, 8), GPT_ERR_INVALID_ARGUMENT, "tokens is NULL");
  CHECK_FAILS(gpt_session_eval(s, ids, 0, 0, logits, 8), GPT_ERR_INVALID_ARGUMENT, "n_tokens is 0");
  gpt_session_free(s);
  gpt_model_free(m);
}

static void test_tokenize_round_trip(void) {
  gpt_model* m = load_fixture(0);
  const char* text = "Hello world, 안녕하세요! \xF0\x9F\x98\x80";
  int32_t ids[64];
  size_t n = 0;
  CHECK_OK(gpt_tokenize(m, text, strlen(text), ids, 64, &n));
  CHECK(n > 5);
  CHECK(ids[0] == 15496 && ids[1] == 995); /* GPT-2's ids for "Hello" and " world" */
  char back[256];
  size_t bytes = 0;
  CHECK_OK(gpt_detokenize(m, ids, n, back, sizeof back, &bytes));
  CHECK(bytes == strlen(text));
  CHECK(strcmp(back, text) == 0);

  /* Buffers too small: the size needed comes back, nothing is written past the end. */
  size_t needed = 0;
  int32_t one[2] = {-7, -7};
  CHECK_FAILS(gpt_tokenize(m, text, strlen(text), one, 1, &needed), GPT_ERR_BUFFER_TOO_SMALL, "tokens");
  CHECK(needed == n);
  CHECK(one[1] == -7);
  needed = 0;
  CHECK_FAILS(gpt_tokenize(m, text, strlen(text), NULL, 0, &needed), GPT_ERR_BUFFER_TOO_SMALL, "holds 0");
  CHECK(needed == n); /* the way to ask for the size first */
  char small[8];
  memset(small, 'x', sizeof small);
  CHECK_FAILS(gpt_detokenize(m, ids, n, small, 4, &bytes), GPT_ERR_BUFFER_TOO_SMALL, "bytes");
  CHECK(bytes == strlen(text));
  CHECK(small[4] == 'x');
  /* Exactly the bytes, but no room for the NUL. */
  char* exact = malloc(strlen(text));
  CHECK_FAILS(gpt_detokenize(m, ids, n, exact, strlen(text), &bytes), GPT_ERR_BUFFER_TOO_SMALL, "NUL");
  free(exact);
  /* Empty text: no tokens. */
  CHECK_OK(gpt_tokenize(m, "", 0, ids, 64, &n));
  CHECK(n == 0);
  /* Ids outside the vocabulary. */
  int32_t bad[3] = {1, 50257, 2};
  CHECK_FAILS(gpt_detokenize(m, bad, 3, back, sizeof back, &bytes), GPT_ERR_BAD_INPUT, "tokens[1] = 50257");
  bad[1] = -1;
  CHECK_FAILS(gpt_detokenize(m, bad, 3, back, sizeof back, &bytes), GPT_ERR_BAD_INPUT, "tokens[1] = -1");
  gpt_model_free(m);
}

static double log_softmax_at(const float* row, int V, int target) {
  double mx = row[0];
  for (int v = 1; v < V; ++v)
    if (row[v] > mx) mx = row[v];
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += exp(row[v] - mx);
  return row[target] - mx - log(sum);
}

static void test_session_and_score(void) {
  gpt_model* m = load_fixture(0);
  const int V = 50257;
  const char* text = "The quick brown fox jumps over the lazy dog. It was not amused.";
  int32_t ids[64];
  size_t n = 0;
  CHECK_OK(gpt_tokenize(m, text, strlen(text), ids, 64, &n));
  gpt_session* s = NULL;
  CHECK_OK(gpt_session_create(m, &s));
  float* all = malloc(sizeof(float) * V * n);
  CHECK_OK(gpt_session_eval(s, ids, n, 1, all, (size_t)V * n));
  CHECK(gpt_session_position(s) == (int64_t)n);
  /* The mean loss from these logits is what gpt_score_text reports. */
  double nats = 0;
  for (size_t i = 0; i + 1 < n; ++i) nats -= log_softmax_at(all + i * V, V, ids[i + 1]);
  gpt_text_score score;
  CHECK_OK(gpt_score_text(m, text, strlen(text), &score));
  CHECK(score.tokens == (int64_t)n - 1);
  CHECK(fabs(score.mean_loss - nats / (double)(n - 1)) < 1e-4);
  CHECK(fabs(score.perplexity - exp(score.mean_loss)) < 1e-6 * score.perplexity);
  CHECK(score.bits_per_byte > 0);
  /* The fixture's random weights (as `gpt eval` reports for this text: 15.64). */
  CHECK(score.mean_loss > 10 && score.mean_loss < 20);

  /* Token by token through the cache: the same logits as all at once. */
  CHECK_OK(gpt_session_reset(s));
  CHECK(gpt_session_position(s) == 0);
  float* last = malloc(sizeof(float) * V);
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    CHECK_OK(gpt_session_eval(s, ids + i, 1, 0, last, V));
    for (int v = 0; v < V; ++v) {
      const double d = fabs(last[v] - all[i * V + v]);
      if (d > worst) worst = d;
    }
  }
  CHECK(worst < 1e-4);
  /* Logits not wanted: NULL. */
  CHECK_OK(gpt_session_eval(s, ids, 1, 0, NULL, 0));

  /* Errors leave the session as it was. */
  const int64_t pos = gpt_session_position(s);
  CHECK_FAILS(gpt_session_eval(s, ids, 2, 0, last, 10), GPT_ERR_BUFFER_TOO_SMALL, "50257 floats");
  CHECK_FAILS(gpt_session_eval(s, ids, 2, 1, all, (size_t)V), GPT_ERR_BUFFER_TOO_SMALL, "100514 floats");
  int32_t bad[2] = {5, 99999};
  CHECK_FAILS(gpt_session_eval(s, bad, 2, 0, last, V), GPT_ERR_BAD_INPUT, "tokens[1] = 99999");
  int32_t many[80];
  for (int i = 0; i < 80; ++i) many[i] = i;
  float* big = malloc(sizeof(float) * V * 80);
  CHECK_FAILS(gpt_session_eval(s, many, 80, 1, big, (size_t)V * 80), GPT_ERR_BAD_INPUT, "free context");
  CHECK(gpt_session_position(s) == pos);
  /* Past the context without all positions: the session slides. */
  CHECK_OK(gpt_session_eval(s, many, 80, 0, last, V));
  CHECK(gpt_session_position(s) <= 64);
  free(big);

  /* Score errors: one token predicts nothing; characters are fine for byte-level BPE. */
  CHECK_FAILS(gpt_score_text(m, "a", 1, &score), GPT_ERR_BAD_INPUT, "at least 2 tokens");
  CHECK_FAILS(gpt_score_text(m, NULL, 3, &score), GPT_ERR_INVALID_ARGUMENT, "text is NULL");
  CHECK_FAILS(gpt_score_text(m, "ab", 2, NULL), GPT_ERR_INVALID_ARGUMENT, "score is NULL");
  free(last);
  free(all);
  /* A session keeps the weights alive: the model handle may go first. */
  gpt_model_free(m);
  CHECK_OK(gpt_session_eval(s, ids, 3, 0, NULL, 0));
  gpt_session_free(s);
}

struct collected {
  char text[4096];
  size_t len;
  int pieces;
  int stop_after;
};

static int collect(const char* piece, size_t len, void* user) {
  struct collected* c = user;
  if (c->len + len < sizeof c->text) {
    memcpy(c->text + c->len, piece, len);
    c->len += len;
    c->text[c->len] = '\0';
  }
  ++c->pieces;
  return c->stop_after > 0 && c->pieces >= c->stop_after;
}

static void test_generate(void) {
  gpt_model* m = load_fixture(0);
  gpt_generate_params p = gpt_generate_default_params();
  CHECK(p.max_tokens == 200 && p.temperature == 1.0f && p.seed == 1337 && !p.greedy);
  p.max_tokens = 12;
  char a[4096], b[4096];
  size_t na = 0, nb = 0;
  struct collected c;
  memset(&c, 0, sizeof c);
  CHECK_OK(gpt_generate(m, "Once upon a time", &p, collect, &c, a, sizeof a, &na));
  CHECK(na > 0 && na == strlen(a));
  CHECK(c.len == na && memcmp(c.text, a, na) == 0); /* streamed pieces make up the text */
  CHECK(c.pieces >= 2);
  /* Same seed, same text; another seed, another text. */
  CHECK_OK(gpt_generate(m, "Once upon a time", &p, NULL, NULL, b, sizeof b, &nb));
  CHECK(nb == na && strcmp(a, b) == 0);
  p.seed = 7;
  CHECK_OK(gpt_generate(m, "Once upon a time", &p, NULL, NULL, b, sizeof b, &nb));
  CHECK(strcmp(a, b) != 0);

  /* Greedy: the most likely token each time, which the session's logits confirm. */
  p.greedy = 1;
  p.max_tokens = 5;
  CHECK_OK(gpt_generate(m, "Once upon a time", &p, NULL, NULL, a, sizeof a, &na));
  {
    const int V = 50257;
    int32_t ids[64];
    size_t n = 0;
    CHECK_OK(gpt_tokenize(m, "Once upon a time", 16, ids, 64, &n));
    gpt_session* s = NULL;
    CHECK_OK(gpt_session_create(m, &s));
    float* logits = malloc(sizeof(float) * V);
    CHECK_OK(gpt_session_eval(s, ids, n, 0, logits, V));
    int32_t chosen[5];
    for (int step = 0; step < 5; ++step) {
      int best = 0;
      for (int v = 1; v < V; ++v)
        if (logits[v] > logits[best]) best = v;
      chosen[step] = best;
      CHECK_OK(gpt_session_eval(s, &chosen[step], 1, 0, logits, V));
    }
    char expect[512];
    size_t ne = 0;
    CHECK_OK(gpt_detokenize(m, chosen, 5, expect, sizeof expect, &ne));
    CHECK(ne == na && strcmp(expect, a) == 0);
    free(logits);
    gpt_session_free(s);
  }

  /* Stop strings end the text before them. */
  p = gpt_generate_default_params();
  p.max_tokens = 40;
  CHECK_OK(gpt_generate(m, "Once upon a time", &p, NULL, NULL, a, sizeof a, &na));
  CHECK(na > 4);
  char stop[3] = {a[2], a[3], '\0'}; /* two bytes that do occur */
  const char* stops[1] = {stop};
  p.stop = stops;
  p.n_stop = 1;
  CHECK_OK(gpt_generate(m, "Once upon a time", &p, NULL, NULL, b, sizeof b, &nb));
  CHECK(strstr(b, stop) == NULL);
  CHECK(nb <= 2 && strncmp(a, b, nb) == 0);

  /* The callback stops generation by returning nonzero. */
  p = gpt_generate_default_params();
  p.max_tokens = 50;
  memset(&c, 0, sizeof c);
  c.stop_after = 1;
  CHECK_OK(gpt_generate(m, "Once upon a time", &p, collect, &c, a, sizeof a, &na));
  CHECK(c.pieces == 1 && na == c.len && strcmp(a, c.text) == 0);

  /* Streaming only: no buffer. */
  memset(&c, 0, sizeof c);
  p.max_tokens = 4;
  CHECK_OK(gpt_generate(m, "Once", &p, collect, &c, NULL, 0, NULL));
  CHECK(c.len > 0);

  /* Errors. */
  char tiny[4];
  p.max_tokens = 20;
  CHECK_FAILS(gpt_generate(m, "Once", &p, NULL, NULL, tiny, sizeof tiny, &na), GPT_ERR_BUFFER_TOO_SMALL, "NUL");
  CHECK(na > 3); /* the length needed */
  p = gpt_generate_default_params();
  p.temperature = -1;
  CHECK_FAILS(gpt_generate(m, "Once", &p, NULL, NULL, a, sizeof a, &na), GPT_ERR_INVALID_ARGUMENT, "temperature");
  p = gpt_generate_default_params();
  p.top_p = 2;
  CHECK_FAILS(gpt_generate(m, "Once", &p, NULL, NULL, a, sizeof a, &na), GPT_ERR_INVALID_ARGUMENT, "top-p");
  p = gpt_generate_default_params();
  p.max_tokens = -3;
  CHECK_FAILS(gpt_generate(m, "Once", &p, NULL, NULL, a, sizeof a, &na), GPT_ERR_INVALID_ARGUMENT, "max_tokens");
  p = gpt_generate_default_params();
  p.n_stop = 1;
  CHECK_FAILS(gpt_generate(m, "Once", &p, NULL, NULL, a, sizeof a, &na), GPT_ERR_INVALID_ARGUMENT, "stop is NULL");
  const char* empty[1] = {""};
  p.stop = empty;
  CHECK_FAILS(gpt_generate(m, "Once", &p, NULL, NULL, a, sizeof a, &na), GPT_ERR_INVALID_ARGUMENT, "stop[0]");
  /* A prompt longer than the context (64 tokens). */
  char long_prompt[2000];
  long_prompt[0] = '\0';
  for (int i = 0; i < 100; ++i) strcat(long_prompt, " word");
  p = gpt_generate_default_params();
  CHECK_FAILS(gpt_generate(m, long_prompt, &p, NULL, NULL, a, sizeof a, &na), GPT_ERR_BAD_INPUT, "context is 64");
  /* After all these errors the model still generates. */
  p.max_tokens = 3;
  CHECK_OK(gpt_generate(m, "Once", &p, NULL, NULL, a, sizeof a, &na));
  gpt_model_free(m);
}

static void test_train_save_reload(void) {
  gpt_model* frozen = load_fixture(0);
  gpt_trainer* t = NULL;
  CHECK_FAILS(gpt_trainer_create(frozen, NULL, &t), GPT_ERR_UNSUPPORTED, "trainable");
  CHECK_FAILS(gpt_model_save(frozen, "/tmp/never"), GPT_ERR_UNSUPPORTED, "trainable");
  gpt_model_free(frozen);

  gpt_model* m = load_fixture(1);
  gpt_train_params tp = gpt_train_default_params();
  tp.learning_rate = 1e-2f;
  tp.beta1 = 1.5f;
  CHECK_FAILS(gpt_trainer_create(m, &tp, &t), GPT_ERR_INVALID_ARGUMENT, "beta1");
  tp.beta1 = 0.9f;
  CHECK_OK(gpt_trainer_create(m, &tp, &t));

  /* One short text learned by heart: the loss falls. */
  const char* text = "to be or not to be, that is the question";
  int32_t ids[64];
  size_t n = 0;
  CHECK_OK(gpt_tokenize(m, text, strlen(text), ids, 64, &n));
  const int T = (int)n - 1;
  int32_t inputs[2 * 64], targets[2 * 64];
  for (int b = 0; b < 2; ++b) {
    memcpy(inputs + b * T, ids, sizeof(int32_t) * T);
    memcpy(targets + b * T, ids + 1, sizeof(int32_t) * T);
  }
  gpt_text_score before, after;
  CHECK_OK(gpt_score_text(m, text, strlen(text), &before));
  float first = 0, loss = 0, norm = 0;
  for (int step = 0; step < 30; ++step) {
    CHECK_OK(gpt_trainer_step(t, inputs, targets, 2, T, &loss, &norm));
    if (step == 0) first = loss;
    CHECK(isfinite(loss) && norm > 0);
  }
  CHECK(gpt_trainer_steps(t) == 30);
  CHECK(fabs(first - before.mean_loss) < 1e-3); /* the first step's loss is the model's loss before it */
  CHECK(loss < 0.5f * first);
  /* Sessions see the new weights. */
  CHECK_OK(gpt_score_text(m, text, strlen(text), &after));
  CHECK(after.mean_loss < 0.5 * before.mean_loss);
  CHECK_OK(gpt_trainer_set_learning_rate(t, 0.0f));
  float again = 0;
  CHECK_OK(gpt_trainer_step(t, inputs, targets, 2, T, &again, NULL));
  CHECK(gpt_trainer_steps(t) == 31);
  CHECK_FAILS(gpt_trainer_set_learning_rate(t, -1.0f), GPT_ERR_INVALID_ARGUMENT, "learning_rate");

  /* Step errors leave the trainer as it was. */
  CHECK_FAILS(gpt_trainer_step(t, inputs, targets, 0, T, &loss, NULL), GPT_ERR_INVALID_ARGUMENT, "batch");
  CHECK_FAILS(gpt_trainer_step(t, inputs, targets, 1, 65, &loss, NULL), GPT_ERR_INVALID_ARGUMENT, "seq_len");
  CHECK_FAILS(gpt_trainer_step(t, inputs, targets, 1, T, NULL, NULL), GPT_ERR_INVALID_ARGUMENT, "loss is NULL");
  targets[3] = 50257;
  CHECK_FAILS(gpt_trainer_step(t, inputs, targets, 1, T, &loss, NULL), GPT_ERR_BAD_INPUT, "targets[3] = 50257");
  targets[3] = ids[4];
  CHECK(gpt_trainer_steps(t) == 31);

  /* Saved as a gpt.cpp checkpoint; loaded back, it scores the same. */
  char* dir = make_temp_dir();
  char path[4200];
  snprintf(path, sizeof path, "%s/trained", dir);
  CHECK_OK(gpt_model_save(m, path));
  gpt_model* back = NULL;
  gpt_model_params lp = gpt_model_default_params();
  lp.threads = 2;
  CHECK_OK(gpt_model_load(path, &lp, &back));
  gpt_text_score reloaded;
  CHECK_OK(gpt_score_text(back, text, strlen(text), &reloaded));
  CHECK(fabs(reloaded.mean_loss - after.mean_loss) < 1e-3);
  gpt_model_free(back);
  /* Saving where a file is in the way of the directory fails with a message. */
  snprintf(path, sizeof path, "%s/a_file", dir);
  FILE* f = fopen(path, "w");
  fputs("x", f);
  fclose(f);
  char under[4300];
  snprintf(under, sizeof under, "%s/a_file/model", dir);
  gpt_status s = gpt_model_save(m, under);
  CHECK(s == GPT_ERR_IO);
  CHECK(strlen(gpt_last_error()) > 0);
  remove_tree(dir);
  free(dir);

  /* The trainer keeps the weights alive: the model may be freed first. */
  gpt_model_free(m);
  CHECK_OK(gpt_trainer_step(t, inputs, targets, 1, T, &loss, NULL));
  gpt_trainer_free(t);
}

struct test_case {
  const char* name;
  void (*run)(void);
};

int main(int argc, char** argv) {
  const struct test_case cases[] = {
      {"version", test_version},
      {"load_and_info", test_load_and_info},
      {"load_errors", test_load_errors},
      {"null_handles", test_null_handles},
      {"tokenize_round_trip", test_tokenize_round_trip},
      {"session_and_score", test_session_and_score},
      {"generate", test_generate},
      {"train_save_reload", test_train_save_reload},
  };
  const size_t n = sizeof cases / sizeof cases[0];
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < n; ++i) printf("%s\n", cases[i].name);
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "--expect") == 0) { /* CMake registers every case */
    if ((size_t)atoi(argv[2]) == n) return 0;
    fprintf(stderr, "tests/CMakeLists.txt registers %s cases; test_c_api.c has %zu\n", argv[2], n);
    return 1;
  }
  int ran = 0;
  for (size_t i = 0; i < n; ++i) {
    if (argc >= 2 && strcmp(argv[1], cases[i].name) != 0) continue;
    cases[i].run();
    printf("%s: %s\n", cases[i].name, failures ? "FAILED" : "ok");
    ++ran;
  }
  if (ran == 0) {
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
  }
  return failures ? 1 : 0;
}
