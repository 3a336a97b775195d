// Supervised fine-tuning: the chat data (JSON lines, errors naming the line, the
// replies as the only targets, padding, epochs, the held-out split), and runs of
// gpt sft's Trainer, full and LoRA, that resume bit for bit.
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "gpt/finetune/chat_data.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/peft_adapter.h"
#include "gpt/io/safetensors.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/training/trainer.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

std::string chat_line(const std::string& q, const std::string& a) {
  return nlohmann::json{{"messages", {{{"role", "user"}, {"content", q}}, {{"role", "assistant"}, {"content", a}}}}}.dump() +
         "\n";
}

std::string arithmetic_chats(int n, uint64_t seed) {
  Rng rng(seed);
  std::string s;
  for (int i = 0; i < n; ++i) {
    const int a = static_cast<int>(rng.next_u64() % 10), b = static_cast<int>(rng.next_u64() % 10);
    s += chat_line(std::to_string(a) + "+" + std::to_string(b), std::to_string(a + b));
  }
  return s;
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
  }
}

TEST(ChatData, MalformedLinesAreNamedByNumber) {
  testing::TempDir dir;
  auto check = [&](const std::string& text, const std::string& needle) {
    write_file_atomic(dir / "c.jsonl", text);
    expect_error([&] { read_chat_jsonl(dir / "c.jsonl"); }, needle);
  };
  const std::string good = chat_line("q", "a");
  check(good + "\n" + "{not json\n", "c.jsonl:3: not valid JSON");
  check(good + "{\"text\": \"x\"}\n", ":2: no \"messages\" list");
  check(good + "{\"messages\": []}\n", ":2: \"messages\" is empty");
  check(good + "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n", ":2: message 1 has role 'robot'");
  check("{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n", ":1: message 1 has no \"content\" string");
  check(std::string("{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}\n"), ":1:");
  check("\n\n", "holds no conversations");
}

TEST(ChatData, OnlyRepliesAreTargetsAndRowsArePaddedToTheLongest) {
  const ChatTemplate chatml = ChatTemplate::named("chatml");
  const auto tok = make_byte_tokenizer()->with_special_tokens(chatml.markers());
  std::vector<Conversation> chats;
  for (int i = 0; i < 10; ++i)
    chats.push_back({{"user", std::string(static_cast<size_t>(i + 1), 'q')}, {"assistant", std::string(static_cast<size_t>(i % 3 + 1), 'a')}});
  const ChatDataset d(chats, chatml, *tok, 0.2, 64, 4, 7);
  EXPECT_EQ(d.stats().train, 8);
  EXPECT_EQ(d.stats().val, 2);
  std::vector<int32_t> x(4 * 64), y(4 * 64);
  const int64_t T = d.train_batch(7, 0, 0, 4, 64, x.data(), y.data());
  ASSERT_LE(T, 64);
  for (int64_t r = 0; r < 4; ++r) {
    std::string learned;
    for (int64_t t = 0; t < T; ++t) {
      const int32_t target = y[static_cast<size_t>(r * T + t)];
      if (target == kIgnoreTarget) continue;
      learned += tok->decode(std::vector<int32_t>{target});
      // Every target is the next input (the model predicts what follows).
      if (t + 1 < T && y[static_cast<size_t>(r * T + t + 1)] != kIgnoreTarget) {
        EXPECT_EQ(x[static_cast<size_t>(r * T + t + 1)], target);
      }
    }
    EXPECT_TRUE(learned.starts_with("a")) << learned;
    EXPECT_TRUE(learned.ends_with("<|im_end|>")) << learned;
    EXPECT_EQ(learned.find('q'), std::string::npos) << "a prompt token is a target: " << learned;
  }
  // One epoch (8 training rows) visits every training conversation once.
  std::multiset<std::vector<int32_t>> seen;
  for (int64_t step = 0; step < 2; ++step) {
    const int64_t t = d.train_batch(7, step, 0, 4, 64, x.data(), y.data());
    for (int64_t r = 0; r < 4; ++r) {
      std::vector<int32_t> row(x.begin() + r * t, x.begin() + (r + 1) * t);
      while (!row.empty() && row.back() == 0) row.pop_back();
      seen.insert(row);
    }
  }
  EXPECT_EQ(std::set<std::vector<int32_t>>(seen.begin(), seen.end()).size(), 8u);
  // Validation: both held-out conversations, in one batch of 4 (two rows wholly ignored).
  EXPECT_EQ(d.val_batches(4), 1);
  const int64_t tv = d.val_batch(0, 0, 4, 64, x.data(), y.data());
  for (int64_t r = 2; r < 4; ++r)
    for (int64_t t = 0; t < tv; ++t) EXPECT_EQ(y[static_cast<size_t>(r * tv + t)], kIgnoreTarget);
}

