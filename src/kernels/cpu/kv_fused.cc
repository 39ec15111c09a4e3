// SPDX-License-Identifier: MIT
// Fused attention kernels over packed runs for one or two queries (decode without GQA sharing):
// scores and value accumulation straight from the codes, no f32 tile. Scores use
//   q . x' = sum_blocks d_b (q . codes_b)          (ggml blocks)
//   q . x' = sum_c (q_c s_c) code_c + q . z        (KIVI keys; w = q * s once per block)
//   q . x' = sum_c s_g (q . codes_g) + z_g sum(q_g) (per-token groups)
// and accumulation out += (p s) code + p z; KVQuant values (codebook rows) accumulate
//   out += (p half) level[code] + p zero,  then  out[i] += p (exact_i - dense_i) per outlier.
// Specification: decode_run_ref, then dot / axpy;
// results agree within float reassociation (tested against attention over read()).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_fused.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/kv_fused.h"
#include "quant/bitpack-inl.h"
#include "quant/codebook-inl.h"
#include "quant/ggml_blocks.h"

#ifndef KVQ_KERNELS_KV_FUSED_ONCE
#define KVQ_KERNELS_KV_FUSED_ONCE
#include <algorithm>
#include <cstring>

#include "quant/normalize.h"
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// q4_0 / q8_0: (nibble - 8) or int8 codes of one 32-value block, as N-lane float vectors.
template <bool kQ4>
HWY_INLINE hn::Vec<DF> BlockCodes(const uint8_t* HWY_RESTRICT blk, size_t j) {
  const DI di;
  if constexpr (kQ4) {
    const hn::Rebind<uint8_t, DI> du8;
    const auto* qs = reinterpret_cast<const BlockQ4_0*>(blk)->qs;
    const auto b = hn::PromoteTo(di, hn::LoadU(du8, qs + (j & 15)));
    const auto nib = j < 16 ? hn::And(b, hn::Set(di, 15)) : hn::ShiftRight<4>(b);
    return hn::ConvertTo(DF(), hn::Sub(nib, hn::Set(di, 8)));
  } else {
    const hn::Rebind<int8_t, DI> di8;
    return hn::ConvertTo(DF(), hn::PromoteTo(di, hn::LoadU(di8, reinterpret_cast<const BlockQ8_0*>(blk)->qs + j)));
  }
}

template <bool kQ4>
void GgmlScores(const KvRun& r, const float* HWY_RESTRICT q, float scale, float* HWY_RESTRICT s) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim);
  const size_t blk = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  for (int t = 0; t < r.n; ++t) {
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    auto acc = hn::Zero(df);
    for (size_t b = 0; b < hd / 32; ++b) {
      const uint8_t* bp = row + b * blk;
      auto ba = hn::Zero(df);
      for (size_t j = 0; j < 32; j += N) ba = hn::MulAdd(hn::LoadU(df, q + b * 32 + j), BlockCodes<kQ4>(bp, j), ba);
      f16_t d;
      std::memcpy(&d, bp, 2);
      acc = hn::MulAdd(hn::Set(df, f16_to_f32(d)), ba, acc);
    }
    s[t] = hn::GetLane(hn::SumOfLanes(df, acc)) * scale;
  }
}

template <bool kQ4>
void GgmlAccumulate(const KvRun& r, const float* HWY_RESTRICT p, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim);
  const size_t blk = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  for (int t = 0; t < r.n; ++t) {
    if (p[t] == 0.0f) continue;
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    for (size_t b = 0; b < hd / 32; ++b) {
      const uint8_t* bp = row + b * blk;
      f16_t d;
      std::memcpy(&d, bp, 2);
      const auto a = hn::Set(df, p[t] * f16_to_f32(d));
      for (size_t j = 0; j < 32; j += N) {
        float* o = out + b * 32 + j;
        hn::StoreU(hn::MulAdd(a, BlockCodes<kQ4>(bp, j), hn::LoadU(df, o)), df, o);
      }
    }
  }
}

