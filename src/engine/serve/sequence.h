// SPDX-License-Identifier: MIT
// A request as the scheduler takes it, and the channel its results come back on. The model
// thread writes a channel; one client thread (an HTTP handler, a benchmark client, a test)
// reads it and may cancel it. Everything here is thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "kvq/status.h"

namespace kvq {

struct SeqRequest {
  std::vector<int32_t> prompt;  // token ids, BOS first when the model adds one
  int max_tokens = 16;          // tokens to generate at most (>= 1)
  SamplingArgs sampling;        // each sequence samples with its own generator and seed
  std::vector<std::string> stop;  // generation ends before the first of these (not emitted)
  bool ignore_eos = false;        // go on past end-of-generation tokens (load benchmarks)
  int id_slot = -1;               // the slot to run in (llama-server's id_slot); -1: the scheduler picks
  bool cache_prompt = true;       // reuse the prefix the slot's cache shares with the prompt
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
// OpenAI's finish_reason: "stop", "length"; ours beyond it: "cancelled", "error".
const char* finish_reason_name(FinishReason r);

// What a reader takes from a channel: the next piece of text (one generated token's, or what
// a stop-string or UTF-8 hold-back released at once) and, once, after the last piece, the end.
struct SeqUpdate {
  std::string text;
  bool done = false;
  FinishReason finish = FinishReason::kNone;
  Status error;  // with kError
  int n_prompt = 0, n_generated = 0;
};

class SeqChannel {
 public:
  using Clock = std::chrono::steady_clock;

  // Model thread.
  void push_text(const std::string& text);
  void count_token();
  void finish(FinishReason r, const Status& error, int n_prompt, int n_generated);

  // Reader: waits up to timeout for the next piece or the end; false when nothing came (text
  // empty, not done). One piece per read, however far the reader lags, so a stream sends each
  // token's text as its own event (as OpenAI and llama-server do) rather than whatever piled
  // up since the last write. After the update with done, nothing more comes.
  bool wait(SeqUpdate* out, std::chrono::milliseconds timeout);
  // Reader (or shutdown): asks the scheduler to stop this sequence and free its cache; the
  // channel then finishes with kCancelled (unless it finished first).
  void cancel() { std::lock_guard<std::mutex> l(mu_); cancelled_ = true; }
  bool cancelled() const { std::lock_guard<std::mutex> l(mu_); return cancelled_; }

  // Timings for latency reports: submitted, first generated token, last token, finish.
  Clock::time_point t_submit() const { std::lock_guard<std::mutex> l(mu_); return t_submit_; }
  Clock::time_point t_first_token() const { std::lock_guard<std::mutex> l(mu_); return t_first_; }
  Clock::time_point t_last_token() const { std::lock_guard<std::mutex> l(mu_); return t_last_; }
  int n_generated() const { std::lock_guard<std::mutex> l(mu_); return n_generated_; }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> pieces_;
  bool done_ = false, delivered_done_ = false, cancelled_ = false;
  FinishReason finish_ = FinishReason::kNone;
  Status error_;
  int n_prompt_ = 0, n_generated_ = 0;
  Clock::time_point t_submit_ = Clock::now(), t_first_{}, t_last_{};
};

}  // namespace kvq