TEST(ChatData, LongChatsAreCutAndChatsWithoutRepliesRefused) {
  const ChatTemplate chatml = ChatTemplate::named("chatml");
  const auto tok = make_byte_tokenizer()->with_special_tokens(chatml.markers());
  std::vector<Conversation> chats = {{{"user", "q"}, {"assistant", std::string(100, 'a')}},
                                     {{"user", std::string(100, 'q')}, {"assistant", "a"}},
                                     {{"user", "q"}, {"assistant", "a"}},
                                     {{"user", "q"}, {"assistant", "b"}}};
  const ChatDataset d(chats, chatml, *tok, 0.3, 32, 2, 1);
  EXPECT_EQ(d.stats().truncated, 2);
  EXPECT_EQ(d.stats().dropped, 1);  // the long prompt leaves no reply within 32 tokens
  chats.push_back({{"user", "only a question"}});
  expect_error([&] { ChatDataset(chats, chatml, *tok, 0.3, 32, 2, 1); }, "conversation 5: the conversation has no assistant message");
  expect_error([&] { ChatDataset({chats[2]}, chatml, *tok, 0.3, 32, 2, 1); }, "at least 2 usable conversations");
}

TrainOptions sft_options(const testing::TempDir& dir, const std::string& out, int lora_rank) {
  TrainOptions o;
  o.task = "sft";
  o.data = (dir / "chats.jsonl").string();
  o.init_from = (dir / "base").string();
  o.out = (dir / out).string();
  o.block_size = 0;
  o.batch_size = 4;
  o.grad_accum = 2;
  o.max_iters = 12;
  o.lr = 3e-3;
  o.warmup_iters = 2;
  o.eval_interval = 4;
  o.lora_rank = lora_rank;
  o.lora_dropout = lora_rank > 0 ? 0.1 : 0.0;  // dropout's masks must resume too
  o.dropout = 0.1;
  o.quiet = true;
  return o;
}

// A small base model to fine-tune: trained for a few steps on text holding the roles' letters.
void make_base(const testing::TempDir& dir) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "user assistant system 0123456789+ <|im_start|>\n";
  write_file_atomic(dir / "text.txt", text);
  TrainOptions o;
  o.data = (dir / "text.txt").string();
  o.out = (dir / "base").string();
  o.tokenizer = "char";
  o.n_layer = 2;
  o.n_head = 2;
  o.n_embd = 16;
  o.block_size = 32;
  o.batch_size = 4;
  o.max_iters = 5;
  o.quiet = true;
  train(o);
  write_file_atomic(dir / "chats.jsonl", arithmetic_chats(60, 3));
}

class SftResume : public ::testing::TestWithParam<int> {};

