// SPDX-License-Identifier: MIT
// Long-context plumbing on the head_dim-64 testbed (tinystories-l6-d256-h64): chunked prefill
// equals one batched step bit for bit for batch-invariant caches (logits and stored K/V),
// forward() is all or nothing when the cache fails at a later layer, and replayed activations
// (kvq bench -d) store exactly what a real prefill of the same window stores.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/kv_replay.h"
#include "engine/prefill.h"
#include "model_fixture.h"

namespace kvq {
namespace {

constexpr int kTokens = 256;

using testing::ModelFixture;

// The validation text is cut to kTokens tokens.
ModelFixture& fixture() {
  static ModelFixture f = [] {
    ModelFixture x = testing::load_model_fixture("models/tinystories-l6-d256-h64.gguf", 20000, 2, 128);
    EXPECT_GE(x.text.size(), size_t(kTokens));
    x.text.resize(kTokens);
    return x;
  }();
  return f;
}

std::unique_ptr<KvCache> new_cache(const char* spec_text, int n_ctx) { return fixture().new_cache(spec_text, n_ctx); }

// Every stored K/V value of the first n_layers layers (-1: all), head by head, as read()
// returns it.
std::vector<float> cache_contents(const KvCache& cache, int n_layers = -1) {
  const KvCacheShape& s = cache.shape();
  const int n = cache.n_tokens(0);
  std::vector<float> out, k(size_t(n) * s.head_dim), v(k.size());
  for (int il = 0; il < (n_layers < 0 ? s.n_layers : n_layers); ++il) {
    EXPECT_EQ(cache.n_tokens(il), n) << "layer " << il;
    for (int h = 0; h < s.n_kv_heads; ++h) {
      cache.read(il, h, 0, n, k.data(), v.data());
      out.insert(out.end(), k.begin(), k.end());
      out.insert(out.end(), v.begin(), v.end());
    }
  }
  return out;
}

struct PrefillRun {
  std::vector<float> logits;  // [kTokens, n_vocab]
  std::vector<float> cache;   // cache_contents after the prefill
};

PrefillRun prefill_in_chunks(const char* spec, int batch) {
  ModelFixture& f = fixture();
  auto cache = new_cache(spec, kTokens);
  ExecContext ctx(2);
  ForwardWorkspace ws;
  PrefillRun r;
  r.logits.resize(size_t(kTokens) * size_t(f.model->config().n_vocab));
  const Status s = prefill(ctx, *f.model, f.text, *cache, ws, r.logits.data(), true, batch);
  EXPECT_TRUE(s.ok()) << spec << " -b " << batch << ": " << s.to_string();
  EXPECT_LE(ws.capacity, batch) << "activations must be bounded by the batch";
  r.cache = cache_contents(*cache);
  return r;
}

TEST(Prefill, ChunkedEqualsOneStepBitForBitWhereBatchInvariant) {
  ASSERT_TRUE(fixture().model && fixture().acts);
  for (const char* spec : {"f32", "f16", "q8_0", "q4_0", "int4", "kvquant-3"}) {
    ASSERT_TRUE(new_cache(spec, 8)->batch_invariant()) << spec;
    const PrefillRun whole = prefill_in_chunks(spec, kTokens);
    for (int batch : {1, 7, 64}) {
      const PrefillRun chunked = prefill_in_chunks(spec, batch);
      EXPECT_EQ(chunked.logits, whole.logits) << spec << " -b " << batch;
      EXPECT_EQ(chunked.cache, whole.cache) << spec << " -b " << batch;
    }
  }
}

// KIVI is not batch-invariant (each step flushes its windows), so chunks change the numbers,
// but only as decode would: the logits stay finite and close to one step's.
TEST(Prefill, KiviChunkedStaysCloseToOneStep) {
  ASSERT_TRUE(fixture().model && fixture().acts);
  for (const char* spec : {"kivi-2", "kivi-4:g=32:r=64"}) {
    ASSERT_FALSE(new_cache(spec, 8)->batch_invariant()) << spec;
    const PrefillRun whole = prefill_in_chunks(spec, kTokens);
    for (int batch : {7, 64}) {
      const PrefillRun chunked = prefill_in_chunks(spec, batch);
      double diff = 0;
      for (size_t i = 0; i < whole.logits.size(); ++i) {
        ASSERT_TRUE(std::isfinite(chunked.logits[i])) << spec << " -b " << batch << " at " << i;
        diff += std::fabs(chunked.logits[i] - whole.logits[i]);
      }
      // Logits of this model span about +-20; 2-bit keys quantized earlier move them ~0.1.
      EXPECT_LT(diff / double(whole.logits.size()), 0.5) << spec << " -b " << batch;
    }
  }
}

TEST(Prefill, RefusesBadBatchAndOverlongInputBeforeRunning) {
  ModelFixture& f = fixture();
  ASSERT_TRUE(f.model);
  ExecContext ctx(1);
  ForwardWorkspace ws;
  std::vector<float> logits(size_t(f.model->config().n_vocab));
  auto cache = new_cache("f16", 100);
  EXPECT_EQ(prefill(ctx, *f.model, f.text, *cache, ws, logits.data(), false, 0).code(), StatusCode::kInvalidArgument);
  // 256 tokens do not fit 100: refused before the first 64-token step runs.
  const Status s = prefill(ctx, *f.model, f.text, *cache, ws, logits.data(), false, 64);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("context is full"), std::string::npos) << s.message();
  EXPECT_EQ(cache->n_tokens(0), 0);
  EXPECT_EQ(ws.capacity, 0);
}

// A real cache whose append fails at one layer, or whose end_step fails, while armed.
class FailingCache final : public KvCache {
 public:
  explicit FailingCache(std::unique_ptr<KvCache> inner) : KvCache(inner->shape()), inner_(std::move(inner)) {}
  int fail_append_layer = -1;
  bool fail_end_step = false;

