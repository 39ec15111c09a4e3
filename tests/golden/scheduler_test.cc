// SPDX-License-Identifier: MIT
// The serving scheduler (engine/serve/scheduler.h) on the head_dim-64 testbed, whose F32
// weights make forward_batch bit-identical to forward: a batch of greedy sequences yields for
// each exactly the text generate() gives alone, for any thread count and prefill chunking;
// admission queues by the KV budget and never lets the pool run out; refusals are named; the
// pool holds nothing but the idle slots' caches after everything ends or is cancelled, and
// nothing once those are dropped. Slots: a request reuses the longest cached prefix (or its
// id_slot's) and still gives generate()'s text; idle caches give way, least recently used
// first; save / erase / restore of a slot.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine/generate.h"
#include "engine/serve/scheduler.h"
#include "model_fixture.h"

namespace kvq {
namespace {

using testing::ModelFixture;

ModelFixture& fixture() {
  static ModelFixture f = testing::load_model_fixture("models/tinystories-l6-d256-h64.gguf", 20000, 2, 128);
  return f;
}

const char* const kPrompts[] = {
    "Once upon a time",
    "Tom and Lily went to the park. They saw a big",
    "The little dog",
    "One day, a girl named Sue found a shiny red ball under her bed. She",
    "Max",
};

struct Done {
  std::string text;
  SeqUpdate last;
};

// Steps until idle, then collects every channel's text and end.
std::vector<Done> drain(Scheduler& s, const std::vector<std::shared_ptr<SeqChannel>>& chs) {
  while (s.step()) {
  }
  std::vector<Done> out;
  for (const auto& ch : chs) {
    Done d;
    SeqUpdate u;
    while (ch->wait(&u, std::chrono::milliseconds(0))) {
      d.text += u.text;
      if (u.done) d.last = u;
    }
    EXPECT_TRUE(d.last.done);
    out.push_back(d);
  }
  return out;
}

// Nothing leaks: the pool holds no more than the idle slots' caches report (KVQuant's count
// a few fixed bytes outside the pool), and dropping them empties it.
void expect_only_idle_caches(Scheduler& s) {
  EXPECT_LE(s.pool().bytes_in_use(), s.metrics().kv_bytes_cached);
  s.drop_idle_caches();
  EXPECT_EQ(s.pool().bytes_in_use(), 0u);
}

SeqRequest request(const LlamaModel& m, const std::string& prompt, int max_tokens, int n_ctx) {
  SeqRequest r;
  r.prompt = encode_prompt(m, prompt, n_ctx).value();
  r.max_tokens = max_tokens;
  r.sampling.temp = 0;
  return r;
}

// A reader takes one piece per read however far it lags (a stream's events are tokens, not
// whatever piled up), and the end comes with the last piece, once.
TEST(SeqChannel, OnePiecePerReadThenTheEndOnce) {
  SeqChannel ch;
  ch.push_text("Once");
  ch.push_text("");  // nothing to send: no piece
  ch.push_text(" upon");
  ch.push_text(" a");
  ch.finish(FinishReason::kLength, Status(), 5, 3);
  SeqUpdate u;
  ASSERT_TRUE(ch.wait(&u, std::chrono::milliseconds(0)));
  EXPECT_EQ(u.text, "Once");
  EXPECT_FALSE(u.done);
  ASSERT_TRUE(ch.wait(&u, std::chrono::milliseconds(0)));
  EXPECT_EQ(u.text, " upon");
  EXPECT_FALSE(u.done);
  ASSERT_TRUE(ch.wait(&u, std::chrono::milliseconds(0)));
  EXPECT_EQ(u.text, " a");
  EXPECT_TRUE(u.done);
  EXPECT_EQ(u.finish, FinishReason::kLength);
  EXPECT_EQ(u.n_prompt, 5);
  EXPECT_EQ(u.n_generated, 3);
  EXPECT_FALSE(ch.wait(&u, std::chrono::milliseconds(0)));
  EXPECT_TRUE(u.text.empty());
  EXPECT_FALSE(u.done);
}

TEST(Scheduler, GreedyBatchEqualsGenerateAlone) {
  const LlamaModel& m = *fixture().model;
  const int n_ctx = 256;
  std::vector<std::string> want;
  for (size_t i = 0; i < std::size(kPrompts); ++i) {
    ExecContext ctx(1);
    auto cache = fixture().new_cache("f16", n_ctx);
    GenerateArgs g;
    g.prompt = kPrompts[i];
    g.n_predict = 20 + 7 * int(i);
    g.sampling.temp = 0;
    std::vector<int32_t> ids;
    ASSERT_TRUE(generate(ctx, m, *cache, g, [](std::string_view) {}, &ids).ok());
    const size_t n_prompt = encode_prompt(m, kPrompts[i], n_ctx)->size();
    std::string text;
    for (size_t t = n_prompt; t < ids.size(); ++t) text += m.tokenizer().token_to_piece(ids[t]);
    want.push_back(text);
  }
  // Threads and prefill chunks change nothing (chunk 5 splits prompts across steps).
  for (int threads : {1, 2}) {
    for (int chunk : {5, 512}) {
      ExecContext ctx(threads);
      SchedulerOptions o;
      o.spec = parse_cache_spec("f16").value();
      o.n_ctx = n_ctx;
      o.prefill_chunk = chunk;
      o.max_seqs = 4;  // the fifth joins when one ends: continuous batching
      auto s = Scheduler::create(m, ctx, o);
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      std::vector<std::shared_ptr<SeqChannel>> chs;
      for (size_t i = 0; i < std::size(kPrompts); ++i) {
        auto r = (*s)->submit(request(m, kPrompts[i], 20 + 7 * int(i), n_ctx));
        ASSERT_TRUE(r.channel) << r.status.to_string();
        chs.push_back(r.channel);
      }
      auto done = drain(**s, chs);
      for (size_t i = 0; i < done.size(); ++i) {
        EXPECT_EQ(done[i].text, want[i]) << "threads " << threads << " chunk " << chunk << " prompt " << i;
        EXPECT_NE(done[i].last.finish, FinishReason::kError) << done[i].last.error.to_string();
      }
      // Again, each prompt now finds its whole prefix in a slot (prefix reuse is on): the
      // same text, with only each prompt's last token prefilled.
      const int64_t reused = (*s)->metrics().prompt_tokens_reused;
      chs.clear();
      int64_t want_reused = 0;
      for (size_t i = 0; i < std::size(kPrompts); ++i) {
        auto r = (*s)->submit(request(m, kPrompts[i], 20 + 7 * int(i), n_ctx));
        want_reused += int64_t(encode_prompt(m, kPrompts[i], n_ctx)->size()) - 1;
        ASSERT_TRUE(r.channel) << r.status.to_string();
        chs.push_back(r.channel);
        // One at a time: with four slots the fifth prompt would otherwise take the slot of a
        // prompt still to come.
        auto again = drain(**s, {r.channel});
        EXPECT_EQ(again[0].text, want[i]) << "reused: threads " << threads << " chunk " << chunk << " prompt " << i;
      }
      // The fifth prompt of the first round took the slot of one that finished first, so not
      // every prompt finds its slot.
      EXPECT_GT((*s)->metrics().prompt_tokens_reused - reused, 0);
      EXPECT_LE((*s)->metrics().prompt_tokens_reused - reused, want_reused);
      expect_only_idle_caches(**s);
    }
  }
}

// Under a budget of two sequences' reservations, two run and the rest wait; every request
// completes, the pool never refuses an allocation and ends empty. For each cache type.
TEST(Scheduler, AdmissionQueuesByBudgetAndNeverRunsOut) {
  const LlamaModel& m = *fixture().model;
  const int n_ctx = 256, max_tokens = 120;
  for (const char* spec_text : {"f16", "q8_0", "kivi-2", "kvquant-3"}) {
    SCOPED_TRACE(spec_text);
    const CacheSpec spec = parse_cache_spec(spec_text).value();
    auto cal = fixture().acts->for_spec(spec);
    ASSERT_TRUE(cal.ok());
    ExecContext ctx(2);
    SchedulerOptions o;
    o.spec = spec;
    o.calib = cal->calibration();
    o.n_ctx = n_ctx;
    o.prefill_chunk = 64;
    // Find the reservation, then size the budget for exactly two of the longest request.
    auto probe = Scheduler::create(m, ctx, o);
    ASSERT_TRUE(probe.ok());
    const int n_longest = int(encode_prompt(m, kPrompts[3], n_ctx)->size()) + max_tokens;
    o.kv_budget = 2 * (*probe)->reservation_bytes(n_longest) + (*probe)->step_headroom();
    auto s = Scheduler::create(m, ctx, o);
    ASSERT_TRUE(s.ok());
    std::vector<std::shared_ptr<SeqChannel>> chs;
    for (int rep = 0; rep < 2; ++rep) {
      for (size_t i = 0; i < 3; ++i) {
        SeqRequest r = request(m, kPrompts[3], max_tokens, n_ctx);
        r.sampling.temp = 1.0f;  // sampled: no early EOS pattern shared by all
        r.sampling.seed = 100 + i + 10 * size_t(rep);
        auto res = (*s)->submit(std::move(r));
        ASSERT_TRUE(res.channel);
        chs.push_back(res.channel);
      }
    }
    ASSERT_TRUE((*s)->step());
    SchedulerMetrics mt = (*s)->metrics();
    EXPECT_EQ(mt.n_active, 2);
    EXPECT_EQ(mt.n_queued, int(chs.size()) - 2);
    EXPECT_LE(mt.kv_bytes_reserved + (*s)->step_headroom(), o.kv_budget);
    auto done = drain(**s, chs);
    for (const auto& d : done) {
      EXPECT_TRUE(d.last.finish == FinishReason::kStop || d.last.finish == FinishReason::kLength)
          << finish_reason_name(d.last.finish) << ": " << d.last.error.to_string();
    }
    expect_only_idle_caches(**s);
    EXPECT_LE((*s)->pool().peak_bytes(), o.kv_budget);
    EXPECT_EQ((*s)->metrics().requests_failed, 0);
  }
}

TEST(Scheduler, CancelFreesPagesQueuedOrRunning) {
  const LlamaModel& m = *fixture().model;
  ExecContext ctx(2);
  SchedulerOptions o;
  o.spec = parse_cache_spec("kivi-2").value();
  o.n_ctx = 512;
  o.max_seqs = 2;
  auto s = Scheduler::create(m, ctx, o);
  ASSERT_TRUE(s.ok());
  std::vector<std::shared_ptr<SeqChannel>> chs;
  for (int i = 0; i < 4; ++i) chs.push_back((*s)->submit(request(m, kPrompts[1], 300, o.n_ctx)).channel);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*s)->step());
  EXPECT_GT((*s)->pool().bytes_in_use(), 0u);
  chs[0]->cancel();  // running
  chs[3]->cancel();  // queued
  ASSERT_TRUE((*s)->step());
  EXPECT_EQ((*s)->metrics().n_active, 2);  // the third took the first's place
  EXPECT_EQ((*s)->metrics().n_queued, 0);
  chs[1]->cancel();
  chs[2]->cancel();
  auto done = drain(**s, chs);
  for (const auto& d : done) EXPECT_EQ(d.last.finish, FinishReason::kCancelled);
  expect_only_idle_caches(**s);
  EXPECT_EQ((*s)->metrics().requests_cancelled, 4);
}