TEST_P(SftResume, ContinuesBitIdentically) {
  const int rank = GetParam();
  testing::TempDir dir;
  make_base(dir);
  const TrainResult full = train(sft_options(dir, "full", rank));
  ASSERT_EQ(full.history.size(), 12u);
  EXPECT_LT(full.history.back().loss, full.history.front().loss);
  TrainOptions first = sft_options(dir, "part", rank);
  first.max_iters = 7;
  first.lr_decay_iters = 12;
  TrainOptions all = sft_options(dir, "part", rank);
  all.lr_decay_iters = 12;
  TrainOptions straight = sft_options(dir, "straight", rank);
  straight.lr_decay_iters = 12;
  const TrainResult a = train(straight);
  train(first);
  const TrainResult rest = train(all, (dir / "part").string());
  ASSERT_EQ(rest.history.size(), 5u);
  for (size_t i = 0; i < rest.history.size(); ++i) {
    EXPECT_EQ(std::memcmp(&a.history[7 + i].loss, &rest.history[i].loss, sizeof(float)), 0)
        << "step " << rest.history[i].step << ": " << a.history[7 + i].loss << " vs " << rest.history[i].loss;
  }
  const char* weights = rank > 0 ? kAdapterWeightsFile : "model.safetensors";
  EXPECT_EQ(read_binary_file(dir / "straight" / weights), read_binary_file(dir / "part" / weights));
  EXPECT_EQ(read_binary_file(dir / "straight" / "optimizer.safetensors"),
            read_binary_file(dir / "part" / "optimizer.safetensors"));
  // Either way the directory says which template its chats use, and the tokenizer has the markers.
  EXPECT_EQ(ChatTemplate::of_model(dir / "part")->name(), "chatml");
  EXPECT_TRUE(load_tokenizer(dir / "part")->special_token_id("<|im_end|>").has_value());
  if (rank > 0) {
    EXPECT_FALSE(std::filesystem::exists(dir / "part" / "model.safetensors"));
    const nlohmann::json cfg = nlohmann::json::parse(read_text_file(dir / "part" / kAdapterConfigFile));
    EXPECT_EQ(cfg["r"], rank);
    EXPECT_EQ(cfg["trainable_token_indices"].size(), 2u);
  }
}

INSTANTIATE_TEST_SUITE_P(FullAndLora, SftResume, ::testing::Values(0, 4),
                         [](const auto& info) { return info.param == 0 ? std::string("Full") : std::string("Lora"); });

// Packed rows train what padded rows train: the same examples per step, the
// same loss (attention stays inside each chat, positions restart), only fewer
// padding tokens computed. Full fine-tuning and LoRA with dropout, over two
// micro-batches.
class SftPacking : public ::testing::TestWithParam<int> {};

