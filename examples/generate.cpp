// Generates text from a model with the C++ API, streaming it as `gpt generate` does:
//   generate MODEL PROMPT [MAX_TOKENS]
// MODEL: a gpt.cpp checkpoint or Hugging Face GPT-2 directory, or a GGUF file.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <gpt/generation/generate.h>
#include <gpt/io/model_loader.h>

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s MODEL PROMPT [MAX_TOKENS]\n", argv[0]);
    return 2;
  }
  try {
    gpt::ModelOpenOptions open;
    open.panels = true;  // fp32 weights re-laid for fast one-token steps, as `gpt generate` loads them
    const gpt::OpenedModel model = gpt::open_model(argv[1], open);
    const std::string prompt = argv[2];

    gpt::GenerateOptions options;
    options.max_new_tokens = argc == 4 ? std::atoi(argv[3]) : 100;
    options.sampling.temperature = 0.8f;
    options.sampling.top_k = 40;
    options.seed = 1337;

    gpt::InferenceSession session(model.inference_weights());
    std::fputs(prompt.c_str(), stdout);
    gpt::generate(session, *model.tokenizer, model.tokenizer->encode(prompt), options,
                  [](const std::string& piece) {  // whole UTF-8 characters, as they come
                    std::fwrite(piece.data(), 1, piece.size(), stdout);
                    std::fflush(stdout);
                  });
    std::fputc('\n', stdout);
    return 0;
  } catch (const std::exception& e) {  // gpt::Error: a one-line reason
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
}