TEST(Scheduler, RefusalsAreNamed) {
  const LlamaModel& m = *fixture().model;
  ExecContext ctx(1);
  SchedulerOptions o;
  o.spec = parse_cache_spec("f16").value();
  o.n_ctx = 64;
  o.max_queue = 1;
  auto s = Scheduler::create(m, ctx, o);
  ASSERT_TRUE(s.ok());
  SeqRequest empty;
  EXPECT_EQ((*s)->submit(empty).error, SubmitError::kInvalid);
  SeqRequest r = request(m, kPrompts[0], 64, 1 << 20);
  auto res = (*s)->submit(r);
  EXPECT_EQ(res.error, SubmitError::kInvalid);
  EXPECT_NE(res.status.message().find("exceed the context"), std::string::npos) << res.status.to_string();
  r.max_tokens = 4;
  EXPECT_TRUE((*s)->submit(r).channel);
  EXPECT_EQ((*s)->submit(r).error, SubmitError::kQueueFull);
  o.kv_budget = (*s)->reservation_bytes(10);
  o.n_ctx = 256;
  auto small = Scheduler::create(m, ctx, o);
  ASSERT_TRUE(small.ok());
  r.max_tokens = 200;  // a second page of 64 tokens
  EXPECT_EQ((*small)->submit(r).error, SubmitError::kTooLarge);
  (*s)->stop();
  r.max_tokens = 4;
  EXPECT_EQ((*s)->submit(r).error, SubmitError::kShuttingDown);
}

