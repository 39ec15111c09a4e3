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
// sequence samples with its own Sampler; stop strings, EOS, max_tokens and cancellation end it.
//
// Slots (llama-server's -np): each sequence runs in one of max_seqs slots, and when it ends its
// cache and the tokens it holds stay in the slot, idle. A new request goes to the free slot
// whose tokens share the longest prefix with its prompt (or to its id_slot) and prefills only
// the rest (keep_session_prefix's rule: short of the prompt's last token, where the format can
// cut); a request waiting for its busy id_slot lets the queue behind it pass. Idle caches live in the same pool but are not reserved: admission drops them, least
// recently used first, whenever the reservations need their bytes, so an idle cache never
// makes a request wait or be refused. save_slot / restore_slot / erase_slot work on an idle
// slot from the caller's thread while the model thread goes on (the slot is locked meanwhile).
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
#include "engine/session.h"
#include "io/output_file.h"
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
  int max_seqs = 16;          // slots: sequences decoding at once (llama-server's -np)
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
  int64_t prompt_tokens_reused = 0;  // prompt tokens found in a slot's cache, not prefilled
  size_t kv_bytes_cached = 0;        // held by idle slots' caches (part of kv_bytes_used)
  int64_t slot_caches_dropped = 0;   // idle caches dropped to make room
  int64_t requests_total = 0, requests_refused = 0, requests_failed = 0, requests_cancelled = 0;
  int64_t steps_total = 0;
  double busy_seconds = 0;        // time spent in forward steps and sampling
  double decode_tokens_per_s = 0; // tokens generated per second over the last ~10 s of steps
};

// Why a slot operation failed.
enum class SlotError {
  kNone,
  kNoSuchSlot,    // the id is not one of the slots
  kBusy,          // a sequence runs in it, or another save/restore holds it
  kNoRoom,        // a restore's bytes do not fit beside the running sequences' reservations now
  kShuttingDown,
  kFailed,        // status says why (a session file's errors: engine/session.h)
};

struct SlotResult {
  SlotError error = SlotError::kNone;
  Status status;
  int n_tokens = 0;      // saved / restored / erased
  uint64_t n_bytes = 0;  // written / read
  double ms = 0;
};

struct SlotInfo {
  int id = 0;
  bool busy = false;    // a sequence runs in it
  bool locked = false;  // a save or restore is working on it
  int n_tokens = 0;     // tokens its cache holds (idle) or the running sequence's prompt + generated
  size_t bytes = 0;     // its idle cache's bytes (0 while busy)
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

  // Slots (thread-safe; slots.cc). An idle slot's cache to out as a session file.
  SlotResult save_slot(int id, OutputFile& out);
  // Replaces an idle slot's cache with the session in bytes (name: for messages). Its old
  // cache stays as it was when the file is refused.
  SlotResult restore_slot(int id, std::span<const uint8_t> bytes, const std::string& name);
  SlotResult erase_slot(int id);
  std::vector<SlotInfo> slots() const;
  // Drops every idle cache (tests: the pool is then empty when nothing runs). Returns how many.
  int drop_idle_caches();

 private:
  struct Seq;
  struct Slot {
    std::unique_ptr<KvCache> cache;  // idle: what it keeps (may be null); busy: null
    std::vector<int32_t> tokens;     // what cache holds
    Seq* seq = nullptr;              // the sequence running in it
    bool locked = false;             // a save or restore works on it outside mu_
    uint64_t last_used = 0;
  };
  Scheduler(const LlamaModel& model, ExecContext& ctx, const SchedulerOptions& opts);
  void admit_locked();
  void end(Seq& s, FinishReason r, const Status& error);
  void sample(Seq& s);
  void cancel_all();
  int choose_slot_locked(const SeqRequest& r) const;
  size_t idle_bytes_locked(int except) const;
  // Drops idle caches (least recently used first, never `keep` or a locked slot's) until
  // need more bytes fit beside the reservations and the other idle caches. False if they
  // cannot.
  bool make_room_locked(size_t need, int keep);
  void release_slot_locked(Seq& s);
  // Locks slot id for a save or restore, or says why not.
  SlotError lock_slot_locked(int id);

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
  std::vector<Slot> slots_;                   // max_seqs of them
  uint64_t tick_ = 0;                         // slot use counter (LRU)
  SessionBinding binding_;                    // what session files are bound to
  size_t reserved_ = 0;
  SchedulerMetrics m_;  // counters (under mu_)
  // Steps of the last ~10 s: (end, tokens generated) and their seconds, for the rate.
  std::deque<std::pair<std::chrono::steady_clock::time_point, int>> recent_;
  std::deque<double> recent_secs_;
};

}  // namespace kvq