  std::string name() const override { return inner_->name(); }
  bool pre_rope() const override { return inner_->pre_rope(); }
  Status append(int il, int n, const float* k, const float* v) override {
    if (il == fail_append_layer) return out_of_memory("test: append fails at layer " + std::to_string(il));
    return inner_->append(il, n, k, v);
  }
  int n_tokens(int il) const override { return inner_->n_tokens(il); }
  Status truncate(int n) override { return inner_->truncate(n); }
  Status shift(int n_keep, int n_drop, const Rope& rope) override { return inner_->shift(n_keep, n_drop, rope); }
  Status check_shift(int n_keep, int n_drop) const override { return inner_->check_shift(n_keep, n_drop); }
  size_t bytes_used() const override { return inner_->bytes_used(); }
  size_t bytes_for(int n) const override { return inner_->bytes_for(n); }
  bool batch_invariant() const override { return inner_->batch_invariant(); }
  Status end_step() override {
    KVQ_RETURN_IF_ERROR(inner_->end_step());
    return fail_end_step ? out_of_memory("test: end_step fails") : ok_status();
  }
  void views(int il, KvStoreView* k, KvStoreView* v) const override { inner_->views(il, k, v); }
  void read(int il, int kvh, int t0, int n, float* k, float* v) const override { inner_->read(il, kvh, t0, n, k, v); }
  void write_state(ByteWriter& w) const override { inner_->write_state(w); }
  Status read_state(ByteReader& r, int n) override { return inner_->read_state(r, n); }

