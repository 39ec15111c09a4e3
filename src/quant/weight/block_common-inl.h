// SPDX-License-Identifier: MIT
// Highway helpers of the weight-block dequantizers: bytes widened to 32-bit lanes, and the
// stores every format ends with. Each helper rounds exactly as the scalar references do (one
// rounding per multiply and per add; kvq_quant builds with -ffp-contract=off), so SIMD and
// reference rows are bit-identical. Per-target include guard, as Highway requires.
#if defined(KVQ_QUANT_WEIGHT_BLOCK_COMMON_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_QUANT_WEIGHT_BLOCK_COMMON_INL_H_
#undef KVQ_QUANT_WEIGHT_BLOCK_COMMON_INL_H_
#else
#define KVQ_QUANT_WEIGHT_BLOCK_COMMON_INL_H_
#endif

#include <cstdint>
#include <cstring>

#include "hwy/highway.h"
#include "quant/bitpack-inl.h"
#include "quant/weight/block_common.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// DF has at most 16 lanes, so every 16-element group of a block is a whole number of vectors.

// Bytes p[0, Lanes) as uint32 lanes.
HWY_INLINE hn::Vec<DU> LoadBytes(const uint8_t* HWY_RESTRICT p) {
  const DU du;
  const hn::Rebind<uint8_t, DU> du8;
  return hn::PromoteTo(du, hn::LoadU(du8, p));
}

HWY_INLINE hn::Vec<DU> LowNibbles(hn::Vec<DU> b) { return hn::And(b, hn::Set(DU(), 15u)); }
HWY_INLINE hn::Vec<DU> HighNibbles(hn::Vec<DU> b) { return hn::ShiftRight<4>(b); }
HWY_INLINE hn::Vec<DF> ToFloat(hn::Vec<DU> q) { return hn::ConvertTo(DF(), hn::BitCast(DI(), q)); }
HWY_INLINE hn::Vec<DF> ToFloat(hn::Vec<DI> q) { return hn::ConvertTo(DF(), q); }

// 16 or 0 per lane: whether b & bit is set (the fifth bit of Q5 formats).
HWY_INLINE hn::Vec<DU> Bit16If(hn::Vec<DU> b, uint32_t bit) {
  const DU du;
  return hn::IfThenElseZero(hn::Ne(hn::And(b, hn::Set(du, bit)), hn::Zero(du)), hn::Set(du, 16u));
}

// 16 or 0 per lane: the fifth bit of elements [j, j + Lanes) from the little-endian qh.
HWY_INLINE hn::Vec<DU> FifthBits(const uint8_t* HWY_RESTRICT qh_bytes, size_t j) {
  const DU du;
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  alignas(64) static constexpr uint32_t kLaneBit[16] = {1u << 0,  1u << 1,  1u << 2,  1u << 3, 1u << 4,  1u << 5,
                                                        1u << 6,  1u << 7,  1u << 8,  1u << 9, 1u << 10, 1u << 11,
                                                        1u << 12, 1u << 13, 1u << 14, 1u << 15};
  return hn::IfThenElseZero(hn::Ne(hn::And(hn::Set(du, qh >> j), hn::LoadU(du, kLaneBit)), hn::Zero(du)),
                            hn::Set(du, 16u));
}

// y = d * q
HWY_INLINE void StoreScaled(hn::Vec<DF> q, float d, float* HWY_RESTRICT y) {
  hn::StoreU(hn::Mul(q, hn::Set(DF(), d)), DF(), y);
}
// y = d * q - m
HWY_INLINE void StoreScaledMinusMin(hn::Vec<DF> q, float d, float m, float* HWY_RESTRICT y) {
  hn::StoreU(hn::Sub(hn::Mul(q, hn::Set(DF(), d)), hn::Set(DF(), m)), DF(), y);
}
// y = q * d + m
HWY_INLINE void StoreScaledPlusMin(hn::Vec<DF> q, float d, float m, float* HWY_RESTRICT y) {
  hn::StoreU(hn::Add(hn::Mul(q, hn::Set(DF(), d)), hn::Set(DF(), m)), DF(), y);
}

// kIq4nlValues[idx] as floats (exact).
HWY_INLINE hn::Vec<DF> Iq4nlLevels(hn::Vec<DU> idx) {
  return hn::GatherIndex(DF(), kIq4nlLevels.data(), hn::BitCast(DI(), idx));
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