// Generates text for prompt alone, as the reference.
std::string alone(const std::string& prompt, int n_predict, int n_ctx) {
  const LlamaModel& m = *fixture().model;
  ExecContext ctx(1);
  auto cache = fixture().new_cache("f16", n_ctx);
  GenerateArgs g;
  g.prompt = prompt;
  g.n_predict = n_predict;
  g.sampling.temp = 0;
  std::vector<int32_t> ids;
  EXPECT_TRUE(generate(ctx, m, *cache, g, [](std::string_view) {}, &ids).ok());
  const size_t n_prompt = encode_prompt(m, prompt, n_ctx)->size();
  std::string text;
  for (size_t t = n_prompt; t < ids.size(); ++t) text += m.tokenizer().token_to_piece(ids[t]);
  return text;
}

std::string run_one(Scheduler& s, SeqRequest r) {
  auto res = s.submit(std::move(r));
  EXPECT_TRUE(res.channel) << res.status.to_string();
  if (!res.channel) return "";
  auto d = drain(s, {res.channel});
  EXPECT_NE(d[0].last.finish, FinishReason::kError) << d[0].last.error.to_string();
  return d[0].text;
}

// A request goes to the free slot with the longest shared prefix (else an empty one, else the
// least recently used), or to its id_slot; cache_prompt false prefills everything.
TEST(Scheduler, SlotChoiceAndPrefixReuse) {
  const LlamaModel& m = *fixture().model;
  const int n_ctx = 256;
  ExecContext ctx(2);
  SchedulerOptions o;
  o.spec = parse_cache_spec("f16").value();
  o.n_ctx = n_ctx;
  o.max_seqs = 3;
  auto s = Scheduler::create(m, ctx, o);
  ASSERT_TRUE(s.ok());
  for (int i = 0; i < 3; ++i) run_one(**s, request(m, kPrompts[i], 8, n_ctx));
  // One at a time, each into an empty slot (they share only BOS): 0, 1, 2.
  auto info = (*s)->slots();
  ASSERT_EQ(info.size(), 3u);
  for (const auto& si : info) EXPECT_GT(si.n_tokens, 0) << si.id;

  // Prompt 1 extended: it shares prompt 1 and part of its continuation with one slot.
  const std::string p1 = kPrompts[1];
  const int n1 = int(encode_prompt(m, p1, n_ctx)->size());
  const int slot1 = 1;
  EXPECT_GE(info[1].n_tokens, n1);
  const std::string longer = p1 + alone(p1, 3, n_ctx);
  int64_t reused0 = (*s)->metrics().prompt_tokens_reused;
  auto res = (*s)->submit(request(m, longer, 10, n_ctx));
  ASSERT_TRUE(res.channel);
  ASSERT_TRUE((*s)->step());
  int busy = -1;
  for (const auto& si : (*s)->slots()) {
    if (si.busy) busy = si.id;
  }
  auto d = drain(**s, {res.channel});
  const int64_t reused = (*s)->metrics().prompt_tokens_reused - reused0;
  EXPECT_GE(reused, n1);  // at least prompt 1 itself, found in its slot
  EXPECT_EQ(busy, slot1);
  EXPECT_EQ(d[0].text, alone(longer, 10, n_ctx));

  // id_slot: prompt 1 in slot 0 reuses only what it shares with slot 0's tokens; the text is
  // the same.
  reused0 = (*s)->metrics().prompt_tokens_reused;
  SeqRequest r = request(m, p1, 12, n_ctx);
  r.id_slot = 0;
  res = (*s)->submit(r);
  ASSERT_TRUE(res.channel);
  ASSERT_TRUE((*s)->step());
  EXPECT_TRUE((*s)->slots()[0].busy);
  d = drain(**s, {res.channel});
  EXPECT_EQ(d[0].text, alone(p1, 12, n_ctx));
  EXPECT_LT((*s)->metrics().prompt_tokens_reused - reused0, n1 - 1);

  // cache_prompt false: nothing reused, same text.
  reused0 = (*s)->metrics().prompt_tokens_reused;
  r = request(m, p1, 12, n_ctx);
  r.cache_prompt = false;
  EXPECT_EQ(run_one(**s, r), alone(p1, 12, n_ctx));
  EXPECT_EQ((*s)->metrics().prompt_tokens_reused, reused0);

  // A request waiting for its busy id_slot does not hold up the one behind it.
  r = request(m, kPrompts[4], 30, n_ctx);
  r.id_slot = 2;
  auto first = (*s)->submit(r);
  r.id_slot = 2;
  auto pinned = (*s)->submit(r);
  r.id_slot = -1;
  auto any = (*s)->submit(r);
  ASSERT_TRUE(first.channel && pinned.channel && any.channel);
  ASSERT_TRUE((*s)->step());
  EXPECT_EQ((*s)->metrics().n_active, 2);  // first (slot 2) and any (another slot)
  EXPECT_EQ((*s)->metrics().n_queued, 1);  // pinned waits for slot 2
  d = drain(**s, {first.channel, pinned.channel, any.channel});
  for (const auto& x : d) EXPECT_EQ(x.text, alone(kPrompts[4], 30, n_ctx));

  r.id_slot = 3;
  EXPECT_EQ((*s)->submit(r).error, SubmitError::kInvalid);
  expect_only_idle_caches(**s);
}

