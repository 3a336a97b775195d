// The server's engine loop. HTTP handlers submit jobs (a request's n
// choices); the thread admits them while fewer than `parallel` sequences run,
// steps the batched engine, turns each sampled token into text (stop strings,
// whole characters) and hands it to the job's reader. Jobs beyond the bounded
// queue are refused (429). A job whose client went away is cancelled before the
// next step and its pages go back to the pool. Model inspection runs on the
// same thread between steps, so the CPU's cores are never split two ways.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "gpt/generation/batch_engine.h"
#include "gpt/generation/text_stream.h"
#include "gpt/serving/metrics.h"
#include "gpt/serving/openai_api.h"

namespace gpt::serving {

struct JobEvent {
  int choice = 0;
  std::string text;                    // may be empty (held back for a possible stop string)
  std::vector<TokenLogprob> logprobs;  // tokens sampled (when the request asked for logprobs)
  Finish finish = Finish::kNone;
};

class Job {
 public:
  using clock = std::chrono::steady_clock;
  explicit Job(GenerationRequest request, int peer_socket = -1);
  const GenerationRequest& request() const { return request_; }

  // Reader side: waits up to `timeout` for events and moves them into `out`;
  // true once every choice has finished (or the job failed / was cancelled)
  // and nothing is left to read.
  bool wait(std::vector<JobEvent>& out, std::chrono::milliseconds timeout);
  // Any thread: stop generating (a client that went away); the engine thread
  // frees the pages before its next step.
  void cancel() { cancel_requested_ = true; }
  bool cancelled() const { return cancel_requested_; }
  // Set if the job could not run (the message, for a 503).
  std::optional<std::string> error() const;
  int64_t completion_tokens() const { return completion_tokens_; }
  double first_token_seconds() const;  // -1 before the first token

 private:
  friend class Scheduler;
  void push(JobEvent e);
  void finish(std::optional<std::string> error = std::nullopt);

  GenerationRequest request_;
  int peer_socket_;  // the client's connection, watched for a hang-up (-1: not watched)
  std::atomic<bool> cancel_requested_{false};
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<JobEvent> pending_;
  bool finished_ = false;
  std::optional<std::string> error_;
  // Engine thread only.
  struct Choice {
    int64_t sequence = -1;
    StopTextStream text;
    bool done = false;
  };
  std::vector<Choice> choices_;
  int open_choices_ = 0;
  std::atomic<int64_t> completion_tokens_{0};
  clock::time_point submitted_;
  std::atomic<int64_t> first_token_ns_{-1};
};

struct SchedulerOptions {
  int parallel = 4;   // sequences decoding together
  int max_queue = 64; // jobs waiting beyond those
  EngineOptions engine;
  std::vector<int32_t> stop_tokens;  // end a choice without showing the token (e.g. <|endoftext|>)
};

class Scheduler {
 public:
  Scheduler(const InferenceWeights& weights, const Tokenizer& tokenizer, SchedulerOptions options, Metrics& metrics);
  ~Scheduler();  // fails what is left

  // The engine loop, on the calling thread, until stop(). Call it from the
  // thread that loaded the model (the main thread): OpenMP keeps one team of
  // workers per thread that starts parallel regions, and a second team would
  // put more spinning workers than cores on the machine, so libgomp would make
  // them all sleep between regions (measured: a third of the decoding speed lost
  // to futex wake-ups).
  void run();
  void stop();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job. ApiError 429 when the queue is full, 503 when shutting down.
  std::shared_ptr<Job> submit(GenerationRequest request, int peer_socket = -1);
  // Runs `fn` on the engine thread between two steps and waits for it; its
  // exception, if any, is rethrown here.
  void run_between_steps(const std::function<void()>& fn);
  // Refuse new jobs (503); running and queued ones go on.
  void stop_accepting();
  // Waits until no job is queued or running, or `timeout` passes; true if idle.
  bool wait_idle(std::chrono::milliseconds timeout);
  // Ends every running job now (each open choice finishes with the text it has,
  // finish_reason "length") and fails the queued ones (shutting down).
  void end_all();

  Metrics::Gauges gauges() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  void loop();
  bool admit(const std::shared_ptr<Job>& job);  // false: no room now
  void handle(const BatchedEngine::Event& e);
  void end_choice(Job& job, int choice);
  void cancel_job(Job& job);

  const Tokenizer& tokenizer_;
  SchedulerOptions options_;
  Metrics& metrics_;
  BatchedEngine engine_;

  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::deque<std::function<void(bool run)>> tasks_;  // run false: the server stops, fail instead
  bool accepting_ = true, stopping_ = false;
  // Engine thread (read under mutex_ for gauges).
  std::vector<std::shared_ptr<Job>> running_;
  std::map<int64_t, std::pair<Job*, int>> sequence_of_;  // engine id -> (job, choice)
  int64_t running_sequences_ = 0;
  Metrics::Gauges last_gauges_;
};

}  // namespace gpt::serving