 private:
  std::unique_ptr<KvCache> inner_;
};

TEST(Prefill, FailedStepLeavesEveryLayerAtItsLength) {
  ModelFixture& f = fixture();
  ASSERT_TRUE(f.model && f.model->config().n_layers > 2);
  ExecContext ctx(2);
  const int nv = f.model->config().n_vocab;
  const std::span<const int32_t> head(f.text.data(), 40), tail(f.text.data() + 40, 24);
  auto expect_every_layer_at = [](const KvCache& cache, int n, const char* spec) {
    for (int il = 0; il < cache.shape().n_layers; ++il) EXPECT_EQ(cache.n_tokens(il), n) << spec << " layer " << il;
  };
  for (const char* spec : {"f16", "q4_0", "kivi-2:g=8:r=16"}) {
    FailingCache cache(new_cache(spec, kTokens));
    ForwardWorkspace ws;
    std::vector<float> logits(static_cast<size_t>(nv)), expected(static_cast<size_t>(nv));
    ASSERT_TRUE(f.model->forward(ctx, head, cache, ws, logits.data(), false).ok());
    cache.fail_append_layer = 2;
    EXPECT_EQ(f.model->forward(ctx, tail, cache, ws, logits.data(), false).code(), StatusCode::kOutOfMemory);
    expect_every_layer_at(cache, 40, spec);
    cache.fail_append_layer = -1;
    // A failed end_step is undone too where the format can drop the tokens again (KIVI keys
    // cannot once this step's flush has quantized them: the error says so).
    if (cache.batch_invariant()) {
      cache.fail_end_step = true;
      EXPECT_EQ(f.model->forward(ctx, tail, cache, ws, logits.data(), false).code(), StatusCode::kOutOfMemory);
      expect_every_layer_at(cache, 40, spec);
      cache.fail_end_step = false;
    }
    // The cache goes on as if the failed steps never happened.
    ASSERT_TRUE(f.model->forward(ctx, tail, cache, ws, logits.data(), false).ok());
    auto fresh = new_cache(spec, kTokens);
    ASSERT_TRUE(f.model->forward(ctx, head, *fresh, ws, expected.data(), false).ok());
    ASSERT_TRUE(f.model->forward(ctx, tail, *fresh, ws, expected.data(), false).ok());
    EXPECT_EQ(logits, expected) << spec;
    EXPECT_EQ(cache_contents(cache), cache_contents(*fresh)) << spec;
  }
}

TEST(Replay, RowsCoverTheWindowOnceThenSkipItsFirstToken) {
  EXPECT_EQ(replay_row(0, 4), 0);
  EXPECT_EQ(replay_row(3, 4), 3);
  EXPECT_EQ(replay_row(4, 4), 1);
  EXPECT_EQ(replay_row(6, 4), 3);
  EXPECT_EQ(replay_row(7, 4), 1);
  EXPECT_EQ(replay_row(int64_t(1) << 40, 512), 1 + int(((int64_t(1) << 40) - 512) % 511));
}

// Replaying a window stores what prefilling it stores, and later positions repeat rows 1.. of
// the window. Layer 0's K/V depend on the tokens only, so there every format (keys rotated to
// their positions for post-RoPE ones) stores the same bytes; deeper layers' activations
// depend on attention over the cache, so all layers agree only with the full-precision
// pre-RoPE cache the window was captured in.
TEST(Replay, StoresWhatAPrefillOfTheWindowStores) {
  ModelFixture& f = fixture();
  ASSERT_TRUE(f.model);
  constexpr int kWindow = 96;
  ExecContext ctx(2);
  std::vector<int32_t> win(f.text.begin(), f.text.begin() + kWindow);
  CalibrationArgs ca;
  ca.n_windows = 1;
  ca.window = kWindow;
  ca.batch = 32;
  auto acts = KvActivations::capture(ctx, *f.model, win, ca);  // one window: the whole of win
  ASSERT_TRUE(acts.ok()) << acts.status().to_string();
  win[0] = f.model->tokenizer().bos_id();  // as capture feeds it
  for (const char* spec : {"f32", "q8_0", "kvquant-3"}) {
    auto real = new_cache(spec, kWindow);
    ForwardWorkspace ws;
    ASSERT_TRUE(prefill(ctx, *f.model, win, *real, ws, nullptr, false, 32).ok());
    auto replayed = new_cache(spec, kWindow);
    ASSERT_TRUE(replay_fill(*f.model, *acts, *replayed, kWindow, 40).ok()) << spec;
    EXPECT_EQ(cache_contents(*replayed, 1), cache_contents(*real, 1)) << spec;
  }
  const KvCacheShape shape = f.model->kv_shape(3 * kWindow);
  {
    auto real = make_dense_cache(shape, DType::kF32, /*keys_pre_rope=*/true);
    ForwardWorkspace ws;
    ASSERT_TRUE(prefill(ctx, *f.model, win, *real, ws, nullptr, false, 32).ok());
    auto replayed = make_dense_cache(shape, DType::kF32, /*keys_pre_rope=*/true);
    ASSERT_TRUE(replay_fill(*f.model, *acts, *replayed, kWindow, 40).ok());
    EXPECT_EQ(cache_contents(*replayed), cache_contents(*real));
  }
  // Beyond the window: position kWindow + i holds row 1 + i (values, and pre-RoPE keys).
  auto deep = make_dense_cache(shape, DType::kF32, /*keys_pre_rope=*/true);
  int last_progress = 0;
  ASSERT_TRUE(replay_fill(*f.model, *acts, *deep, 3 * kWindow, 50, [&](int n) { last_progress = n; }).ok());
  EXPECT_EQ(last_progress, 3 * kWindow);
  const int hd = shape.head_dim;
  const size_t row = static_cast<size_t>(hd);
  std::vector<float> k0(row), v0(row), k1(row), v1(row);
  for (int il : {0, shape.n_layers - 1}) {
    for (int pos : {kWindow, 2 * kWindow + 5}) {
      deep->read(il, 1, pos, 1, k1.data(), v1.data());
      deep->read(il, 1, replay_row(pos, kWindow), 1, k0.data(), v0.data());
      EXPECT_EQ(k0, k1) << il << " " << pos;
      EXPECT_EQ(v0, v1) << il << " " << pos;
    }
  }
  EXPECT_EQ(replay_fill(*f.model, *acts, *deep, 3 * kWindow + 1, 50).code(), StatusCode::kInvalidArgument);
}


// Continuous batching: three sequences at different depths, with different caches, stepped
// together. Each one's logits and stored K/V equal those of the same sequence run alone (the
// testbed's F32 matmul gives each row the same sums for any number of rows).
TEST(ForwardBatch, EachSequenceMatchesItsOwnForward) {
  ModelFixture& f = fixture();
  ASSERT_TRUE(f.model && f.acts);
  const int nv = f.model->config().n_vocab;
  const char* specs[] = {"f16", "q4_0", "kvquant-3"};
  const int prompt[] = {5, 40, 17};  // prompt tokens of each sequence before the joint steps
  std::vector<std::unique_ptr<KvCache>> alone, joint;
  ExecContext ctx(2);
  ForwardWorkspace ws, ws_joint;
  std::vector<float> a(nv), b(size_t(3) * nv);
  for (int i = 0; i < 3; ++i) {
    alone.push_back(new_cache(specs[i], 128));
    joint.push_back(new_cache(specs[i], 128));
    const std::span<const int32_t> p(f.text.data() + 10 * i, size_t(prompt[i]));
    ASSERT_TRUE(f.model->forward(ctx, p, *alone[size_t(i)], ws, nullptr, false).ok());
    ASSERT_TRUE(f.model->forward(ctx, p, *joint[size_t(i)], ws, nullptr, false).ok());
  }
  for (int step = 0; step < 6; ++step) {
    // Step 3 also feeds the second sequence four tokens at once (a prefill chunk joining).
    std::vector<BatchSeq> batch;
    std::vector<std::vector<int32_t>> toks(3);
    for (int i = 0; i < 3; ++i) {
      const int n = (step == 3 && i == 1) ? 4 : 1;
      const int at = 10 * i + joint[size_t(i)]->n_tokens(0);
      toks[size_t(i)].assign(f.text.begin() + at, f.text.begin() + at + n);
      batch.push_back({toks[size_t(i)], joint[size_t(i)].get(), b.data() + size_t(i) * nv});
    }
    ASSERT_TRUE(f.model->forward_batch(ctx, batch, ws_joint).ok());
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(f.model->forward(ctx, toks[size_t(i)], *alone[size_t(i)], ws, a.data(), false).ok());
      EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin() + size_t(i) * nv)) << specs[i] << " step " << step;
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cache_contents(*joint[size_t(i)]), cache_contents(*alone[size_t(i)])) << specs[i];
}

