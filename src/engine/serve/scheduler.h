// SPDX-License-Identifier: MIT
// Continuous batching of many sequences over one KV page pool.
//
// Admission is by reservation: a request is admitted only when the bytes its cache can ever
// allocate — KvCache::bytes_for(prompt + max_tokens) at the server's cache type, plus a
// margin measured for KIVI and KVQuant (reservation_bytes()) — fit in the
// budget beside everything already reserved, so an admitted sequence never runs out of pages
// half-way; requests that do not fit yet wait in a bounded FIFO queue. The pool's own byte
// budget (kv/page_pool.h) is the hard cap behind the reservations.
//
// Each step() runs one LlamaModel::forward_batch over every active sequence: one token of each
// decoding sequence plus at most prefill_chunk prompt tokens of sequences still prefilling
// (oldest first), so a long prompt joins in slices instead of stalling the others. Each
// sequence samples with its own Sampler; stop strings, EOS, max_tokens and cancellation end it
// and its cache is destroyed at once, returning its pages to the pool.
//
// Threads: submit(), metrics(), stop() and the channels are thread-safe; step() and run() are
// for one thread only, the one that owns the model and the ExecContext.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "base/exec_context.h"
#include "engine/serve/sequence.h"
#include "engine/serve/text_stream.h"
#include "kv/cache_spec.h"
#include "kv/page_pool.h"
#include "model/llama.h"

namespace kvq {

struct SchedulerOptions {
  CacheSpec spec;
  CacheCalibration calib;     // kvquant parameters; must outlive the scheduler
  int n_ctx = 2048;           // tokens per sequence (prompt + generated)
  size_t kv_budget = PagePool::kUnlimited;  // bytes of KV cache for all sequences together
  int max_seqs = 16;          // sequences decoding at once (llama-server's -np)
  int max_queue = 256;        // requests waiting for admission; beyond it submit() refuses
  int prefill_chunk = 512;    // prompt tokens per step, all prefilling sequences together (-b)
};

// Why submit() refused a request.
enum class SubmitError {
  kNone,
  kInvalid,       // the request itself is wrong (empty prompt, does not fit n_ctx, ...)
  kTooLarge,      // its reservation exceeds the whole budget: it could never be admitted
  kQueueFull,     // try again later
  kShuttingDown,
};

struct SubmitResult {
  std::shared_ptr<SeqChannel> channel;  // set when accepted
  SubmitError error = SubmitError::kNone;
  Status status;
};

struct SchedulerMetrics {
  int n_active = 0, n_queued = 0;
  size_t kv_bytes_used = 0;      // allocated in the pool now
  size_t kv_bytes_reserved = 0;  // promised to admitted sequences
  size_t kv_budget = 0;
  int64_t kv_tokens = 0;         // tokens held by all caches
  double kv_bits_per_value = 0;  // bytes used * 8 over the K/V values held (0 when empty)
  int64_t prompt_tokens_total = 0, generated_tokens_total = 0;
  int64_t requests_total = 0, requests_refused = 0, requests_failed = 0, requests_cancelled = 0;
  int64_t steps_total = 0;
  double busy_seconds = 0;        // time spent in forward steps and sampling
  double decode_tokens_per_s = 0; // tokens generated per second over the last ~10 s of steps
};

class Scheduler {
 public:
  // Errors: an invalid spec for the model's shape, a kvquant spec without calibration.
  static StatusOr<std::unique_ptr<Scheduler>> create(const LlamaModel& model, ExecContext& ctx,
                                                     const SchedulerOptions& opts);
  ~Scheduler();

  SubmitResult submit(SeqRequest req);
  // The bytes a request of n_tokens (prompt + max_tokens) reserves: bytes_for(n_tokens), plus a
  // margin where the format allocates somewhat beyond that prediction (KIVI 1/16, KVQuant 1/32).
  size_t reservation_bytes(int n_tokens) const;
  // Bytes of the budget kept for a step's transient growth (KIVI's window during a prefill
  // chunk); reservations share the rest.
  size_t step_headroom() const { return headroom_; }
  const SchedulerOptions& options() const { return opts_; }
  SchedulerMetrics metrics() const;
  const PagePool& pool() const { return *pool_; }

  // One iteration: reaps cancelled sequences, admits what fits, runs one batched step and
  // samples. False when there was nothing to do.
  bool step();
  // Steps until stop(), sleeping while idle.
  void run();
  // Cancels every sequence, queued or active, and makes run() return. Thread-safe.
  void stop();

 private:
  struct Seq;
  Scheduler(const LlamaModel& model, ExecContext& ctx, const SchedulerOptions& opts);
  void admit_locked();
  void end(Seq& s, FinishReason r, const Status& error);
  void sample(Seq& s);
  void cancel_all();

  const LlamaModel& model_;
  ExecContext& ctx_;
  SchedulerOptions opts_;
  std::shared_ptr<PagePool> pool_;
  std::unique_ptr<KvCache> probe_;  // an empty cache of the spec, for bytes_for()
  size_t headroom_ = 0;
  ForwardWorkspace ws_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<std::unique_ptr<Seq>> queue_;
  std::vector<std::unique_ptr<Seq>> active_;  // admission order
  size_t reserved_ = 0;
  SchedulerMetrics m_;  // counters (under mu_)
  // Steps of the last ~10 s: (end, tokens generated) and their seconds, for the rate.
  std::deque<std::pair<std::chrono::steady_clock::time_point, int>> recent_;
  std::deque<double> recent_secs_;
};

}  // namespace kvq
