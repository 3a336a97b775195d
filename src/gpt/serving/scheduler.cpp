#include "gpt/serving/scheduler.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <future>

#include "gpt/util/error.h"

namespace gpt::serving {
namespace {

// True once the client has closed its end (a read would return end-of-file) or
// the connection broke. Bytes waiting (a pipelined request) mean it is alive.
bool peer_closed(int fd) {
  if (fd < 0) return false;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;
  if (n == 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

float logprob_of(float p) { return p > 0.0f ? std::max(std::log(p), -9999.0f) : -9999.0f; }

}  // namespace

Job::Job(GenerationRequest request, int peer_socket)
    : request_(std::move(request)), peer_socket_(peer_socket), submitted_(clock::now()) {
  for (int i = 0; i < request_.n; ++i) choices_.push_back({-1, StopTextStream(request_.stop), false});
  open_choices_ = request_.n;
}

bool Job::wait(std::vector<JobEvent>& out, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return !pending_.empty() || finished_; });
  for (JobEvent& e : pending_) out.push_back(std::move(e));
  pending_.clear();
  return finished_;
}

std::optional<std::string> Job::error() const {
  const std::lock_guard lock(mutex_);
  return error_;
}

double Job::first_token_seconds() const {
  const int64_t ns = first_token_ns_;
  return ns < 0 ? -1.0 : static_cast<double>(ns) * 1e-9;
}

void Job::push(JobEvent e) {
  {
    const std::lock_guard lock(mutex_);
    pending_.push_back(std::move(e));
  }
  cv_.notify_all();
}

void Job::finish(std::optional<std::string> error) {
  {
    const std::lock_guard lock(mutex_);
    if (finished_) return;
    finished_ = true;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

Scheduler::Scheduler(const InferenceWeights& weights, const Tokenizer& tokenizer, SchedulerOptions options,
                     Metrics& metrics)
    : tokenizer_(tokenizer), options_(std::move(options)), metrics_(metrics), engine_(weights, options_.engine) {
  GPT_CHECK(options_.parallel > 0, "--parallel must be positive");
  GPT_CHECK(options_.max_queue >= 0, "--max-queue must not be negative");
}

void Scheduler::run() { loop(); }

void Scheduler::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
    accepting_ = false;
  }
  wake_.notify_all();
}

Scheduler::~Scheduler() {
  stop();
  for (auto& job : queue_) job->finish("the server is shutting down");
  for (auto& job : running_) job->finish("the server is shutting down");
  for (auto& task : tasks_) task(false);  // (each reports that it did not run)
  tasks_.clear();
}

std::shared_ptr<Job> Scheduler::submit(GenerationRequest request, int peer_socket) {
  auto job = std::make_shared<Job>(std::move(request), peer_socket);
  {
    const std::lock_guard lock(mutex_);
    if (!accepting_) throw ApiError{503, "the server is shutting down", "", ""};
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue &&
        !(queue_.empty() && running_sequences_ + job->request().n <= options_.parallel)) {
      throw ApiError{429, "the server is busy: " + std::to_string(queue_.size()) +
                              " requests are waiting already; retry later", "", ""};
    }
    queue_.push_back(job);
  }
  wake_.notify_all();
  return job;
}

void Scheduler::run_between_steps(const std::function<void()>& fn) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> result = done->get_future();
  {
    const std::lock_guard lock(mutex_);
    if (stopping_) throw ApiError{503, "the server is shutting down", "", ""};
    tasks_.push_back([fn, done](bool run) {
      if (!run) {
        done->set_exception(std::make_exception_ptr(ApiError{503, "the server is shutting down", "", ""}));
        return;
      }
      try {
        fn();
        done->set_value();
      } catch (...) {
        done->set_exception(std::current_exception());
      }
    });
  }
  wake_.notify_all();
  result.get();
}

void Scheduler::stop_accepting() {
  const std::lock_guard lock(mutex_);
  accepting_ = false;
}

bool Scheduler::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return idle_.wait_for(lock, timeout, [&] { return queue_.empty() && running_.empty(); });
}

void Scheduler::end_all() {
  run_between_steps([this] {
    const std::lock_guard lock(mutex_);
    for (const auto& job : running_) {
      for (size_t c = 0; c < job->choices_.size(); ++c) {
        Job::Choice& ch = job->choices_[c];
        if (ch.done) continue;
        JobEvent ev;
        ev.choice = static_cast<int>(c);
        ev.text = ch.text.flush();
        ev.finish = Finish::kLength;
        job->push(std::move(ev));
        end_choice(*job, static_cast<int>(c));
      }
    }
    running_.clear();
    for (const auto& job : queue_) job->finish("the server is shutting down");
    queue_.clear();
    idle_.notify_all();
  });
}

Metrics::Gauges Scheduler::gauges() const {
  const std::lock_guard lock(mutex_);
  Metrics::Gauges g = last_gauges_;
  g.queued = static_cast<int64_t>(queue_.size());
  g.running_sequences = running_sequences_;
  return g;
}

