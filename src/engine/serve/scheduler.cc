// SPDX-License-Identifier: MIT
#include "engine/serve/scheduler.h"

#include <algorithm>
#include <string>

#include "base/timer.h"

namespace kvq {

struct Scheduler::Seq {
  Seq(SeqRequest r, std::shared_ptr<SeqChannel> c)
      : req(std::move(r)), ch(std::move(c)), sampler(req.sampling), text(req.stop) {}
  SeqRequest req;
  std::shared_ptr<SeqChannel> ch;
  std::unique_ptr<KvCache> cache;
  Sampler sampler;
  TextStream text;
  size_t reserved = 0;
  int slot = -1;
  int n_fed = 0;        // prompt tokens run so far (from the slot's cache first)
  std::vector<int32_t> out;  // generated tokens (all but the last are in the cache)
  FinishReason finish = FinishReason::kNone;
  int32_t next = -1;    // the sampled token the next step runs
  int n_generated = 0;
  std::vector<float> logits;
  bool finished = false;
  int n_prompt() const { return int(req.prompt.size()); }
  bool prefilling() const { return n_fed < n_prompt(); }
};

namespace {
constexpr auto kRateWindow = std::chrono::seconds(10);
}

Scheduler::Scheduler(const LlamaModel& model, ExecContext& ctx, const SchedulerOptions& opts)
    : model_(model), ctx_(ctx), opts_(opts), pool_(std::make_shared<PagePool>(opts.kv_budget)) {}

Scheduler::~Scheduler() {
  stop();
  cancel_all();
}

StatusOr<std::unique_ptr<Scheduler>> Scheduler::create(const LlamaModel& model, ExecContext& ctx,
                                                       const SchedulerOptions& opts) {
  if (opts.n_ctx < 2) return invalid_argument("the context (-c) must hold at least 2 tokens");
  if (opts.max_seqs < 1) return invalid_argument("the number of parallel sequences (-np) must be at least 1");
  if (opts.max_queue < 0) return invalid_argument("the queue length must not be negative");
  if (opts.prefill_chunk < 1) return invalid_argument("the batch size (-b) must be at least 1");
  std::unique_ptr<Scheduler> s(new Scheduler(model, ctx, opts));
  // The probe has a pool of its own: it only answers bytes_for() and allocates nothing.
  KVQ_ASSIGN_OR_RETURN(s->probe_, make_cache(opts.spec, model.kv_shape(opts.n_ctx), opts.calib));
  if (!s->probe_->batch_invariant()) {
    // A window cache (KIVI) grows its fp16 ring by a prefill chunk's rows for one step and
    // copies it when it does: twice the f16 bytes of a chunk bounds that, for all sequences
    // together since a step prefills at most prefill_chunk tokens.
    auto f16 = make_cache(parse_cache_spec("f16").value(), model.kv_shape(opts.n_ctx));
    KVQ_RETURN_IF_ERROR(f16.status());
    s->headroom_ = 2 * (*f16)->bytes_for(std::min(opts.prefill_chunk, opts.n_ctx));
  }
  if (opts.kv_budget != PagePool::kUnlimited && s->headroom_ >= opts.kv_budget) {
    return invalid_argument("the KV budget of " + std::to_string(opts.kv_budget) +
                            " bytes does not cover a prefill step's " + std::to_string(s->headroom_) +
                            " bytes of window growth; raise --kv-budget or lower -b");
  }
  s->m_.kv_budget = opts.kv_budget;
  s->slots_.resize(size_t(opts.max_seqs));
  s->binding_ = session_binding(model);
  return s;
}

size_t Scheduler::reservation_bytes(int n_tokens) const {
  const size_t predicted = probe_->bytes_for(n_tokens);
  // KVQuant's newest outlier page (grown by doubling) and its data-dependent key outliers
  // allocate up to 0.3% beyond what bytes_for() predicts (measured on the testbed, 900-token
  // sequences): a thirty-second more keeps an admitted sequence inside its reservation. The
  // other formats, KIVI's window ring included, allocate exactly bytes_for() (tested in
  // CacheScheme.EveryNameParsesBuildsAndIsAccounted); a step's transient window growth is
  // the headroom above.
  auto has = [&](TensorKind k) { return opts_.spec.k.kind == k || opts_.spec.v.kind == k; };
  if (has(TensorKind::kKvquant)) return predicted + predicted / 32;
  return predicted;
}

SubmitResult Scheduler::submit(SeqRequest req) {
  SubmitResult r;
  auto refuse = [&](SubmitError e, Status st) {
    r.error = e;
    r.status = std::move(st);
    std::lock_guard<std::mutex> l(mu_);
    ++m_.requests_refused;
    return r;
  };
  const int n_prompt = int(req.prompt.size());
  if (n_prompt == 0) return refuse(SubmitError::kInvalid, invalid_argument("the prompt is empty"));
  if (req.max_tokens < 1) {
    return refuse(SubmitError::kInvalid,
                  invalid_argument("max_tokens must be at least 1, got " + std::to_string(req.max_tokens)));
  }
  for (int32_t id : req.prompt) {
    if (id < 0 || id >= model_.config().n_vocab) {
      return refuse(SubmitError::kInvalid, invalid_argument("token id " + std::to_string(id) +
                                                            " is outside the vocabulary"));
    }
  }
  if (req.id_slot < -1 || req.id_slot >= opts_.max_seqs) {
    return refuse(SubmitError::kInvalid, invalid_argument("id_slot " + std::to_string(req.id_slot) +
                                                          " is not a slot: the server has " +
                                                          std::to_string(opts_.max_seqs) + " (0 to " +
                                                          std::to_string(opts_.max_seqs - 1) + ", or -1: any)"));
  }
  if (n_prompt >= opts_.n_ctx) {
    return refuse(SubmitError::kInvalid, invalid_argument("the prompt has " + std::to_string(n_prompt) +
                                                          " tokens; the context holds " +
                                                          std::to_string(opts_.n_ctx) + " (prompt + max_tokens)"));
  }
  if (int64_t(n_prompt) + req.max_tokens > opts_.n_ctx) {
    return refuse(SubmitError::kInvalid,
                  invalid_argument("the prompt's " + std::to_string(n_prompt) + " tokens + max_tokens " +
                                   std::to_string(req.max_tokens) + " exceed the context of " +
                                   std::to_string(opts_.n_ctx) + " tokens"));
  }
  const size_t need = reservation_bytes(n_prompt + req.max_tokens);
  if (opts_.kv_budget != PagePool::kUnlimited && need > opts_.kv_budget - headroom_) {
    return refuse(SubmitError::kTooLarge,
                  invalid_argument("the request needs " + std::to_string(need) + " bytes of " + probe_->name() +
                                   " KV cache; the server's budget for all sequences is " +
                                   std::to_string(opts_.kv_budget - headroom_)));
  }
  auto ch = std::make_shared<SeqChannel>();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) {
      ++m_.requests_refused;
      r.error = SubmitError::kShuttingDown;
      r.status = invalid_argument("the server is shutting down");
      return r;
    }
    if (int(queue_.size()) >= opts_.max_queue) {
      ++m_.requests_refused;
      r.error = SubmitError::kQueueFull;
      r.status = invalid_argument("the queue of " + std::to_string(opts_.max_queue) + " waiting requests is full");
      return r;
    }
    auto s = std::make_unique<Seq>(std::move(req), ch);
    s->reserved = need;
    queue_.push_back(std::move(s));
    ++m_.requests_total;
  }
  cv_.notify_all();
  r.channel = std::move(ch);
  return r;
}