// Under a budget of one reservation, each new request needs the bytes the idle caches hold:
// they are dropped, least recently used first, and no request waits or is refused for them.
TEST(Scheduler, IdleCachesGiveWayLeastRecentlyUsedFirst) {
  const LlamaModel& m = *fixture().model;
  const int n_ctx = 256, max_tokens = 40;
  for (const char* spec_text : {"f16", "kvquant-3"}) {
    SCOPED_TRACE(spec_text);
    const CacheSpec spec = parse_cache_spec(spec_text).value();
    auto cal = fixture().acts->for_spec(spec);
    ASSERT_TRUE(cal.ok());
    ExecContext ctx(2);
    SchedulerOptions o;
    o.spec = spec;
    o.calib = cal->calibration();
    o.n_ctx = n_ctx;
    o.max_seqs = 3;
    o.max_queue = 1;
    auto probe = Scheduler::create(m, ctx, o);
    ASSERT_TRUE(probe.ok());
    const int n_longest = int(encode_prompt(m, kPrompts[3], n_ctx)->size()) + max_tokens;
    // One reservation: every idle cache is in the way of the next request's.
    o.kv_budget = (*probe)->reservation_bytes(n_longest) + (*probe)->step_headroom();
    auto s = Scheduler::create(m, ctx, o);
    ASSERT_TRUE(s.ok());
    // Prompts 3, 1, 0 (they share only BOS) go to slots 0, 1, 2; each drops the oldest
    // caches it needs the bytes of.
    for (int p : {3, 1, 0}) run_one(**s, request(m, kPrompts[p], max_tokens, n_ctx));
    auto info = (*s)->slots();
    EXPECT_GE((*s)->metrics().slot_caches_dropped, 1);
    EXPECT_EQ(info[0].n_tokens, 0);  // the least recently used went first
    EXPECT_GT(info[2].n_tokens, 0);  // the newest stays
    // A fourth request (max_queue 1): admitted at once, never queued behind idle caches.
    SeqRequest r = request(m, kPrompts[3], max_tokens, n_ctx);
    r.sampling.temp = 1.0f;
    auto res = (*s)->submit(r);
    ASSERT_TRUE(res.channel);
    ASSERT_TRUE((*s)->step());
    EXPECT_EQ((*s)->metrics().n_active, 1);
    EXPECT_EQ((*s)->metrics().n_queued, 0);
    auto d = drain(**s, {res.channel});
    EXPECT_NE(d[0].last.finish, FinishReason::kError) << d[0].last.error.to_string();
    EXPECT_LE((*s)->pool().peak_bytes(), o.kv_budget);
    EXPECT_EQ((*s)->metrics().requests_failed, 0);
    expect_only_idle_caches(**s);
  }
}