TEST_P(SftPacking, TrainsWhatPaddedRowsTrain) {
  const int rank = GetParam();
  testing::TempDir dir;
  make_base(dir);
  TrainOptions padded = sft_options(dir, "padded", rank);
  padded.packing = false;
  TrainOptions packed = sft_options(dir, "packed", rank);
  packed.packing = true;
  const TrainResult a = train(padded);
  const TrainResult b = train(packed);
  ASSERT_EQ(a.history.size(), b.history.size());
  for (size_t i = 0; i < a.history.size(); ++i) {
    EXPECT_NEAR(b.history[i].loss, a.history[i].loss, 2e-5 * std::abs(a.history[i].loss)) << "step " << i + 1;
  }
  ASSERT_TRUE(a.final_val_loss && b.final_val_loss);
  EXPECT_NEAR(*b.final_val_loss, *a.final_val_loss, 2e-5 * std::abs(*a.final_val_loss));
  const char* weights = rank > 0 ? kAdapterWeightsFile : "model.safetensors";
  const SafetensorsFile wa = SafetensorsFile::load(dir / "padded" / weights);
  const SafetensorsFile wb = SafetensorsFile::load(dir / "packed" / weights);
  ASSERT_EQ(wa.entries().size(), wb.entries().size());
  for (const auto& [name, e] : wa.entries()) {
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    std::vector<float> t(static_cast<size_t>(n)), u(t.size());
    wa.read_f32(name, e.shape, t.data());
    wb.read_f32(name, e.shape, u.data());
    for (size_t i = 0; i < t.size(); ++i) ASSERT_NEAR(u[i], t[i], 1e-4f) << name << "[" << i << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(FullAndLora, SftPacking, ::testing::Values(0, 4),
                         [](const auto& info) { return info.param == 0 ? std::string("Full") : std::string("Lora"); });

TEST(ChatData, PackedBatchesHoldThePaddedExamplesInFewerRows) {
  const ChatTemplate chatml = ChatTemplate::named("chatml");
  const auto tok = make_byte_tokenizer()->with_special_tokens(chatml.markers());
  std::vector<Conversation> chats;
  for (int i = 0; i < 20; ++i)
    chats.push_back({{"user", std::string(static_cast<size_t>(i * 7 % 40 + 1), 'q')}, {"assistant", std::string(static_cast<size_t>(i % 3 + 1), 'a')}});
  const ChatDataset d(chats, chatml, *tok, 0.2, 128, 8, 7);
  const int64_t B = 8, T = 128;
  std::vector<int32_t> x(B * T), y(B * T), xp(B * T), yp(B * T), pos(B * T), ex(B * T);
  for (int64_t step = 0; step < 3; ++step) {
    const int64_t Tpad = d.train_batch(7, step, 0, B, T, x.data(), y.data(), 0);
    const BatchSource::PackedShape shape = d.train_batch_packed(7, step, 0, B, T, xp.data(), yp.data(), pos.data(), ex.data(), 0);
    EXPECT_LT(shape.rows, B);
    EXPECT_LE(shape.T, T);
    // Chats of 21 to 60 tokens: packing computes fewer positions.
    EXPECT_LT(shape.rows * shape.T, B * Tpad);
    // Each example r of the padded batch is, token for token, the packed tokens tagged r, numbered from 0.
    for (int64_t r = 0; r < B; ++r) {
      std::vector<int32_t> px, py;
      for (int64_t i = 0; i < shape.rows * shape.T; ++i) {
        if (ex[static_cast<size_t>(i)] != r) continue;
        EXPECT_EQ(pos[static_cast<size_t>(i)], static_cast<int32_t>(px.size()));
        px.push_back(xp[static_cast<size_t>(i)]);
        py.push_back(yp[static_cast<size_t>(i)]);
      }
      ASSERT_FALSE(px.empty());
      ASSERT_LE(static_cast<int64_t>(px.size()), Tpad);
      EXPECT_TRUE(std::equal(px.begin(), px.end(), x.begin() + r * Tpad)) << "example " << r;
      EXPECT_TRUE(std::equal(py.begin(), py.end(), y.begin() + r * Tpad)) << "example " << r;
      for (int64_t t = static_cast<int64_t>(px.size()); t < Tpad; ++t) EXPECT_EQ(y[static_cast<size_t>(r * Tpad + t)], kIgnoreTarget);
    }
  }
  // Windows of a text have nothing to pack.
  const Dataset text(std::vector<int32_t>(500, 1), 0.1, 8);
  expect_error([&] { text.train_batch_packed(1, 0, 0, 2, 8, x.data(), y.data(), pos.data(), ex.data(), 0); }, "no examples to pack");
}

// A model whose vocabulary is padded past its tokenizer's (nanoGPT pads GPT-2's
// 50257 to 50304): the markers take padding rows, which start at the mean row
// and, under LoRA, train as the adapter's tokens.
TEST(Sft, MarkersInPaddingRowsStartAtTheMeanAndTrainUnderLora) {
  testing::TempDir dir;
  ModelConfig c = testing::model_config(300, 32, 2, 2, 16);  // 256 byte tokens + 44 padding rows
  GPT padded(c);
  padded.init_weights(3);
  const auto tok = make_byte_tokenizer();
  CheckpointContents cc;
  cc.model = &padded;
  cc.tokenizer = tok.get();
  save_checkpoint(dir / "base", cc);
  write_file_atomic(dir / "chats.jsonl", arithmetic_chats(40, 5));
  TrainOptions o = sft_options(dir, "adapter", 4);
  o.max_iters = 3;
  Trainer t(o);
  EXPECT_EQ(t.model().config().vocab_size, 300);  // no growth: the padding rows hold the markers
  EXPECT_EQ(t.tokenizer().special_token_id("<|im_start|>"), 256);
  ASSERT_NE(t.model().lora(), nullptr);
  EXPECT_EQ(t.model().lora()->config().trainable_tokens_begin, 256);
  double mean0 = 0;
  for (int r = 0; r < 256; ++r) mean0 += padded.weights().wte[r * 16];
  EXPECT_NEAR(t.model().weights().wte[256 * 16], mean0 / 256, 1e-5);
  t.run();
  const nlohmann::json cfg = nlohmann::json::parse(read_text_file(dir / "adapter" / kAdapterConfigFile));
  EXPECT_EQ(cfg["trainable_token_indices"][0], 256);
  // The adapter loads onto its base again.
  const LoadedAdapter a = load_adapter(dir / "adapter", c, &padded);
  EXPECT_EQ(a.adapter->config().trainable_tokens_begin, 256);
}

}  // namespace
}  // namespace gpt
