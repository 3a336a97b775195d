// gpt tokenize train | encode | decode | prepare: byte-level BPE from the command line.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gpt/cli/commands.h"
#include "gpt/finetune/chat_data.h"
#include "gpt/io/token_shard.h"
#include "gpt/tokenizer/bpe.h"
#include "gpt/tokenizer/bpe_trainer.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt::cli {
namespace {

std::string read_stdin() { return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()}; }

// Token ids as one line of space-separated numbers.
void print_id_line(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
}

std::vector<int32_t> encode_all(const Tokenizer& tok, const std::string& text, bool allow_special, int threads) {
  if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tok)) return bpe->encode(text, allow_special, threads);
  return tok.encode(text);
}

}  // namespace

Command add_tokenize_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("tokenize", "Train a BPE tokenizer, encode, decode, prepare token shards");
  app->footer("\nExamples:\n  gpt tokenize train --data corpus.txt --vocab-size 8000 --out tok.json\n  echo \"Hello world\" | gpt tokenize encode --tokenizer tok.json\n  gpt tokenize prepare --tokenizer tok.json --data corpus.txt --out corpus.bin");
  app->require_subcommand(1, 1);
  struct Options {
    std::vector<std::string> data;
    std::string out, tokenizer, chat_template;
    int vocab_size = 32000;
    std::vector<std::string> special = {"<|endoftext|>"};
    bool allow_special = false, bos = false, jsonl = false;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();

  CLI::App* train = app->add_subcommand("train", "Learn a byte-level BPE vocabulary (written as tokenizer.json)");
  train->add_option("--data", o->data, "Training text files")->required()->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  train->add_option("--vocab-size", o->vocab_size, "Vocabulary size, bytes and special tokens included")->capture_default_str();
  train->add_option("--out", o->out, "Output file (or directory for tokenizer.json)")->required();
  train->add_option("--special", o->special, "Special tokens (repeatable)")->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->capture_default_str();

  CLI::App* encode = app->add_subcommand("encode", "Text on stdin -> token ids (space separated) on stdout");
  CLI::App* decode = app->add_subcommand("decode", "Token ids on stdin -> text on stdout");
  CLI::App* prepare = app->add_subcommand("prepare", "Tokenize a text file into a token shard for training");
  CLI::App* chat = app->add_subcommand("chat", "Conversations (JSON lines) -> what a chat template makes of them");
  chat->add_option("--template", o->chat_template,
                   "A model directory, its tokenizer_config.json, or a template name (chatml, llama3)")
      ->required();
  chat->add_option("--tokenizer", o->tokenizer, "With it, token ids are printed instead of text");
  chat->footer("\nEach line of stdin: {\"messages\": [{\"role\": ..., \"content\": ...}], \"add_generation_prompt\": true}.\n"
               "Each line out: the rendered text as a JSON string, or the token ids (space separated) with --tokenizer.");
  for (CLI::App* sub : {encode, decode, prepare}) {
    sub->add_option("--tokenizer", o->tokenizer, "tokenizer.json, a checkpoint, or a GPT-2 vocabulary directory")->required();
  }
  encode->add_flag("--allow-special", o->allow_special, "Turn special tokens' text (e.g. <|endoftext|>) into their ids");
  encode->add_flag("--jsonl", o->jsonl, "Many texts: stdin holds one JSON string per line; one line of ids is printed for each");
  decode->add_flag("--jsonl", o->jsonl, "Many texts: stdin holds one JSON array of ids per line; one JSON string is printed for each");
  encode->add_flag("--bos", o->bos, "Put the token the model expects first (Llama's <s>) before the text, as its tokenizer does");
  prepare->add_flag("--allow-special", o->allow_special, "Turn special tokens' text into their ids");
  prepare->add_option("--data", o->data, "Text file")->required();
  prepare->add_option("--out", o->out, "Shard file to write")->required();
  for (CLI::App* sub : {train, encode, prepare}) sub->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);

  auto run = [o, train, encode, decode, prepare, chat]() -> int {
    const int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    if (train->parsed()) {
      PieceCounts counts;
      size_t bytes = 0;
      for (const auto& f : o->data) {
        const std::string text = read_text_file(f);
        bytes += text.size();
        counts.add(text);
      }
      BpeTrainOptions opts;
      opts.vocab_size = o->vocab_size;
      opts.special_tokens = o->special;
      opts.progress = true;
      const auto t0 = std::chrono::steady_clock::now();
      const auto tok = train_bpe(counts, opts);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::filesystem::path out = o->out;
      if (std::filesystem::is_directory(out)) out /= kHfTokenizerFileName;
      save_tokenizer(*tok, out);
      std::fprintf(stderr, "gpt: %zu bytes, %zu distinct pieces, %d tokens (%zu merges) in %.1f s -> %s\n", bytes,
                   counts.size(), tok->vocab_size(), tok->merges().size(), s, out.c_str());
      return 0;
    }
    if (chat->parsed()) {
      std::optional<ChatTemplate> tmpl;
      std::error_code ec;
      const std::filesystem::path where = o->chat_template;
      if (std::filesystem::is_directory(where, ec)) tmpl = ChatTemplate::of_model(where);
      else if (std::filesystem::is_regular_file(where, ec)) tmpl = ChatTemplate::of_config_file(where);
      else tmpl = ChatTemplate::named(o->chat_template);
      GPT_CHECK(tmpl.has_value(), o->chat_template + " declares no chat template");
      std::unique_ptr<Tokenizer> tok;
      if (!o->tokenizer.empty()) tok = load_tokenizer(o->tokenizer);
      // Each line: {"messages": [...], "add_generation_prompt": bool}.
      for_each_jsonl_line(read_stdin(), "stdin", [&](const nlohmann::json& j) {
        const std::vector<ChatMessage> messages = conversation_from_json(j);
        const bool prompt = j.is_object() ? j.value("add_generation_prompt", true) : true;
        if (tok) {
          GPT_CHECK(prompt, "token ids are those of a prompt (add_generation_prompt true)");
          print_id_line(tmpl->encode(messages, *tok));
        } else {
          std::printf("%s\n", nlohmann::json(tmpl->render(messages, prompt)).dump().c_str());
        }
      }, "conversations");
      return 0;
    }
    const auto tok = load_tokenizer(o->tokenizer);
    if (encode->parsed()) {
      GPT_CHECK(!o->bos || tok->bos_id().has_value(), "--bos: this tokenizer puts no token before a text");
      const auto print_ids = [&](const std::string& text) {
        std::vector<int32_t> ids;
        if (o->bos) ids.push_back(*tok->bos_id());
        const auto text_ids = encode_all(*tok, text, o->allow_special, threads);
        ids.insert(ids.end(), text_ids.begin(), text_ids.end());
        print_id_line(ids);
      };
      const std::string input = read_stdin();
      if (!o->jsonl) {
        print_ids(input);
        return 0;
      }
      for_each_jsonl_line(input, "stdin", [&](const nlohmann::json& j) {
        GPT_CHECK(j.is_string(), "not a JSON string");
        print_ids(j.get<std::string>());
      }, "texts");
      return 0;
    }
    if (decode->parsed()) {
      const auto check_id = [&](long long v, const std::string& word) {
        GPT_CHECK(v >= 0 && v < tok->vocab_size(), "token id " + word + " outside the vocabulary of " +
                                                   std::to_string(tok->vocab_size()));
        return static_cast<int32_t>(v);
      };
      if (o->jsonl) {
        for_each_jsonl_line(read_stdin(), "stdin", [&](const nlohmann::json& j) {
          GPT_CHECK(j.is_array(), "not a JSON array of token ids");
          std::vector<int32_t> ids;
          for (const auto& v : j) {
            GPT_CHECK(v.is_number_integer(), "holds " + v.dump() + ", not a token id");
            ids.push_back(check_id(v.get<long long>(), v.dump()));
          }
          // Invalid UTF-8 (a token cut inside a character) is replaced, as JSON needs.
          std::printf("%s\n", nlohmann::json(tok->decode(ids)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        }, "id lists");
        return 0;
      }
      std::istringstream in(read_stdin());
      std::vector<int32_t> ids;
      for (std::string word; in >> word;) {
        size_t used = 0;
        long long v = -1;
        try {
          v = std::stoll(word, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        GPT_CHECK(used == word.size() && used > 0, "not a token id: '" + word + "'");
        ids.push_back(check_id(v, word));
      }
      const std::string text = tok->decode(ids);
      std::fwrite(text.data(), 1, text.size(), stdout);
      return 0;
    }
    if (prepare->parsed()) {
      GPT_CHECK(o->data.size() == 1, "prepare takes one --data file");
      const auto t0 = std::chrono::steady_clock::now();
      const std::string text = read_text_file(o->data[0]);
      const auto ids = encode_all(*tok, text, o->allow_special, threads);
      write_token_shard(o->out, ids, tok->vocab_size());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "gpt: %zu bytes -> %zu tokens in %.2f s (%.1f MB/s, %d threads) -> %s\n", text.size(),
                   ids.size(), s, static_cast<double>(text.size()) / 1e6 / s, threads, o->out.c_str());
      return 0;
    }
    return 1;
  };
  return {app, run};
}

}  // namespace gpt::cli