// KIVI keys: one G-token block, per-channel scale s_c and zero z_c.
template <int kBits>
void ColsScores(const KvRun& r, const float* HWY_RESTRICT q, float scale, float* HWY_RESTRICT s) {
  const DF df;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim);
  HWY_ALIGN float w[512];
  const auto* sc = reinterpret_cast<const hwy::float16_t*>(r.rows + r.scales_off);
  const auto* zc = reinterpret_cast<const hwy::float16_t*>(r.rows + r.zeros_off);
  auto vb = hn::Zero(df);
  for (size_t i = 0; i < hd; i += N) {
    const auto qi = hn::LoadU(df, q + i);
    hn::Store(hn::Mul(qi, hn::PromoteTo(df, hn::LoadU(dh, sc + i))), df, w + i);
    vb = hn::MulAdd(qi, hn::PromoteTo(df, hn::LoadU(dh, zc + i)), vb);
  }
  const float bias = hn::GetLane(hn::SumOfLanes(df, vb));
  for (int t = 0; t < r.n; ++t) {
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    auto acc = hn::Zero(df);
    for (size_t i = 0; i < hd; i += N) acc = hn::MulAdd(hn::Load(df, w + i), UnpackCodesF<kBits>(row, i), acc);
    s[t] = (hn::GetLane(hn::SumOfLanes(df, acc)) + bias) * scale;
  }
}

// Per-token groups (int-b, KIVI values): scale s_g and zero z_g per group of g values.
template <int kBits>
void RowScores(const KvRun& r, const float* HWY_RESTRICT q, float scale, float* HWY_RESTRICT s) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim), g = size_t(std::min(r.group, r.head_dim));
  HWY_ALIGN float qsum[64];
  for (size_t g0 = 0, k = 0; g0 < hd; g0 += g, ++k) {
    float sum = 0.0f;
    for (size_t i = g0; i < g0 + g; ++i) sum += q[i];
    qsum[k] = sum;
  }
  for (int t = 0; t < r.n; ++t) {
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    const auto* sc = reinterpret_cast<const f16_t*>(r.rows + r.scales_off + size_t(t) * r.meta_stride);
    const auto* zc = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off + size_t(t) * r.meta_stride);
    auto acc = hn::Zero(df);
    float zpart = 0.0f;
    for (size_t g0 = 0, k = 0; g0 < hd; g0 += g, ++k) {
      auto ga = hn::Zero(df);
      for (size_t i = g0; i < g0 + g; i += N) ga = hn::MulAdd(hn::LoadU(df, q + i), UnpackCodesF<kBits>(row, i), ga);
      acc = hn::MulAdd(hn::Set(df, f16_to_f32(sc[k])), ga, acc);
      zpart += f16_to_f32(zc[k]) * qsum[k];
    }
    s[t] = (hn::GetLane(hn::SumOfLanes(df, acc)) + zpart) * scale;
  }
}

template <int kBits>
void RowAccumulate(const KvRun& r, const float* HWY_RESTRICT p, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim), g = size_t(std::min(r.group, r.head_dim));
  HWY_ALIGN float zacc[64] = {};
  const size_t n_groups = hd / g;
  for (int t = 0; t < r.n; ++t) {
    if (p[t] == 0.0f) continue;
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    const auto* sc = reinterpret_cast<const f16_t*>(r.rows + r.scales_off + size_t(t) * r.meta_stride);
    const auto* zc = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off + size_t(t) * r.meta_stride);
    for (size_t k = 0; k < n_groups; ++k) {
      const auto a = hn::Set(df, p[t] * f16_to_f32(sc[k]));
      zacc[k] += p[t] * f16_to_f32(zc[k]);
      for (size_t i = k * g; i < (k + 1) * g; i += N) {
        hn::StoreU(hn::MulAdd(a, UnpackCodesF<kBits>(row, i), hn::LoadU(df, out + i)), df, out + i);
      }
    }
  }
  for (size_t k = 0; k < n_groups; ++k) {
    const auto z = hn::Set(df, zacc[k]);
    for (size_t i = k * g; i < (k + 1) * g; i += N) hn::StoreU(hn::Add(hn::LoadU(df, out + i), z), df, out + i);
  }
}