TEST(ForwardBatch, AFailingSequenceLeavesEveryCacheAsItWas) {
  ModelFixture& f = fixture();
  ASSERT_TRUE(f.model && f.acts);
  auto roomy = new_cache("q8_0", 64), full = new_cache("f16", 4);
  ExecContext ctx(1);
  ForwardWorkspace ws;
  const std::span<const int32_t> three(f.text.data(), 3);
  ASSERT_TRUE(f.model->forward(ctx, three, *roomy, ws, nullptr, false).ok());
  ASSERT_TRUE(f.model->forward(ctx, three, *full, ws, nullptr, false).ok());
  const std::vector<float> before = cache_contents(*roomy);
  const std::vector<BatchSeq> batch{{three.subspan(0, 1), roomy.get(), nullptr}, {three.subspan(0, 2), full.get(), nullptr}};
  int failed = -2;
  const Status s = f.model->forward_batch(ctx, batch, ws, &failed);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(roomy->n_tokens(0), 3);
  EXPECT_EQ(full->n_tokens(0), 3);
  EXPECT_EQ(cache_contents(*roomy), before);
  const std::vector<BatchSeq> shared{{three.subspan(0, 1), roomy.get(), nullptr}, {three.subspan(0, 1), roomy.get(), nullptr}};
  EXPECT_FALSE(f.model->forward_batch(ctx, shared, ws, &failed).ok());
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(roomy->n_tokens(0), 3);
}

}  // namespace
}  // namespace kvq
