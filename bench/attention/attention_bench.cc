// SPDX-License-Identifier: MIT
// Decode attention (one query token, one layer) over each cache format at LLaMA-7B's head
// shape (8 of its 32 heads of 128), without GQA or with Llama-3's groups of 4 query heads per
// KV head (8 query heads over 2 KV heads), on one thread: a steady, small workload for
// instruction counts (valgrind --tool=callgrind --toggle-collect='kvq::attend*') and for
// comparing kernels. The end-to-end figures are `kvq bench attention` and `kvq bench`.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "attention/attention.h"
#include "base/rng.h"
#include "kernels/rope.h"
#include "kv/cache_spec.h"
#include "quant/codebook.h"

namespace kvq {
namespace {

constexpr int kHeads = 8, kHd = 128;
const char* const kSpecs[] = {"f16", "q4_0", "kivi-2", "kvquant-2", "kvquant-3", "int4", "q8_0", "kivi-4"};

KvquantParams params(int bits, bool keys, int n_kv_heads) {
  KvquantParams p;
  KvquantLayerParams lp;
  lp.codebook = make_nf_codebook(bits);
  if (keys) {  // per KV head and channel
    lp.upper.assign(size_t(n_kv_heads * kHd), 2.5f);
    lp.lower.assign(size_t(n_kv_heads * kHd), -2.4f);
  }
  p.layers.push_back(lp);
  return p;
}

// args: spec index, context tokens, query heads per KV head
void BM_AttendDecode(benchmark::State& st) {
  const std::string spec_text = kSpecs[st.range(0)];
  const int n = int(st.range(1));
  const int group = int(st.range(2));
  const int n_kv_heads = kHeads / group;
  const CacheSpec spec = parse_cache_spec(spec_text).value();
  const bool kvquant = spec.k.kind == TensorKind::kKvquant;
  const KvquantParams kp = kvquant ? params(spec.k.bits, true, n_kv_heads) : KvquantParams{};
  const KvquantParams vp = kvquant ? params(spec.v.bits, false, n_kv_heads) : KvquantParams{};
  auto cache = make_cache(spec, {1, n_kv_heads, kHd, n}, {&kp, &vp}).value();
  Rng rng(7);
  const size_t row = size_t(n_kv_heads) * kHd;
  std::vector<float> k(row * 256), v(k.size()), q(size_t(kHeads) * kHd), out(q.size());
  for (auto& x : k) x = float(rng.normal());
  for (auto& x : v) x = float(rng.normal());
  for (auto& x : q) x = float(rng.normal());
  for (int t = 0; t < n; t += 256) {
    if (!cache->append(0, std::min(256, n - t), k.data(), v.data()).ok() || !cache->end_step().ok()) {
      st.SkipWithError("append failed");
      return;
    }
  }
  const Rope rope(kHd, kHd, 10000.0f);
  const AttentionParams p{kHeads, n_kv_heads, kHd, 0.088f, &rope};
  ExecContext ctx(1);
  for (auto _ : st) {
    if (!attend(ctx, p, *cache, 0, q.data(), 1, n - 1, out.data()).ok()) st.SkipWithError("attend failed");
    benchmark::DoNotOptimize(out.data());
  }
  st.SetLabel(spec_text);
  st.counters["values/s"] =
      benchmark::Counter(2.0 * n * double(row), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttendDecode)->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {512, 4096}, {1, 4}})->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvq

BENCHMARK_MAIN();