void Scheduler::admit_locked() {
  const size_t usable = opts_.kv_budget == PagePool::kUnlimited ? PagePool::kUnlimited : opts_.kv_budget - headroom_;
  size_t i = 0;
  while (i < queue_.size()) {
    Seq& s = *queue_[i];
    auto drop = [&] { queue_.erase(queue_.begin() + std::ptrdiff_t(i)); };
    if (s.ch->cancelled()) {
      s.ch->finish(FinishReason::kCancelled, ok_status(), s.n_prompt(), 0);
      ++m_.requests_cancelled;
      drop();
      continue;
    }
    // A request waiting for its busy id_slot lets the ones behind it pass (as llama-server
    // defers it). Otherwise FIFO: a large request waits for room rather than being overtaken
    // forever, and with no free slot nothing behind it could run either.
    const int slot = choose_slot_locked(s.req);
    if (slot < 0 && s.req.id_slot >= 0) {
      ++i;
      continue;
    }
    if (slot < 0) break;
    if (s.reserved > usable - reserved_) break;
    // Idle caches give way to reservations. The chosen slot's cache becomes this sequence's,
    // cut to at most its prompt, inside its reservation.
    if (!make_room_locked(s.reserved, slot)) break;
    Slot& sl = slots_[size_t(slot)];
    if (!sl.cache) {
      auto cache = make_cache(opts_.spec, model_.kv_shape(opts_.n_ctx), opts_.calib, pool_);
      if (!cache.ok()) {
        s.ch->finish(FinishReason::kError, cache.status(), s.n_prompt(), 0);
        ++m_.requests_failed;
        drop();
        continue;
      }
      sl.cache = std::move(*cache);
      sl.tokens.clear();
    }
    const int kept = s.req.cache_prompt ? keep_session_prefix(*sl.cache, sl.tokens, s.req.prompt, nullptr) : 0;
    if (kept == 0) sl.cache->clear();
    s.cache = std::move(sl.cache);
    sl.tokens.clear();
    sl.seq = &s;
    s.slot = slot;
    s.n_fed = kept;
    m_.prompt_tokens_reused += kept;
    s.logits.resize(size_t(model_.config().n_vocab));
    reserved_ += s.reserved;
    active_.push_back(std::move(queue_[i]));
    drop();
  }
}

