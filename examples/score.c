/* Scores how well a model predicts a text file with the C API (gpt.h):
 *   score MODEL FILE
 * prints the mean loss (nats per token), perplexity and bits per byte, as
 * `gpt eval` computes them. */
#include <stdio.h>
#include <stdlib.h>

#include <gpt.h>

static char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 1 << 16, n = 0, got;
  char* data = malloc(cap);
  while (data != NULL && (got = fread(data + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      char* bigger = realloc(data, cap *= 2);
      if (bigger == NULL) free(data);
      data = bigger;
    }
  }
  fclose(f);
  *size = n;
  return data;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL FILE\n", argv[0]);
    return 2;
  }
  size_t size = 0;
  char* text = read_file(argv[2], &size);
  if (text == NULL) {
    fprintf(stderr, "score: cannot read %s\n", argv[2]);
    return 1;
  }
  gpt_model* model = NULL;
  gpt_status status = gpt_model_load(argv[1], NULL, &model);
  gpt_text_score score;
  if (status == GPT_OK) status = gpt_score_text(model, text, size, &score);
  if (status != GPT_OK) {
    fprintf(stderr, "score: %s (%s)\n", gpt_last_error(), gpt_status_name(status));
  } else {
    printf("tokens %lld\nloss %.6f\nperplexity %.4f\nbits_per_byte %.6f\n", (long long)score.tokens,
           score.mean_loss, score.perplexity, score.bits_per_byte);
  }
  gpt_model_free(model);
  free(text);
  return status == GPT_OK ? 0 : 1;
}