// Save, erase, restore: the restored slot serves a request with its prefix and the same text;
// a corrupt file, a busy or unknown slot are errors that change nothing.
TEST(Scheduler, SlotSaveEraseRestore) {
  const LlamaModel& m = *fixture().model;
  const int n_ctx = 256;
  ExecContext ctx(2);
  SchedulerOptions o;
  o.spec = parse_cache_spec("f16").value();
  o.n_ctx = n_ctx;
  o.max_seqs = 2;
  auto s = Scheduler::create(m, ctx, o);
  ASSERT_TRUE(s.ok());
  const std::string p = kPrompts[3];
  const std::string want = alone(p, 16, n_ctx);
  EXPECT_EQ(run_one(**s, request(m, p, 16, n_ctx)), want);
  const int held = (*s)->slots()[0].n_tokens;
  ASSERT_GT(held, 0);
  const std::string file = ::testing::TempDir() + "/slot0.kvqs";
  {
    auto out = OutputFile::prepare(file, "filename");
    ASSERT_TRUE(out.ok());
    SlotResult r = (*s)->save_slot(0, *out);
    ASSERT_EQ(r.error, SlotError::kNone) << r.status.to_string();
    EXPECT_EQ(r.n_tokens, held);
    EXPECT_EQ(r.n_bytes, std::filesystem::file_size(file));
  }
  EXPECT_EQ((*s)->erase_slot(0).n_tokens, held);
  EXPECT_EQ((*s)->slots()[0].n_tokens, 0);
  std::ifstream in(file, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Corrupt: refused, the slot (empty) unchanged.
  std::vector<uint8_t> bad = bytes;
  bad[bad.size() / 2] ^= 0x40;
  SlotResult r = (*s)->restore_slot(0, bad, "bad.kvqs");
  EXPECT_EQ(r.error, SlotError::kFailed);
  EXPECT_EQ(r.status.code(), StatusCode::kDataLoss) << r.status.to_string();
  EXPECT_EQ((*s)->slots()[0].n_tokens, 0);
  EXPECT_EQ((*s)->restore_slot(5, bytes, "x").error, SlotError::kNoSuchSlot);
  r = (*s)->restore_slot(0, bytes, "slot0.kvqs");
  ASSERT_EQ(r.error, SlotError::kNone) << r.status.to_string();
  EXPECT_EQ(r.n_tokens, held);
  EXPECT_EQ((*s)->slots()[0].n_tokens, held);
  // The restored prefix is reused (into slot 0 by id_slot) and the text is the same.
  const int64_t reused0 = (*s)->metrics().prompt_tokens_reused;
  SeqRequest q = request(m, p, 16, n_ctx);
  q.id_slot = 0;
  auto res = (*s)->submit(q);
  ASSERT_TRUE(res.channel);
  ASSERT_TRUE((*s)->step());
  // Busy while it runs.
  EXPECT_EQ((*s)->erase_slot(0).error, SlotError::kBusy);
  EXPECT_EQ((*s)->restore_slot(0, bytes, "slot0.kvqs").error, SlotError::kBusy);
  auto d = drain(**s, {res.channel});
  EXPECT_EQ(d[0].text, want);
  EXPECT_EQ((*s)->metrics().prompt_tokens_reused - reused0, int64_t(encode_prompt(m, p, n_ctx)->size()) - 1);
  // A file for another cache spec names the difference.
  SchedulerOptions o8 = o;
  o8.spec = parse_cache_spec("q8_0").value();
  auto s8 = Scheduler::create(m, ctx, o8);
  ASSERT_TRUE(s8.ok());
  r = (*s8)->restore_slot(1, bytes, "slot0.kvqs");
  EXPECT_EQ(r.status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status.message().find("q8_0"), std::string::npos) << r.status.to_string();
  expect_only_idle_caches(**s);
  EXPECT_EQ((*s8)->pool().bytes_in_use(), 0u);
}

}  // namespace
}  // namespace kvq