void Scheduler::release_slot_locked(Seq& s) {
  if (s.slot < 0) return;
  Slot& sl = slots_[size_t(s.slot)];
  sl.seq = nullptr;
  sl.last_used = ++tick_;
  s.slot = -1;
  // A failed step may have left the cache part-way through a token: it is not kept.
  if (!s.cache || s.finish == FinishReason::kError) return;
  const size_t n = size_t(s.cache->n_tokens(0));
  sl.tokens = s.req.prompt;
  sl.tokens.insert(sl.tokens.end(), s.out.begin(), s.out.end());
  KVQ_CHECK(n <= sl.tokens.size());
  sl.tokens.resize(n);  // the last token sampled was never run
  sl.cache = std::move(s.cache);
}

void Scheduler::end(Seq& s, FinishReason r, const Status& error) {
  if (s.finished) return;
  s.ch->push_text(s.text.finish());
  s.ch->finish(r, error, s.n_prompt(), s.n_generated);
  s.finished = true;
  s.finish = r;
}

void Scheduler::sample(Seq& s) {
  const Tokenizer& tok = model_.tokenizer();
  const int32_t id = s.sampler.sample(s.logits.data(), model_.config().n_vocab);
  if (tok.is_eog(id) && !s.req.ignore_eos) return end(s, FinishReason::kStop, ok_status());
  ++s.n_generated;
  s.out.push_back(id);
  s.ch->count_token();
  bool stopped = false;
  s.ch->push_text(s.text.push(tok.token_to_piece(id), &stopped));
  if (stopped) return end(s, FinishReason::kStop, ok_status());
  if (s.n_generated >= s.req.max_tokens || s.cache->n_tokens(0) >= opts_.n_ctx) {
    return end(s, FinishReason::kLength, ok_status());
  }
  s.next = id;
}

