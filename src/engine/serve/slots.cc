// SPDX-License-Identifier: MIT
// The scheduler's slots (engine/serve/scheduler.h): which slot a request runs in, idle caches
// giving way to reservations, and save / restore / erase of an idle slot.
#include <algorithm>
#include <cstring>
#include <string>

#include "base/timer.h"
#include "engine/serve/scheduler.h"

namespace kvq {

namespace {

SlotResult slot_error(SlotError e, Status st) {
  SlotResult r;
  r.error = e;
  r.status = std::move(st);
  return r;
}

}  // namespace

int Scheduler::choose_slot_locked(const SeqRequest& r) const {
  auto is_free = [&](const Slot& sl) { return sl.seq == nullptr && !sl.locked; };
  if (r.id_slot >= 0) return is_free(slots_[size_t(r.id_slot)]) ? r.id_slot : -1;
  // The longest shared prefix when it is at least half the prompt (llama-server's default
  // --slot-prompt-similarity 0.5: a shared BOS alone is no reason to overwrite a cache); else,
  // and among equals, an empty slot, then the least recently used.
  int best = -1;
  size_t best_common = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& sl = slots_[i];
    if (!is_free(sl)) continue;
    size_t common = r.cache_prompt && sl.cache ? common_prefix(sl.tokens, r.prompt) : 0;
    if (2 * common < r.prompt.size()) common = 0;
    if (best < 0 || common > best_common) {
      best = int(i), best_common = common;
      continue;
    }
    if (common < best_common) continue;
    const Slot& b = slots_[size_t(best)];
    if ((b.cache && !sl.cache) || (bool(b.cache) == bool(sl.cache) && sl.last_used < b.last_used)) best = int(i);
  }
  return best;
}

size_t Scheduler::idle_bytes_locked(int except) const {
  size_t n = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (int(i) != except && slots_[i].cache) n += slots_[i].cache->bytes_used();
  }
  return n;
}

bool Scheduler::make_room_locked(size_t need, int keep) {
  if (opts_.kv_budget == PagePool::kUnlimited) return true;
  const size_t usable = opts_.kv_budget - headroom_;
  if (need > usable - std::min(usable, reserved_)) return false;
  for (;;) {
    // Reservations (running sequences, restores in progress) and idle caches together stay
    // within the budget: a running sequence then always finds its pages.
    if (reserved_ + need + idle_bytes_locked(keep) <= usable) return true;
    int lru = -1;
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& sl = slots_[i];
      if (int(i) == keep || !sl.cache || sl.locked || sl.seq) continue;
      if (lru < 0 || sl.last_used < slots_[size_t(lru)].last_used) lru = int(i);
    }
    if (lru < 0) return false;
    slots_[size_t(lru)].cache.reset();
    slots_[size_t(lru)].tokens.clear();
    ++m_.slot_caches_dropped;
  }
}

SlotError Scheduler::lock_slot_locked(int id) {
  if (id < 0 || size_t(id) >= slots_.size()) return SlotError::kNoSuchSlot;
  if (stopping_) return SlotError::kShuttingDown;
  Slot& sl = slots_[size_t(id)];
  if (sl.seq || sl.locked) return SlotError::kBusy;
  sl.locked = true;
  return SlotError::kNone;
}

namespace {

Status slot_status(SlotError e, int id, int n_slots) {
  switch (e) {
    case SlotError::kNoSuchSlot:
      return invalid_argument("slot " + std::to_string(id) + " does not exist: the server has " +
                              std::to_string(n_slots) + " slots (0 to " + std::to_string(n_slots - 1) + ", -np)");
    case SlotError::kBusy:
      return invalid_argument("slot " + std::to_string(id) + " is busy (a request or another save/restore is using it)");
    case SlotError::kShuttingDown: return invalid_argument("the server is shutting down");
    default: return ok_status();
  }
}

}  // namespace

SlotResult Scheduler::save_slot(int id, OutputFile& out) {
  Timer timer;
  const KvCache* cache = nullptr;
  std::vector<int32_t> tokens;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (SlotError e = lock_slot_locked(id); e != SlotError::kNone) {
      return slot_error(e, slot_status(e, id, int(slots_.size())));
    }
    cache = slots_[size_t(id)].cache.get();
    tokens = slots_[size_t(id)].tokens;
  }
  // An empty slot saves as an empty session (as llama-server's n_saved 0).
  std::unique_ptr<KvCache> empty;
  if (!cache) {
    auto c = make_cache(opts_.spec, model_.kv_shape(opts_.n_ctx), opts_.calib);
    if (c.ok()) empty = std::move(*c);
    cache = empty.get();
  }
  SlotResult r;
  if (!cache) {
    r = slot_error(SlotError::kFailed, internal_error("cannot make an empty " + opts_.spec.text + " cache"));
  } else {
    r.status = out.write([&](int fd) -> Status {
      ByteWriter w = ByteWriter::to_fd(fd, out.path());
      KVQ_RETURN_IF_ERROR(write_session(w, binding_, *cache, tokens));
      KVQ_RETURN_IF_ERROR(w.finish());
      r.n_bytes = w.bytes();
      return ok_status();
    });
    if (!r.status.ok()) r.error = SlotError::kFailed;
    r.n_tokens = int(tokens.size());
  }
  std::unique_ptr<KvCache> drop;
  {
    std::lock_guard<std::mutex> l(mu_);
    Slot& sl = slots_[size_t(id)];
    sl.locked = false;
    sl.last_used = ++tick_;
    if (stopping_) drop = std::move(sl.cache), sl.tokens.clear();  // cancel_all left it to us
  }
  r.ms = timer.seconds() * 1e3;
  return r;
}

