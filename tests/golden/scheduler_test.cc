// SPDX-License-Identifier: MIT
// The serving scheduler (engine/serve/scheduler.h) on the head_dim-64 testbed, whose F32
// weights make forward_batch bit-identical to forward: a batch of greedy sequences yields for
// each exactly the text generate() gives alone, for any thread count and prefill chunking;
// admission queues by the KV budget and never lets the pool run out; refusals are named; and
// the pool returns to zero after everything ends or is cancelled.
#include <gtest/gtest.h>

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

SeqRequest request(const LlamaModel& m, const std::string& prompt, int max_tokens, int n_ctx) {
  SeqRequest r;
  r.prompt = encode_prompt(m, prompt, n_ctx).value();
  r.max_tokens = max_tokens;
  r.sampling.temp = 0;
  return r;
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
      EXPECT_EQ((*s)->pool().bytes_in_use(), 0u);
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
    EXPECT_EQ((*s)->pool().bytes_in_use(), 0u);
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
  EXPECT_EQ((*s)->pool().bytes_in_use(), 0u);
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

}  // namespace
}  // namespace kvq