bool Scheduler::step() {
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& s : active_) {
      if (s->ch->cancelled() && !s->finished) {
        end(*s, FinishReason::kCancelled, ok_status());
        ++m_.requests_cancelled;
      }
    }
    for (auto& s : queue_) {
      if (s->ch->cancelled()) {
        end(*s, FinishReason::kCancelled, ok_status());
        ++m_.requests_cancelled;
        s.reset();
      }
    }
    std::erase(queue_, nullptr);
  }
  auto sweep = [&] {
    std::vector<std::unique_ptr<Seq>> done;
    std::lock_guard<std::mutex> l(mu_);
    for (auto& s : active_) {
      if (s->finished) {
        reserved_ -= s->reserved;
        release_slot_locked(*s);
        done.push_back(std::move(s));
      }
    }
    std::erase(active_, nullptr);
    admit_locked();
    m_.n_active = int(active_.size());
    m_.n_queued = int(queue_.size());
    return done;  // destroyed here, outside the lock (their caches are back in their slots)
  };
  sweep();
  if (active_.empty()) return false;

  Timer timer;
  std::vector<BatchSeq> batch;
  std::vector<Seq*> seqs;
  std::vector<int> n_run;
  int prefill_left = opts_.prefill_chunk;
  for (auto& sp : active_) {
    Seq& s = *sp;
    BatchSeq b;
    b.cache = s.cache.get();
    if (s.prefilling()) {
      if (prefill_left == 0) continue;
      const int n = std::min(s.n_prompt() - s.n_fed, prefill_left);
      prefill_left -= n;
      b.tokens = std::span<const int32_t>(s.req.prompt).subspan(size_t(s.n_fed), size_t(n));
      b.logits = s.n_fed + n == s.n_prompt() ? s.logits.data() : nullptr;
      n_run.push_back(n);
    } else {
      b.tokens = std::span<const int32_t>(&s.next, 1);
      b.logits = s.logits.data();
      n_run.push_back(1);
    }
    batch.push_back(b);
    seqs.push_back(&s);
  }
  int failed = -1;
  const Status st = model_.forward_batch(ctx_, batch, ws_, &failed);
  int generated = 0, prompt = 0;
  if (!st.ok()) {
    // All or nothing: the other caches are as before the step and run again next time.
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (failed < 0 || size_t(failed) == i) {
        end(*seqs[i], FinishReason::kError, st);
        ++m_.requests_failed;
      }
    }
  } else {
    for (size_t i = 0; i < seqs.size(); ++i) {
      Seq& s = *seqs[i];
      if (s.prefilling()) {
        s.n_fed += n_run[i];
        prompt += n_run[i];
        if (s.prefilling()) continue;
      }
      const int before = s.n_generated;
      sample(s);
      generated += s.n_generated - before;
    }
  }
  const double secs = timer.seconds();
  {
    std::lock_guard<std::mutex> l(mu_);
    const auto now = std::chrono::steady_clock::now();
    ++m_.steps_total;
    m_.busy_seconds += secs;
    m_.prompt_tokens_total += prompt;
    m_.generated_tokens_total += generated;
    recent_.emplace_back(now, generated);
    recent_secs_.push_back(secs);
    while (!recent_.empty() && now - recent_.front().first > kRateWindow) {
      recent_.pop_front();
      recent_secs_.pop_front();
    }
    int64_t kv_tokens = 0;
    for (auto& s : active_) {
      if (!s->finished) kv_tokens += s->cache->n_tokens(0);
    }
    m_.kv_tokens = kv_tokens;
  }
  sweep();
  return true;
}

void Scheduler::run() {
  for (;;) {
    const bool worked = step();
    std::unique_lock<std::mutex> l(mu_);
    if (stopping_) break;
    if (!worked) cv_.wait_for(l, std::chrono::milliseconds(50), [&] { return stopping_ || !queue_.empty(); });
  }
  cancel_all();
}

void Scheduler::cancel_all() {
  // Whatever is left is cancelled; its caches go back to the pool.
  std::vector<std::unique_ptr<Seq>> left;
  std::vector<std::unique_ptr<KvCache>> idle;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& s : active_) {
      if (!s->finished) ++m_.requests_cancelled;
      end(*s, FinishReason::kCancelled, ok_status());
      left.push_back(std::move(s));
    }
    for (auto& s : queue_) {
      ++m_.requests_cancelled;
      end(*s, FinishReason::kCancelled, ok_status());
      left.push_back(std::move(s));
    }
    active_.clear();
    queue_.clear();
    // Idle caches go too; a slot that a save is reading keeps its cache until the save ends
    // (it drops the cache then, seeing stopping_).
    for (Slot& sl : slots_) {
      sl.seq = nullptr;
      if (sl.locked) continue;
      sl.tokens.clear();
      idle.push_back(std::move(sl.cache));
    }
    reserved_ = 0;
    m_.n_active = m_.n_queued = 0;
    m_.kv_tokens = 0;
  }
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

SchedulerMetrics Scheduler::metrics() const {
  std::lock_guard<std::mutex> l(mu_);
  SchedulerMetrics m = m_;
  m.kv_bytes_used = pool_->bytes_in_use();
  m.kv_bytes_reserved = reserved_;
  for (const Slot& sl : slots_) {
    if (!sl.cache) continue;
    m.kv_bytes_cached += sl.cache->bytes_used();
    m.kv_tokens += int64_t(sl.tokens.size());
  }
  const double values = 2.0 * double(m.kv_tokens) * model_.config().n_layers * model_.config().kv_dim();
  m.kv_bits_per_value = values > 0 ? 8.0 * double(m.kv_bytes_used) / values : 0.0;
  int64_t tokens = 0;
  double secs = 0;
  for (size_t i = 0; i < recent_.size(); ++i) {
    tokens += recent_[i].second;
    secs += recent_secs_[i];
  }
  m.decode_tokens_per_s = secs > 0 ? double(tokens) / secs : 0.0;
  return m;
}

}  // namespace kvq
