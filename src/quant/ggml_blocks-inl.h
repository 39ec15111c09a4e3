// SPDX-License-Identifier: MIT
// Highway kernels of ggml_blocks.h (bit-identical quantize/dequantize).
#if defined(KVQ_QUANT_GGML_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_QUANT_GGML_BLOCKS_INL_H_
#undef KVQ_QUANT_GGML_BLOCKS_INL_H_
#else
#define KVQ_QUANT_GGML_BLOCKS_INL_H_
#endif

#include <cmath>

#include "hwy/highway.h"
#include "quant/bitpack-inl.h"
#include "quant/ggml_blocks.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

HWY_INLINE float AbsMax32(const float* HWY_RESTRICT x) {
  const DF df;
  const size_t N = hn::Lanes(df);
  auto m = hn::Zero(df);
  for (size_t j = 0; j < 32; j += N) m = hn::Max(m, hn::Abs(hn::LoadU(df, x + j)));
  return hn::GetLane(hn::MaxOfLanes(df, m));
}

// roundf: half away from zero. Trunc + (|frac| >= 0.5 ? sign : 0) is exact (x - trunc(x) is
// exact in float), unlike floor(x + 0.5).
HWY_INLINE hn::Vec<DF> RoundHalfAway(hn::Vec<DF> v) {
  const DF df;
  const auto t = hn::Trunc(v);
  const auto up = hn::Ge(hn::Abs(hn::Sub(v, t)), hn::Set(df, 0.5f));
  return hn::IfThenElse(up, hn::Add(t, hn::CopySignToAbs(hn::Set(df, 1.0f), v)), t);
}

inline void QuantizeRowQ8_0Simd(const float* HWY_RESTRICT x, BlockQ8_0* HWY_RESTRICT y, int64_t k) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> di8;
  const size_t N = hn::Lanes(df);
  for (int64_t i = 0; i < k / 32; ++i, x += 32) {
    const float d = AbsMax32(x) / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    const auto vid = hn::Set(df, id);
    for (size_t j = 0; j < 32; j += N) {
      const auto q = hn::ConvertTo(di, RoundHalfAway(hn::Mul(hn::LoadU(df, x + j), vid)));
      hn::StoreU(hn::DemoteTo(di8, q), di8, y[i].qs + j);
    }
  }
}

inline void QuantizeRowQ4_0Simd(const float* HWY_RESTRICT x, BlockQ4_0* HWY_RESTRICT y, int64_t k) {
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DI> du8;
  const size_t N = hn::Lanes(df);
  for (int64_t i = 0; i < k / 32; ++i, x += 32) {
    const float amax = AbsMax32(x);
    float max = 0.0f;
    if (amax > 0) {
      for (int j = 0; j < 32; ++j) {
        if (std::fabs(x[j]) == amax) {
          max = x[j];
          break;
        }
      }
    }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    const auto vid = hn::Set(df, id), half = hn::Set(df, 8.5f);
    const auto fifteen = hn::Set(di, 15);
    for (size_t j = 0; j < 16; j += N) {
      const auto lo = hn::Min(hn::ConvertTo(di, hn::Add(hn::Mul(hn::LoadU(df, x + j), vid), half)), fifteen);
      const auto hi = hn::Min(hn::ConvertTo(di, hn::Add(hn::Mul(hn::LoadU(df, x + 16 + j), vid), half)), fifteen);
      const auto byte = hn::Or(lo, hn::ShiftLeft<4>(hi));
      hn::StoreU(hn::DemoteTo(du8, byte), du8, y[i].qs + j);
    }
  }
}

inline void DequantizeRowQ8_0Simd(const BlockQ8_0* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> di8;
  const size_t N = hn::Lanes(df);
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const auto d = hn::Set(df, f16_to_f32(x[i].d));
    for (size_t j = 0; j < 32; j += N) {
      const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(di8, x[i].qs + j)));
      hn::StoreU(hn::Mul(q, d), df, y + j);
    }
  }
}

inline void DequantizeRowQ4_0Simd(const BlockQ4_0* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DI> du8;
  const size_t N = hn::Lanes(df);
  const auto mask = hn::Set(di, 15), eight = hn::Set(di, 8);
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const auto d = hn::Set(df, f16_to_f32(x[i].d));
    for (size_t j = 0; j < 16; j += N) {
      const auto b = hn::PromoteTo(di, hn::LoadU(du8, x[i].qs + j));
      const auto lo = hn::Sub(hn::And(b, mask), eight);
      const auto hi = hn::Sub(hn::ShiftRight<4>(b), eight);
      hn::StoreU(hn::Mul(hn::ConvertTo(df, lo), d), df, y + j);
      hn::StoreU(hn::Mul(hn::ConvertTo(df, hi), d), df, y + 16 + j);
    }
  }
}

inline float DotQ8_0Simd(const float* HWY_RESTRICT q, const BlockQ8_0* HWY_RESTRICT x, int64_t k) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> di8;
  const size_t N = hn::Lanes(df);
  auto total = hn::Zero(df);
  for (int64_t i = 0; i < k / 32; ++i, q += 32) {
    auto acc = hn::Zero(df);
    for (size_t j = 0; j < 32; j += N) {
      const auto c = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(di8, x[i].qs + j)));
      acc = hn::MulAdd(hn::LoadU(df, q + j), c, acc);
    }
    total = hn::MulAdd(acc, hn::Set(df, f16_to_f32(x[i].d)), total);
  }
  return hn::GetLane(hn::SumOfLanes(df, total));
}

inline float DotQ4_0Simd(const float* HWY_RESTRICT q, const BlockQ4_0* HWY_RESTRICT x, int64_t k) {
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DI> du8;
  const size_t N = hn::Lanes(df);
  const auto mask = hn::Set(di, 15), eight = hn::Set(di, 8);
  auto total = hn::Zero(df);
  for (int64_t i = 0; i < k / 32; ++i, q += 32) {
    auto acc = hn::Zero(df);
    for (size_t j = 0; j < 16; j += N) {
      const auto b = hn::PromoteTo(di, hn::LoadU(du8, x[i].qs + j));
      acc = hn::MulAdd(hn::LoadU(df, q + j), hn::ConvertTo(df, hn::Sub(hn::And(b, mask), eight)), acc);
      acc = hn::MulAdd(hn::LoadU(df, q + 16 + j), hn::ConvertTo(df, hn::Sub(hn::ShiftRight<4>(b), eight)), acc);
    }
    total = hn::MulAdd(acc, hn::Set(df, f16_to_f32(x[i].d)), total);
  }
  return hn::GetLane(hn::SumOfLanes(df, total));
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