bool Scheduler::admit(const std::shared_ptr<Job>& job) {
  const GenerationRequest& r = job->request();
  if (running_sequences_ + r.n > options_.parallel) return false;
  for (int i = 0; i < r.n; ++i) {
    SequenceOptions so;
    so.sampling = r.sampling;
    so.seed = r.seed + static_cast<uint64_t>(i);
    so.max_new_tokens = r.max_tokens;
    if (!r.ignore_eos) so.stop_tokens = options_.stop_tokens;
    so.top_probs = std::max(r.logprobs, 0);
    int64_t id;
    try {
      id = engine_.add(r.prompt, so);
    } catch (const Error& e) {
      job->finish(std::string("the request could not start: ") + e.what());
      cancel_job(*job);
      return true;
    }
    job->choices_[static_cast<size_t>(i)].sequence = id;
    sequence_of_[id] = {job.get(), i};
    ++running_sequences_;
  }
  metrics_.tokens(static_cast<int64_t>(r.prompt.size()), 0);
  running_.push_back(job);
  return true;
}

void Scheduler::end_choice(Job& job, int choice) {
  Job::Choice& ch = job.choices_[static_cast<size_t>(choice)];
  if (ch.done) return;
  ch.done = true;
  if (ch.sequence >= 0) {
    if (engine_.contains(ch.sequence)) engine_.cancel(ch.sequence);
    sequence_of_.erase(ch.sequence);
    --running_sequences_;
  }
  if (--job.open_choices_ == 0) {
    metrics_.latency(std::chrono::duration<double>(Job::clock::now() - job.submitted_).count(),
                     job.first_token_seconds());
    job.finish();
  }
}

void Scheduler::cancel_job(Job& job) {
  for (size_t i = 0; i < job.choices_.size(); ++i) end_choice(job, static_cast<int>(i));
  job.finish();
}

void Scheduler::handle(const BatchedEngine::Event& e) {
  const auto it = sequence_of_.find(e.id);
  if (it == sequence_of_.end()) return;
  Job& job = *it->second.first;
  const int c = it->second.second;
  Job::Choice& ch = job.choices_[static_cast<size_t>(c)];
  ++job.completion_tokens_;
  metrics_.tokens(0, 1);
  if (job.first_token_ns_ < 0) {
    job.first_token_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(Job::clock::now() - job.submitted_).count();
  }
  JobEvent ev;
  ev.choice = c;
  if (job.request_.logprobs >= 0) {
    TokenLogprob t{e.token, logprob_of(e.prob), {}};
    for (const TokenProbability& p : e.top) t.top.emplace_back(p.token, logprob_of(p.prob));
    ev.logprobs.push_back(std::move(t));
  }
  const bool stop_token = e.finished == FinishReason::kStopToken;
  if (!stop_token) ev.text = ch.text.push(tokenizer_.token_bytes(e.token));
  Finish finish = Finish::kNone;
  if (stop_token || ch.text.stopped()) {
    finish = Finish::kStop;
  } else if (e.finished == FinishReason::kLength || e.finished == FinishReason::kContextFull) {
    finish = Finish::kLength;
  }
  if (finish != Finish::kNone) {
    ev.text += ch.text.flush();
    ev.finish = finish;
  }
  job.push(std::move(ev));
  if (finish != Finish::kNone) end_choice(job, c);
}

void Scheduler::loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !tasks_.empty() || !queue_.empty() || !running_.empty(); });
    if (stopping_) {
      // Tasks still waiting fail (503) rather than leave their handlers waiting.
      for (auto& task : tasks_) task(false);
      tasks_.clear();
      return;
    }
    // One task between two steps: a stream of inspections must not stop decoding.
    if (!tasks_.empty()) {
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task(true);
      lock.lock();
    }
    // Clients that went away: their sequences end before the next step.
    for (const auto& job : running_) {
      if (job->cancelled() || peer_closed(job->peer_socket_)) {
        metrics_.cancelled();
        cancel_job(*job);
      }
    }
    // Admit in arrival order while there is room (a job that does not fit waits: no overtaking).
    while (!queue_.empty()) {
      const std::shared_ptr<Job> job = queue_.front();
      if (job->cancelled() || peer_closed(job->peer_socket_)) {
        queue_.pop_front();
        metrics_.cancelled();
        job->finish();
        continue;
      }
      if (!admit(job)) break;
      queue_.pop_front();
    }
    std::erase_if(running_, [](const std::shared_ptr<Job>& j) { return j->open_choices_ == 0; });
    last_gauges_.kv_pages_total = engine_.pool().total_pages();
    last_gauges_.kv_pages_cached = engine_.cached_pages();
    last_gauges_.kv_pages_used = engine_.pool().total_pages() - engine_.pool().free_pages() - engine_.cached_pages();
    last_gauges_.preemptions = engine_.preemptions();
    last_gauges_.reused_positions = engine_.reused_positions();
    if (running_.empty()) {
      if (queue_.empty()) idle_.notify_all();
      continue;
    }
    lock.unlock();
    std::vector<BatchedEngine::Event> events;
    std::optional<std::string> failure;
    try {
      events = engine_.step();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    lock.lock();
    for (const BatchedEngine::Event& e : events) handle(e);
    if (failure) {
      // The engine cancelled what it could not run (a sequence larger than the whole KV pool).
      for (const auto& job : running_) {
        bool lost = false;
        for (const Job::Choice& ch : job->choices_) lost |= !ch.done && !engine_.contains(ch.sequence);
        if (lost) {
          job->finish(*failure);
          cancel_job(*job);
        }
      }
    }
    std::erase_if(running_, [](const std::shared_ptr<Job>& j) { return j->open_choices_ == 0; });
    if (running_.empty() && queue_.empty()) idle_.notify_all();
  }
}

}  // namespace gpt::serving
