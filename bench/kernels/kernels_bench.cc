// SPDX-License-Identifier: MIT
// Microbenchmarks of the Highway kernels at the testbed's shapes, next to the scalar
// references and a plain memcpy bandwidth measured in the same run.
#include <benchmark/benchmark.h>

#include <algorithm>

#include <cstring>
#include <vector>

#include "base/rng.h"
#include "kernels/cpu/ops.h"
#include "kernels/ref/hadamard_ref.h"
#include "kernels/ref/ops_ref.h"

namespace kvq {
namespace {

std::vector<float> rnd(size_t n) {
  Rng rng(n);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal());
  return v;
}

// args: n_tokens, n_rows, n_in
void BM_Matmul(benchmark::State& st) {
  const int t = int(st.range(0)), r = int(st.range(1)), k = int(st.range(2));
  auto x = rnd(size_t(t) * k), w = rnd(size_t(r) * k);
  std::vector<float> y(size_t(t) * r);
  for (auto _ : st) {
    cpu::matmul({x.data(), w.data(), y.data(), size_t(k), size_t(k), size_t(r), t, r, k});
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * t * r * k, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Matmul)->Args({1, 256, 256})->Args({1, 768, 256})->Args({1, 512, 256})->Args({64, 768, 256})->Args({256, 256, 256});

// The same over 64 MiB of weights, one matrix after another, as a decode step reads a model's
// weights from memory rather than from cache: "GB/s" is the weights' read rate.
void BM_MatmulFromMemory(benchmark::State& st) {
  const int t = int(st.range(0)), r = int(st.range(1)), k = int(st.range(2));
  const size_t per = size_t(r) * k, n_mat = (size_t(64) << 20) / (per * sizeof(float));
  auto x = rnd(size_t(t) * k), w = rnd(per * n_mat);
  std::vector<float> y(size_t(t) * r);
  for (auto _ : st) {
    for (size_t m = 0; m < n_mat; ++m) {
      cpu::matmul({x.data(), w.data() + m * per, y.data(), size_t(k), size_t(k), size_t(r), t, r, k});
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GB/s"] =
      benchmark::Counter(double(per * n_mat * sizeof(float)), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MatmulFromMemory)->Args({1, 96, 256})->Args({8, 96, 256})->Args({8, 768, 256})->Args({16, 96, 256});

// The same over f16 weights (a GGUF's F16 tensors at decode): converted in registers by the
// kernel (`direct`, arg 3 = 1), or first into a 16-row f32 tile that the f32 kernel then reads
// (arg 3 = 0, what model_ops did before); bytes are the f16 weights'.
void BM_MatmulF16FromMemory(benchmark::State& st) {
  const int t = int(st.range(0)), r = int(st.range(1)), k = int(st.range(2));
  const bool direct = st.range(3) != 0;
  const size_t per = size_t(r) * k, n_mat = (size_t(64) << 20) / (per * sizeof(f16_t));
  auto x = rnd(size_t(t) * k), wf = rnd(per * n_mat);
  std::vector<f16_t> w(wf.size());
  cpu::convert_f32_to_f16(wf.data(), w.data(), w.size());
  std::vector<float> y(size_t(t) * r), tile(size_t(16) * k);
  for (auto _ : st) {
    for (size_t m = 0; m < n_mat; ++m) {
      const f16_t* wm = w.data() + m * per;
      if (direct) {
        cpu::matmul(cpu::MatmulHalfParams{{x.data(), wm, y.data(), size_t(k), size_t(k), size_t(r), t, r, k}});
        continue;
      }
      for (int r0 = 0; r0 < r; r0 += 16) {
        const int nr = std::min(16, r - r0);
        cpu::convert_f16_to_f32(wm + size_t(r0) * k, tile.data(), size_t(nr) * k, 8192);
        cpu::matmul({x.data(), tile.data(), y.data() + r0, size_t(k), size_t(k), size_t(r), t, nr, k});
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GB/s"] =
      benchmark::Counter(double(per * n_mat * sizeof(f16_t)), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MatmulF16FromMemory)->ArgsProduct({{1, 8}, {96}, {4096}, {0, 1}});

void BM_MatmulRef(benchmark::State& st) {
  const int t = int(st.range(0)), r = int(st.range(1)), k = int(st.range(2));
  auto x = rnd(size_t(t) * k), w = rnd(size_t(r) * k);
  std::vector<float> y(size_t(t) * r);
  for (auto _ : st) {
    ref::matmul_ref(x.data(), w.data(), y.data(), t, r, k);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * t * r * k, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MatmulRef)->Args({1, 768, 256})->Args({64, 768, 256});

// Decode attention of one head over n f16 keys/values of head_dim 64: bytes of K+V read per second.
void BM_AttentionF16(benchmark::State& st) {
  const int n = int(st.range(0)), hd = 64;
  auto q = rnd(hd), kf = rnd(size_t(n) * hd);
  std::vector<f16_t> k(kf.size());
  cpu::convert_f32_to_f16(kf.data(), k.data(), k.size());
  std::vector<float> s(static_cast<size_t>(n)), out(hd);
  for (auto _ : st) {
    cpu::attn_scores(q.data(), hd, 1, k.data(), hd, n, hd, 0.125f, s.data(), size_t(n));
    cpu::attn_accumulate(s.data(), size_t(n), 1, k.data(), hd, n, hd, out.data(), hd);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * 2 * int64_t(k.size()) * 2);
}
BENCHMARK(BM_AttentionF16)->Arg(1024)->Arg(16384);

// What a rotated cache (rot=1) adds per decode step: the transform of one head vector (the
// query, or an output back), next to BM_AttentionF16's attention of one head over n tokens.
// arg: head_dim
void BM_HadamardRow(benchmark::State& st) {
  const int hd = int(st.range(0));
  auto x = rnd(size_t(hd));
  std::vector<float> signs(static_cast<size_t>(hd));
  hadamard_signs(hd, signs.data());
  for (auto _ : st) {
    cpu::hadamard_rows(x.data(), 1, hd, signs.data(), false);
    benchmark::DoNotOptimize(x.data());
  }
}
BENCHMARK(BM_HadamardRow)->Arg(64)->Arg(128);

void BM_Memcpy(benchmark::State& st) {
  const size_t n = size_t(st.range(0));
  std::vector<char> a(n, 1), b(n);
  for (auto _ : st) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n));
}
BENCHMARK(BM_Memcpy)->Arg(1 << 20)->Arg(64 << 20);

}  // namespace
}  // namespace kvq

BENCHMARK_MAIN();