SlotResult Scheduler::restore_slot(int id, std::span<const uint8_t> bytes, const std::string& name) {
  Timer timer;
  // What the restored cache will allocate, from the header's token count (parse_session
  // checks the header itself; a count past the context is refused there before any allocation).
  int n_tokens = 0;
  if (bytes.size() >= sizeof(SessionHeader)) {
    SessionHeader h;
    std::memcpy(&h, bytes.data(), sizeof h);
    n_tokens = int(std::min<uint64_t>(h.n_tokens, uint64_t(opts_.n_ctx)));
  }
  const size_t need = reservation_bytes(std::max(n_tokens, 1));
  {
    std::lock_guard<std::mutex> l(mu_);
    if (SlotError e = lock_slot_locked(id); e != SlotError::kNone) {
      return slot_error(e, slot_status(e, id, int(slots_.size())));
    }
    // The old cache stays until the new one is in; if both do not fit, it goes first.
    bool room = make_room_locked(need, -1);
    if (!room && slots_[size_t(id)].cache) {
      slots_[size_t(id)].cache.reset();
      slots_[size_t(id)].tokens.clear();
      ++m_.slot_caches_dropped;
      room = make_room_locked(need, -1);
    }
    if (!room) {
      slots_[size_t(id)].locked = false;
      return slot_error(SlotError::kNoRoom,
                        invalid_argument("restoring " + std::to_string(n_tokens) + " tokens needs " +
                                         std::to_string(need) + " bytes of KV cache; the running sequences hold "
                                         "the budget now (try again)"));
    }
    reserved_ += need;  // until the cache is in the slot: admission cannot promise these bytes
  }
  SlotResult r;
  std::unique_ptr<KvCache> fresh;
  auto cache = make_cache(opts_.spec, model_.kv_shape(opts_.n_ctx), opts_.calib, pool_);
  std::vector<int32_t> tokens;
  if (!cache.ok()) {
    r = slot_error(SlotError::kFailed, cache.status());
  } else {
    fresh = std::move(*cache);
    auto parsed = parse_session(bytes, name, binding_, *fresh);
    if (!parsed.ok()) {
      r = slot_error(SlotError::kFailed, parsed.status());
      fresh.reset();
    } else {
      tokens = std::move(*parsed);
      r.n_tokens = int(tokens.size());
      r.n_bytes = bytes.size();
    }
  }
  std::unique_ptr<KvCache> old;
  {
    std::lock_guard<std::mutex> l(mu_);
    reserved_ -= need;
    Slot& sl = slots_[size_t(id)];
    sl.locked = false;
    sl.last_used = ++tick_;
    if (stopping_) {
      old = std::move(sl.cache), sl.tokens.clear();
    } else if (fresh) {
      old = std::move(sl.cache);
      sl.cache = std::move(fresh);
      sl.tokens = std::move(tokens);
    }
  }
  r.ms = timer.seconds() * 1e3;
  return r;
}

SlotResult Scheduler::erase_slot(int id) {
  std::unique_ptr<KvCache> old;
  SlotResult r;
  std::lock_guard<std::mutex> l(mu_);
  if (SlotError e = lock_slot_locked(id); e != SlotError::kNone) {
    return slot_error(e, slot_status(e, id, int(slots_.size())));
  }
  Slot& sl = slots_[size_t(id)];
  r.n_tokens = int(sl.tokens.size());
  old = std::move(sl.cache);
  sl.tokens.clear();
  sl.locked = false;
  return r;
}

std::vector<SlotInfo> Scheduler::slots() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<SlotInfo> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& sl = slots_[i];
    SlotInfo s;
    s.id = int(i);
    s.busy = sl.seq != nullptr;
    s.locked = sl.locked;
    s.n_tokens = int(sl.tokens.size());
    s.bytes = sl.cache ? sl.cache->bytes_used() : 0;
    out.push_back(s);
  }
  return out;
}

int Scheduler::drop_idle_caches() {
  std::vector<std::unique_ptr<KvCache>> old;
  std::lock_guard<std::mutex> l(mu_);
  for (Slot& sl : slots_) {
    if (!sl.cache || sl.locked) continue;
    old.push_back(std::move(sl.cache));
    sl.tokens.clear();
  }
  return int(old.size());
}

}  // namespace kvq