// KVQuant values: a 2^bits table scaled by p_t half_t per token feeds the codebook axpy; the
// zero points are summed once; sparse outliers correct their dense value.
template <int kBits>
void CodebookRowAccumulate(const KvRun& r, const float* HWY_RESTRICT p, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim);
  HWY_ALIGN float alut[16] = {};
  float zsum = 0.0f;
  for (int t = 0; t < r.n; ++t) {
    if (p[t] == 0.0f) continue;
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    NormParams np;
    std::memcpy(&np, r.rows + r.norm_off + size_t(t) * r.meta_stride, sizeof np);
    const NormF f = norm_float(np);
    const float a = p[t] * f.half;
    for (int j = 0; j < (1 << kBits); ++j) alut[j] = r.levels[j] * a;
    zsum += p[t] * f.zero;
    AxpyRowT<kBits>(row, hd, alut, out);
    if (!r.out_ptr) continue;
    for_each_run_outlier(r, t, [&](size_t c, float v) {
      out[c] += p[t] * (v - (r.levels[code_at(row, kBits, c)] * f.half + f.zero));
    });
  }
  const auto z = hn::Set(df, zsum);
  size_t i = 0;
  for (; i + N <= hd; i += N) hn::StoreU(hn::Add(hn::LoadU(df, out + i), z), df, out + i);
  for (; i < hd; ++i) out[i] += zsum;
}

// Per-token groups the fused kernels take: whole vectors of lanes and of 16-code chunks.
HWY_INLINE bool RowGroupsFuse(const KvRun& r) {
  const size_t g = size_t(std::min(r.group, r.head_dim));
  return g % 16 == 0 && g % hn::Lanes(DF()) == 0 && size_t(r.head_dim) / g <= 64;
}

bool ScoreRunFused(const KvRun& r, const float* q, float scale, float* s) {
  if (r.head_dim % 16 != 0 || r.head_dim > 512) return false;
  switch (r.format) {
    case KvFormat::kQ8_0: GgmlScores<false>(r, q, scale, s); return true;
    case KvFormat::kQ4_0: GgmlScores<true>(r, q, scale, s); return true;
    case KvFormat::kUniformCols: return WithCodeBits(r.bits, [&](auto b) { ColsScores<b()>(r, q, scale, s); });
    case KvFormat::kUniformRow:
      return RowGroupsFuse(r) && WithCodeBits(r.bits, [&](auto b) { RowScores<b()>(r, q, scale, s); });
    default:
      return false;
  }
}

bool AccumulateRunFused(const KvRun& r, const float* p, float* out) {
  if (r.head_dim % 32 != 0 || r.head_dim > 512) return false;
  switch (r.format) {
    case KvFormat::kQ8_0: GgmlAccumulate<false>(r, p, out); return true;
    case KvFormat::kQ4_0: GgmlAccumulate<true>(r, p, out); return true;
    case KvFormat::kUniformRow:
      return RowGroupsFuse(r) && WithCodeBits(r.bits, [&](auto b) { RowAccumulate<b()>(r, p, out); });
    case KvFormat::kCodebookRow:
      switch (r.bits) {
        case 2: CodebookRowAccumulate<2>(r, p, out); return true;
        case 3: CodebookRowAccumulate<3>(r, p, out); return true;
        case 4: CodebookRowAccumulate<4>(r, p, out); return true;
      }
      return false;
    default:
      return false;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(ScoreRunFused);
HWY_EXPORT(AccumulateRunFused);
bool score_run_fused(const KvRun& run, const float* q, float scale, float* scores) {
  return HWY_DYNAMIC_DISPATCH(ScoreRunFused)(run, q, scale, scores);
}
bool accumulate_run_fused(const KvRun& run, const float* p, float* out) {
  return HWY_DYNAMIC_DISPATCH(AccumulateRunFused)(run, p, out);
}
}  // namespace kvq::cpu
#endif
