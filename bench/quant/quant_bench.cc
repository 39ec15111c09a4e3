// SPDX-License-Identifier: MIT
// Quantize / dequantize throughput of every quant/ format in GB/s of fp32 data, next to the
// plain memory-copy bandwidth measured in the same run, plus the cost of quantizing one new
// token against the projection matvec that produces it.
//   quant_bench --benchmark_counters_tabular=true
// Arg 0 = KernelPath::kRef, 1 = kSimd. Rows are d = 4096 (one LLaMA-7B K or V vector); a batch
// of 1024 rows (16 MiB of fp32) streams through memory, like a prefill.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "base/rng.h"
#include "quant/bitpack.h"
#include "quant/codebook.h"
#include "quant/common.h"
#include "quant/ggml_blocks.h"
#include "quant/kmeans.h"
#include "quant/outliers.h"
#include "quant/uniform_group.h"

namespace kvq {
namespace {

constexpr size_t kD = 4096, kRows = 1024, kN = kD * kRows;

const std::vector<float>& data() {
  static const std::vector<float> x = [] {
    Rng rng(1);
    std::vector<float> v(kN);
    for (auto& f : v) f = float(rng.normal());
    return v;
  }();
  return x;
}

KernelPath path_of(const benchmark::State& s) { return s.range(0) ? KernelPath::kSimd : KernelPath::kRef; }

void set_bytes(benchmark::State& s, size_t floats_per_iter) {
  s.SetBytesProcessed(int64_t(s.iterations()) * int64_t(floats_per_iter) * 4);
  s.SetLabel(s.range(0) ? simd_target_name() : "ref");
}

void BM_Memcpy(benchmark::State& s) {
  const auto& x = data();
  std::vector<float> y(kN);
  for (auto _ : s) {
    std::memcpy(y.data(), x.data(), kN * 4);
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
  s.SetLabel("memcpy (bytes copied)");
}
BENCHMARK(BM_Memcpy)->Arg(1);

// ---- uniform (KIVI values per token in groups; int-b baselines) ----
void BM_UniformRowQuantize(benchmark::State& s) {
  const int bits = int(s.range(1)), G = int(s.range(2));
  const UniformParams p{bits, G, false};
  const size_t ng = uniform_group_count(kD, G), pb = packed_bytes(bits, kD);
  std::vector<uint8_t> codes(kRows * pb);
  std::vector<f16_t> sc(kRows * ng), zp(kRows * ng);
  const auto& x = data();
  for (auto _ : s) {
    for (size_t r = 0; r < kRows; ++r) {
      (void)quantize_uniform_row(x.data() + r * kD, kD, p, codes.data() + r * pb, sc.data() + r * ng,
                                 zp.data() + r * ng, path_of(s));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_UniformRowQuantize)
    ->ArgNames({"simd", "bits", "G"})
    ->Args({0, 2, 32})->Args({1, 2, 32})->Args({1, 3, 32})->Args({1, 4, 32})->Args({1, 8, 32})
    ->Args({1, 4, 128})->Args({1, 3, 0});

void BM_UniformRowDequantize(benchmark::State& s) {
  const int bits = int(s.range(1)), G = int(s.range(2));
  const UniformParams p{bits, G, false};
  const size_t ng = uniform_group_count(kD, G), pb = packed_bytes(bits, kD);
  std::vector<uint8_t> codes(kRows * pb);
  std::vector<f16_t> sc(kRows * ng), zp(kRows * ng);
  const auto& x = data();
  for (size_t r = 0; r < kRows; ++r) {
    (void)quantize_uniform_row(x.data() + r * kD, kD, p, codes.data() + r * pb, sc.data() + r * ng,
                               zp.data() + r * ng);
  }
  std::vector<float> y(kN);
  for (auto _ : s) {
    for (size_t r = 0; r < kRows; ++r) {
      dequantize_uniform_row(codes.data() + r * pb, sc.data() + r * ng, zp.data() + r * ng, kD, p,
                             y.data() + r * kD, path_of(s));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_UniformRowDequantize)
    ->ArgNames({"simd", "bits", "G"})
    ->Args({0, 2, 32})->Args({1, 2, 32})->Args({1, 3, 32})->Args({1, 4, 32})->Args({1, 8, 32});

// ---- KIVI keys: blocks of 32 tokens x 128 channels, one group per channel ----
void BM_UniformColsQuantize(benchmark::State& s) {
  const int bits = int(s.range(1));
  constexpr size_t kT = 32, kC = 128, kBlocks = kN / (kT * kC);
  const size_t pb = packed_bytes(bits, kC);
  std::vector<uint8_t> codes(kBlocks * kT * pb);
  std::vector<f16_t> sc(kBlocks * kC), zp(kBlocks * kC);
  const auto& x = data();
  for (auto _ : s) {
    for (size_t b = 0; b < kBlocks; ++b) {
      (void)quantize_uniform_cols(x.data() + b * kT * kC, kT, kC, kC, bits, codes.data() + b * kT * pb,
                                  sc.data() + b * kC, zp.data() + b * kC, path_of(s));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_UniformColsQuantize)->ArgNames({"simd", "bits"})->Args({0, 2})->Args({1, 2})->Args({1, 4});

void BM_UniformColsDot(benchmark::State& s) {
  const int bits = int(s.range(1));
  constexpr size_t kT = 32, kC = 128, kBlocks = kN / (kT * kC);
  const size_t pb = packed_bytes(bits, kC);
  std::vector<uint8_t> codes(kBlocks * kT * pb);
  std::vector<f16_t> sc(kBlocks * kC), zp(kBlocks * kC);
  const auto& x = data();
  for (size_t b = 0; b < kBlocks; ++b) {
    (void)quantize_uniform_cols(x.data() + b * kT * kC, kT, kC, kC, bits, codes.data() + b * kT * pb,
                                sc.data() + b * kC, zp.data() + b * kC);
  }
  std::vector<float> scores(kBlocks * kT);
  for (auto _ : s) {
    for (size_t b = 0; b < kBlocks; ++b) {
      dot_uniform_cols(x.data(), codes.data() + b * kT * pb, sc.data() + b * kC, zp.data() + b * kC,
                       kT, kC, bits, scores.data() + b * kT, path_of(s));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);  // fp32-equivalent elements scored
}
BENCHMARK(BM_UniformColsDot)->ArgNames({"simd", "bits"})->Args({0, 2})->Args({1, 2})->Args({1, 4});

// ---- codebook formats (nuq/nf) ----
void BM_CodebookTokenQuantize(benchmark::State& s) {  // KVQuant values, with or without 1%
  const int bits = int(s.range(1));
  const double frac = s.range(2) / 100.0;
  const Codebook cb = make_nf_codebook(bits);
  const size_t pb = packed_bytes(bits, kD);
  std::vector<uint8_t> codes(kRows * pb);
  std::vector<uint16_t> idx(kD);
  std::vector<f16_t> val(kD);
  const auto& x = data();
  for (auto _ : s) {
    for (size_t r = 0; r < kRows; ++r) {
      NormParams np;
      size_t cnt;
      if (frac > 0) {
        (void)quantize_dense_sparse_token(x.data() + r * kD, kD, frac, cb, codes.data() + r * pb, &np,
                                          idx.data(), val.data(), &cnt, path_of(s));
      } else {
        np = norm_from_minmax(x.data() + r * kD, kD);
        (void)encode_codebook_row(x.data() + r * kD, kD, np, cb, codes.data() + r * pb, path_of(s));
      }
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_CodebookTokenQuantize)
    ->ArgNames({"simd", "bits", "pct"})
    ->Args({0, 3, 0})->Args({1, 3, 0})->Args({1, 4, 0})->Args({0, 3, 1})->Args({1, 3, 1})->Args({1, 2, 1});

ChannelNorm bench_norm() {
  std::vector<float> up(kD, 2.5f), lo(kD, -2.5f);
  return make_channel_norm(up.data(), lo.data(), kD).value();
}

void BM_CodebookChannelQuantize(benchmark::State& s) {  // KVQuant keys, offline thresholds
  const int bits = int(s.range(1));
  const Codebook cb = make_nf_codebook(bits);
  const ChannelNorm cn = bench_norm();
  const size_t pb = packed_bytes(bits, kD);
  std::vector<uint8_t> codes(kRows * pb);
  std::vector<uint16_t> idx(kD);
  std::vector<f16_t> val(kD);
  const auto& x = data();
  for (auto _ : s) {
    for (size_t r = 0; r < kRows; ++r) {
      size_t cnt;
      (void)quantize_dense_sparse_channels(x.data() + r * kD, kD, cn, cb, codes.data() + r * pb,
                                           idx.data(), val.data(), &cnt, path_of(s));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_CodebookChannelQuantize)->ArgNames({"simd", "bits"})->Args({0, 3})->Args({1, 3})->Args({1, 4});

void BM_CodebookDequantize(benchmark::State& s) {
  const int bits = int(s.range(1));
  const bool per_channel = s.range(2);
  const Codebook cb = make_nf_codebook(bits);
  const ChannelNorm cn = bench_norm();
  const size_t pb = packed_bytes(bits, kD);
  std::vector<uint8_t> codes(kRows * pb);
  std::vector<NormParams> np(kRows);
  const auto& x = data();
  for (size_t r = 0; r < kRows; ++r) {
    np[r] = norm_from_minmax(x.data() + r * kD, kD);
    (void)encode_codebook_row(x.data() + r * kD, kD, np[r], cb, codes.data() + r * pb);
  }
  std::vector<float> y(kN);
  for (auto _ : s) {
    for (size_t r = 0; r < kRows; ++r) {
      if (per_channel) {
        decode_codebook_row_pc(codes.data() + r * pb, kD, cn, cb, y.data() + r * kD, path_of(s));
      } else {
        decode_codebook_row(codes.data() + r * pb, kD, np[r], cb, y.data() + r * kD, path_of(s));
      }
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_CodebookDequantize)
    ->ArgNames({"simd", "bits", "pc"})
    ->Args({0, 3, 0})->Args({1, 2, 0})->Args({1, 3, 0})->Args({1, 4, 0})->Args({1, 4, 1});

void BM_CodebookDotPc(benchmark::State& s) {  // fused q.k over per-channel nuq keys
  const int bits = int(s.range(1));
  const Codebook cb = make_nf_codebook(bits);
  const ChannelNorm cn = bench_norm();
  const size_t pb = packed_bytes(bits, kD);
  std::vector<uint8_t> codes(kRows * pb);
  const auto& x = data();
  for (size_t r = 0; r < kRows; ++r) {
    (void)encode_codebook_row_pc(x.data() + r * kD, kD, cn, cb, codes.data() + r * pb);
  }
  std::vector<float> w(kD);
  float bias;
  prepare_codebook_query_pc(x.data(), kD, cn, w.data(), &bias);
  float sink = 0;
  for (auto _ : s) {
    for (size_t r = 0; r < kRows; ++r) sink += dot_codebook_row_pc(w.data(), bias, codes.data() + r * pb, kD, cb, path_of(s));
  }
  benchmark::DoNotOptimize(sink);
  set_bytes(s, kN);
}
BENCHMARK(BM_CodebookDotPc)->ArgNames({"simd", "bits"})->Args({0, 4})->Args({1, 2})->Args({1, 3})->Args({1, 4});

// ---- ggml q8_0 / q4_0 ----
template <class Block, bool kQ8>
void BM_GgmlQuantize(benchmark::State& s) {
  std::vector<Block> y(kN / 32);
  const auto& x = data();
  for (auto _ : s) {
    if constexpr (kQ8) {
      (void)quantize_row_q8_0(x.data(), y.data(), kN, path_of(s));
    } else {
      (void)quantize_row_q4_0(x.data(), y.data(), kN, path_of(s));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_GgmlQuantize<BlockQ8_0, true>)->Name("BM_Q8_0Quantize")->Arg(0)->Arg(1);
BENCHMARK(BM_GgmlQuantize<BlockQ4_0, false>)->Name("BM_Q4_0Quantize")->Arg(0)->Arg(1);

template <class Block, bool kQ8>
void BM_GgmlDequantize(benchmark::State& s) {
  std::vector<Block> b(kN / 32);
  const auto& x = data();
  if constexpr (kQ8) {
    (void)quantize_row_q8_0(x.data(), b.data(), kN);
  } else {
    (void)quantize_row_q4_0(x.data(), b.data(), kN);
  }
  std::vector<float> y(kN);
  for (auto _ : s) {
    if constexpr (kQ8) {
      dequantize_row_q8_0(b.data(), y.data(), kN, path_of(s));
    } else {
      dequantize_row_q4_0(b.data(), y.data(), kN, path_of(s));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(s, kN);
}
BENCHMARK(BM_GgmlDequantize<BlockQ8_0, true>)->Name("BM_Q8_0Dequantize")->Arg(0)->Arg(1);
BENCHMARK(BM_GgmlDequantize<BlockQ4_0, false>)->Name("BM_Q4_0Dequantize")->Arg(0)->Arg(1);

// ---- bit unpacking alone ----
void BM_Unpack(benchmark::State& s) {
  const int bits = int(s.range(1));
  std::vector<uint8_t> packed(packed_bytes(bits, kN), 0x5A), codes(kN);
  for (auto _ : s) {
    unpack_codes(bits, packed.data(), kN, codes.data(), path_of(s));
    benchmark::ClobberMemory();
  }
  s.SetBytesProcessed(int64_t(s.iterations()) * int64_t(kN));  // bytes of codes produced
  s.SetLabel(s.range(0) ? simd_target_name() : "ref");
}
BENCHMARK(BM_Unpack)->ArgNames({"simd", "bits"})->Args({0, 3})->Args({1, 2})->Args({1, 3})->Args({1, 4});

// ---- one new token vs the projection that produces it ----
// v = W x with W [4096, 4096] fp32 (64 MiB, streamed once per token, like a decode step's
// v_proj with fp32 weights; fp16 weights would halve it), then quantizing v.
void BM_ProjectionMatvec(benchmark::State& s) {
  static const std::vector<float> w = [] {
    Rng rng(2);
    std::vector<float> m(kD * kD);
    for (auto& f : m) f = float(rng.uniform(-0.02f, 0.02f));
    return m;
  }();
  const auto& x = data();
  std::vector<float> y(kD);
  for (auto _ : s) {
    for (size_t r = 0; r < kD; ++r) {
      float acc = 0;
      const float* row = w.data() + r * kD;
      for (size_t c = 0; c < kD; ++c) acc += row[c] * x[c];
      y[r] = acc;
    }
    benchmark::DoNotOptimize(y.data());
  }
  s.SetBytesProcessed(int64_t(s.iterations()) * int64_t(kD * kD * 4));
  s.SetLabel("weights bytes");
}
BENCHMARK(BM_ProjectionMatvec)->Unit(benchmark::kMicrosecond);

void BM_OneTokenQuantize(benchmark::State& s) {  // per layer: K (nuq4 per channel) + V (nuq4-1%)
  const Codebook cb = make_nf_codebook(4);
  const ChannelNorm cn = bench_norm();
  std::vector<uint8_t> kc(packed_bytes(4, kD)), vc(packed_bytes(4, kD));
  std::vector<uint16_t> idx(kD);
  std::vector<f16_t> val(kD);
  const auto& x = data();
  for (auto _ : s) {
    size_t cnt;
    NormParams np;
    (void)quantize_dense_sparse_channels(x.data(), kD, cn, cb, kc.data(), idx.data(), val.data(), &cnt);
    (void)quantize_dense_sparse_token(x.data() + kD, kD, 0.01, cb, vc.data(), &np, idx.data(), val.data(), &cnt);
    benchmark::ClobberMemory();
  }
  s.SetLabel(simd_target_name());
}
BENCHMARK(BM_OneTokenQuantize)->Unit(benchmark::kMicrosecond);

void BM_KMeans(benchmark::State& s) {
  const size_t n = size_t(s.range(0));
  Rng rng(5);
  std::vector<float> x(n), w(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(rng.normal() * 0.3), w[i] = float(rng.uniform());
  for (auto _ : s) {
    auto r = kmeans_1d(x, w, KMeansOptions{16, 50, 0});
    benchmark::DoNotOptimize(r);
  }
  s.SetItemsProcessed(int64_t(s.iterations()) * int64_t(n));
}
BENCHMARK(BM_KMeans)->Arg(1 << 20)->Arg(16 << 20)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
}  // namespace kvq

BENCHMARK_MAIN();
