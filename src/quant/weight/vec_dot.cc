// SPDX-License-Identifier: MIT
// vec_dot.h's Highway kernels (the references: vec_dot_ref.cc). On x86 with AVX2 or AVX-512
// each type has a kernel in registers on pmaddubsw (below, "x86"); elsewhere each block's
// weights are unpacked to int8 in a 32- or 256-byte stack buffer, then multiplied with the int8
// activations in int16 pairs summed to int32 (ReorderWidenMulAccumulate).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/vec_dot.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/vec_dot.h"
#include "quant/weight/vec_dot_codes.h"

#include <cstring>

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using namespace vec_dot_detail;  // the blocks' codes and scales (vec_dot_codes.h)

using D16 = hn::CappedTag<int16_t, 16>;
using D32 = hn::Repartition<int32_t, D16>;
using DB = hn::CappedTag<uint8_t, 16>;  // 16 bytes of packed weights

using DF = hn::Repartition<float, D32>;

// Products a[j] * b[j] over int8 summed in pairs into int32 lanes (exact; not yet reduced);
// n a multiple of 16.
HWY_INLINE hn::Vec<D32> DotI8Lanes(const int8_t* HWY_RESTRICT a, const int8_t* HWY_RESTRICT b, size_t n) {
  const D16 d16;
  const D32 d32;
  const hn::Rebind<int8_t, D16> d8;
  const size_t L = hn::Lanes(d16);
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  for (size_t j = 0; j < n; j += L) {
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::LoadU(d8, a + j)),
                                       hn::PromoteTo(d16, hn::LoadU(d8, b + j)), s0, s1);
  }
  return hn::Add(s0, s1);
}

// acc += scale * float(lanes): the per-block float step, kept in vector lanes (one horizontal
// sum per row, as ggml's kernels do).
HWY_INLINE hn::Vec<DF> AccumulateBlock(hn::Vec<DF> acc, hn::Vec<D32> lanes, float scale) {
  return hn::MulAdd(hn::ConvertTo(DF(), lanes), hn::Set(DF(), scale), acc);
}

// 16 packed bytes to int8: low nibbles to lo[0, 16), high nibbles to hi[0, 16).
HWY_INLINE void UnpackNibbles(const uint8_t* HWY_RESTRICT p, int8_t* lo, int8_t* hi) {
  const DB db;
  const hn::RebindToSigned<DB> di8;
  const size_t L = hn::Lanes(db);
  for (size_t j = 0; j < 16; j += L) {
    const auto b = hn::LoadU(db, p + j);
    hn::StoreU(hn::BitCast(di8, hn::And(b, hn::Set(db, uint8_t(15)))), di8, lo + j);
    hn::StoreU(hn::BitCast(di8, hn::ShiftRight<4>(b)), di8, hi + j);
  }
}

#if !(HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2)
float VecDotQ8_0(const BlockQ8_0* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  auto acc = hn::Zero(DF());
  for (int64_t b = 0; b < n / 32; ++b) {
    acc = AccumulateBlock(acc, DotI8Lanes(w[b].qs, a[b].qs, 32), f16_to_f32(w[b].d) * f16_to_f32(a[b].d));
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}

float VecDotIQ4NL(const BlockIQ4_NL* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  auto acc = hn::Zero(DF());
  alignas(32) int8_t q[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    iq4_levels(w[b].qs, q);
    acc = AccumulateBlock(acc, DotI8Lanes(q, a[b].qs, 32), f16_to_f32(w[b].d) * f16_to_f32(a[b].d));
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}

float VecDotIQ4XS(const BlockIQ4_XS* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const D32 d32;
  auto acc = hn::Zero(DF());
  alignas(32) int8_t q[32];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    auto sumi = hn::Zero(d32);
    for (int j = 0; j < 8; ++j) {
      iq4_levels(w[b].qs + 16 * j, q);
      sumi = hn::Add(sumi, hn::Mul(DotI8Lanes(q, a[b].qs + 32 * j, 32), hn::Set(d32, int32_t(iq4_xs_scale(w[b], j)))));
    }
    acc = AccumulateBlock(acc, sumi, f16_to_f32(w[b].d) * a[b].d);
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}

template <class Block>
float LegacyRow(const Block* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  auto acc = hn::Zero(DF());
  float mins = 0;
  alignas(32) uint8_t q[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    legacy_codes(w[b], q);
    const float da = f16_to_f32(a[b].d);
    if constexpr (kLegacyMin<Block>) {
      mins += f16_to_f32(w[b].m) * da * float(code_sum(a[b].qs));
    } else {
      for (auto& c : q) c = uint8_t(c - kLegacyOffset<Block>);  // signed, two's complement
    }
    acc = AccumulateBlock(acc, DotI8Lanes(reinterpret_cast<const int8_t*>(q), a[b].qs, 32), f16_to_f32(w[b].d) * da);
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc)) + mins;
}

float VecDotQ2K(const BlockQ2_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const D32 d32;
  auto acc = hn::Zero(DF());
  float mins = 0;
  alignas(64) int8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    q2_k_codes(w[b], q);
    auto sumi = hn::Zero(d32);
    int32_t summ = 0;
    for (int g = 0; g < 16; ++g) {
      sumi = hn::Add(sumi, hn::Mul(DotI8Lanes(q + 16 * g, a[b].qs + 16 * g, 16), hn::Set(d32, int32_t(w[b].scales[g] & 15))));
      summ += int32_t(w[b].scales[g] >> 4) * a[b].bsums[g];
    }
    acc = AccumulateBlock(acc, sumi, f16_to_f32(w[b].d) * a[b].d);
    mins += f16_to_f32(w[b].dmin) * a[b].d * float(summ);
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc)) - mins;
}

float VecDotQ3K(const BlockQ3_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const D32 d32;
  auto acc = hn::Zero(DF());
  alignas(64) int8_t q[kQK_K];
  int8_t sc[16];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    q3_k_codes(w[b], q);
    unpack_q3_k_scales(w[b].scales, sc);
    auto sumi = hn::Zero(d32);
    for (int g = 0; g < 16; ++g) sumi = hn::Add(sumi, hn::Mul(DotI8Lanes(q + 16 * g, a[b].qs + 16 * g, 16), hn::Set(d32, int32_t(sc[g]))));
    acc = AccumulateBlock(acc, sumi, f16_to_f32(w[b].d) * a[b].d);
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}
#endif

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// x86 with AVX2: the weights' nibbles stay unsigned bytes and multiply the int8 activations
// with pmaddubsw (u8 x i8, adjacent pairs summed to int16: at most 2 * 15 * 127, so it never
// saturates), then pmaddwd by the sub-block scale to int32: 32 weights per two instructions,
// in registers, where the portable version below widens to int16 through a stack buffer.
// Highway 1.0 has no u8 x i8 op, hence the intrinsics (Vec.raw). The integers are exact, so
// only the float lanes' summation order differs from the reference.
//
// A decode step is bound by streaming the weights, so the per-block overhead around those
// products is kept to a few vector instructions: d and dmin converted together (F16C), the
// 6-bit scales and mins unpacked with 32-bit word operations (no per-sub-block branches), the
// mins term as one pmaddwd of the 8 mins with the activation's paired 16-sums, and each
// sub-block's scale broadcast from a register by pshufb (callgrind: 98 instructions per
// 256-weight block, from 235).

// Sub-block j's scale (as int16 at lane j of the low 128 bits, repeated in the high half)
// broadcast to all 16 lanes: the pshufb control selecting bytes 2j, 2j + 1.
HWY_INLINE __m256i ScaleShuffle(int j) { return _mm256_set1_epi16(int16_t(((2 * j + 1) << 8) | (2 * j))); }

// The 8 scales (lanes 0-7) and 8 mins (lanes 8-15) of a block as int16. Bytes 0-3 hold the low
// 6 bits of scales 0-3 (their top 2 bits: the high bits of scales 4-7), bytes 4-7 the same for
// mins 0-3 and mins 4-7, bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and mins 4-7
// (high nibble); k_scale_min is the byte-wise specification.
HWY_INLINE __m256i Q4KScalesMins(const uint8_t* s) {
  uint32_t w0, w1, w2;
  std::memcpy(&w0, s, 4);
  std::memcpy(&w1, s + 4, 4);
  std::memcpy(&w2, s + 8, 4);
  const uint32_t sc_lo = w0 & 0x3f3f3f3fu, m_lo = w1 & 0x3f3f3f3fu;
  // (byte >> 6) << 4 of every byte at once: bits 6-7 of each byte moved to bits 4-5.
  const uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);
  const uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
  return _mm256_cvtepu8_epi16(_mm_set_epi32(int(m_hi), int(m_lo), int(sc_hi), int(sc_lo)));
}

HWY_INLINE float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
HWY_INLINE float HSum(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// Signed codes against Q8_0 activations (ggml's sign trick; Q8_0 here, Q4_0, Q5_0 and IQ4_NL
// below): |w| as unsigned bytes times
// a * sign(w) with pmaddubsw (at most 2 * 128 * 127 per int16 pair: no saturation; the
// activations are within +-127, quantize_row_q8_0), the pairs summed to int32 by pmaddwd, and
// the block's scale d_w d_a (F16C) multiplied in as float: ~8 vector instructions per 32
// weights, where the portable kernel widened to int16 and converted the scales in software
// (~50: 10 GB/s of Q8_0 from one core, below the read bandwidth). Prefetches as KQuantRow does.
constexpr int64_t kQ8PrefetchBytes = 4608;
HWY_INLINE __m256 Q8_0Block(__m256 acc, __m256i w8, const uint8_t* HWY_RESTRICT a8, f16_t dw, f16_t da) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a8));
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w8, w8), _mm256_sign_epi8(a, w8));
  const __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(_cvtsh_ss(dw) * _cvtsh_ss(da)), acc);
}
// Prefetches the block kQ8PrefetchBytes ahead, one line per 64 bytes of it (consecutive blocks
// cover every line); the address as an integer, since it may pass the matrix's end.
template <class Block>
HWY_INLINE void PrefetchBlockAhead(const Block* block) {
  const char* ahead = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(block) + kQ8PrefetchBytes);
  for (size_t off = 0; off < sizeof(Block); off += 64) _mm_prefetch(ahead + off, _MM_HINT_T0);
}
// 16 bytes of nibbles as 32 bytes in weight order: the low nibbles, then the high ones.
HWY_INLINE __m256i Nibbles32(const uint8_t* HWY_RESTRICT qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(15));
}
// Each 16 weights' scale by pmaddwd: lo for the low 128 bits' 8 int16 pairs, hi for the high.
HWY_INLINE __m256i PairScales(int8_t lo, int8_t hi) { return _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)); }

float VecDotQ8_0(const BlockQ8_0* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b) {
    PrefetchBlockAhead(w + b);
    const __m256i w8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
    acc = Q8_0Block(acc, w8, reinterpret_cast<const uint8_t*>(a[b].qs), w[b].d, a[b].d);
  }
  return HSum(acc);
}

// Q6_K on x86 (ggml's layout walk): per half h of the block, weights 128h + 32p + l (p < 4,
// l < 32) are the low or high nibble of ql[64h + 32(p & 1) + l] with bits 2p, 2p + 1 of
// qh[32h + l] on top: 0..63, taken unsigned by pmaddubsw against the activations and the
// offset 32 subtracted as 32 * (a's pair sums) (at most 2 * 63 * 127 per int16 pair); each 16
// weights' signed scale by pmaddwd. Exact integers as the portable kernel, which widened every
// weight through a stack buffer (59% of the read bandwidth on the 7B-shaped model).
float VecDotQ6K(const BlockQ6_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), m32 = _mm256_set1_epi8(32);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    PrefetchBlockAhead(w + b);
    const BlockQ6_K& wb = w[b];
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qh + 32 * h));
      for (int p = 0; p < 4; ++p) {
        const __m256i lo = p < 2 ? _mm256_and_si256(p == 0 ? ql0 : ql1, m4)
                                 : _mm256_and_si256(_mm256_srli_epi16(p == 2 ? ql0 : ql1, 4), m4);
        const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p), m2), 4);
        const __m256i q = _mm256_or_si256(lo, hi);
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * p));
        const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q, av), _mm256_maddubs_epi16(m32, av));
        const int g = 8 * h + 2 * p;  // the scale of weights l < 16; g + 1 of l >= 16
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, PairScales(wb.scales[g], wb.scales[g + 1])));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(_cvtsh_ss(wb.d) * a[b].d), acc);
  }
  return HSum(acc);
}

// IQ4: 16 bytes of nibbles to their 32 levels in weight order (low nibbles, then high), by one
// pshufb of kIq4nlValues (levels within +-127, so the sign trick of Q8_0Block holds).
HWY_INLINE __m256i IQ4Levels(const uint8_t* HWY_RESTRICT qs, __m256i table) {
  return _mm256_shuffle_epi8(table, Nibbles32(qs));
}
HWY_INLINE __m256i IQ4Table() {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
}

float VecDotIQ4NL(const BlockIQ4_NL* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  const __m256i table = IQ4Table();
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b) {
    PrefetchBlockAhead(w + b);
    acc = Q8_0Block(acc, IQ4Levels(w[b].qs, table), reinterpret_cast<const uint8_t*>(a[b].qs), w[b].d, a[b].d);
  }
  return HSum(acc);
}

// IQ4_XS: each 32-weight sub-block's pair sums (pmaddubsw, as Q8_0Block) times its scale ls - 32
// by pmaddwd (at most 2 * 32 * 32,258 in int32), then d_w d_a once per 256 weights.
float VecDotIQ4XS(const BlockIQ4_XS* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const __m256i table = IQ4Table();
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    PrefetchBlockAhead(w + b);
    const BlockIQ4_XS& wb = w[b];
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      const __m256i w8 = IQ4Levels(wb.qs + 16 * j, table);
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 32 * j));
      const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w8, w8), _mm256_sign_epi8(av, w8));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, _mm256_set1_epi16(int16_t(iq4_xs_scale(wb, j)))));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(_cvtsh_ss(wb.d) * a[b].d), acc);
  }
  return HSum(acc);
}

// Q4_0, Q4_1, Q5_0, Q5_1 (ggml's layouts): the 32 codes in weight order in one register, the
// 5-bit types' qh bits spread to bytes (ggml's bytes_from_bits_32: each byte gets its qh byte,
// or-ed with a mask that leaves all ones exactly where its bit is set) and or-ed in as 16.
// Q4_0's and Q5_0's codes minus kLegacyOffset (8, 16) go through Q8_0Block's sign trick; Q4_1's
// and Q5_1's stay unsigned for pmaddubsw (at most 2 * 31 * 127) and their minimum m multiplies
// the activation block's code sum.
HWY_INLINE __m256i BitsToBytes(const uint8_t* HWY_RESTRICT qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(bits)), shuf);
  const __m256i set = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(set, _mm256_set1_epi8(-1));
}

template <class Block>
float LegacyRow(const Block* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b) {
    PrefetchBlockAhead(w + b);
    __m256i v = Nibbles32(w[b].qs);
    if constexpr (requires { w[b].qh; }) v = _mm256_or_si256(v, _mm256_and_si256(BitsToBytes(w[b].qh), _mm256_set1_epi8(16)));
    const uint8_t* a8 = reinterpret_cast<const uint8_t*>(a[b].qs);
    if constexpr (kLegacyMin<Block>) {
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a8));
      const float da = _cvtsh_ss(a[b].d);
      const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(v, av), ones16);
      const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), av), ones16);
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(_cvtsh_ss(w[b].d) * da), acc);
      acc_m = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_set1_ps(_cvtsh_ss(w[b].m) * da), acc_m);
    } else {
      acc = Q8_0Block(acc, _mm256_sub_epi8(v, _mm256_set1_epi8(kLegacyOffset<Block>)), a8, w[b].d, a[b].d);
    }
  }
  return HSum(acc) + HSum(acc_m);
}

// Q2_K and Q3_K: per half h of the block, weights 128h + 32p + l come from bits 2p, 2p + 1 of
// qs[32h + l] (Q3_K: plus 4 where bit 4h + p of hmask[l] is set, the offset 4 then taken off
// as 4 * the activation's pair sums), unsigned for pmaddubsw (at most 2 * 7 * 127); each 16
// weights' scale by pmaddwd (Q3_K's signed 6-bit ones unpacked per block). Q2_K's minimums
// times the activation's 16-sums once per block, as the reference.
float VecDotQ2K(const BlockQ2_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const __m256i m3 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    PrefetchBlockAhead(w + b);
    const BlockQ2_K& wb = w[b];
    __m256i sumi = _mm256_setzero_si256();
    int32_t summ = 0;
    for (int g = 0; g < 16; ++g) summ += int32_t(wb.scales[g] >> 4) * a[b].bsums[g];
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qs + 32 * h));
      for (int p = 0; p < 4; ++p) {
        const __m256i v = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * p), m3);
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * p));
        const int g = 8 * h + 2 * p;
        const __m256i sc = PairScales(int8_t(wb.scales[g] & 15), int8_t(wb.scales[g + 1] & 15));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(v, av), sc));
      }
    }
    const float da = a[b].d;
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(_cvtsh_ss(wb.d) * da), acc);
    mins += _cvtsh_ss(wb.dmin) * da * float(summ);
  }
  return HSum(acc) - mins;
}

float VecDotQ3K(const BlockQ3_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
  __m256 acc = _mm256_setzero_ps();
  int8_t sc[16];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    PrefetchBlockAhead(w + b);
    const BlockQ3_K& wb = w[b];
    unpack_q3_k_scales(wb.scales, sc);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.hmask));
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qs + 32 * h));
      for (int p = 0; p < 4; ++p) {
        const __m256i hbit = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + p), one);
        const __m256i v = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qs, 2 * p), m3), _mm256_slli_epi16(hbit, 2));
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * p));
        const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(v, av), _mm256_maddubs_epi16(four, av));
        const int g = 8 * h + 2 * p;
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, PairScales(sc[g], sc[g + 1])));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(_cvtsh_ss(wb.d) * a[b].d), acc);
  }
  return HSum(acc);
}

// One weight row's dot with a, n / 256 blocks. Prefetches kQ4KPrefetchBlocks ahead (into the
// next rows at a row's end; a prefetch past the matrix is harmless): a one-thread loop over a
// 75 MB matrix ran at 8-10 Gweights/s without it, 12-18 with it (the hardware prefetcher alone
// does not keep enough lines in flight). Walking two rows at once, to share each activation
// load, halved that streaming rate (two streams 2.3 KB apart), so rows go one at a time.
constexpr int kQ4KPrefetchBlocks = 32;
// Q5_K (kHigh) is Q4_K with a fifth bit per weight: bit j of qh[l] on top of sub-block j's
// nibbles, at most 2 * 31 * 127 per pmaddubsw pair; the same walk otherwise.
template <class Block, bool kHigh>
HWY_INLINE float KQuantRow(const Block* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t nb) {
  const __m256i low_mask = _mm256_set1_epi8(15);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_m = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const char* ahead = reinterpret_cast<const char*>(w + b + kQ4KPrefetchBlocks);
    // One prefetch per 64 bytes of the block (144 or 176): consecutive blocks cover every line.
    for (size_t off = 0; off < sizeof(Block); off += 64) _mm_prefetch(ahead + off, _MM_HINT_T0);
    const BlockQ8_K& ab = a[b];
    const Block& wb = w[b];
    // The activation's 16-sums added in pairs: the sum over each 32-weight sub-block.
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.bsums));
    const __m128i bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    const __m256i sm = Q4KScalesMins(wb.scales);
    uint32_t dd_bits;  // d and dmin, adjacent f16s
    std::memcpy(&dd_bits, &wb.d, 4);
    const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(int(dd_bits))), _mm_set1_ps(ab.d));  // [d da, dmin da]
    const __m128i msum = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), bs32);
    acc_m = _mm_fmadd_ps(_mm_cvtepi32_ps(msum), _mm_permute_ps(dd, 0x55), acc_m);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
    __m256i sumi = _mm256_setzero_si256();
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kHigh) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qh));
    for (int c = 0; c < 4; ++c) {
      const __m256i a_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.qs + 64 * c));
      const __m256i a_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.qs + 64 * c + 32));
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qs + 32 * c));
      __m256i lo = _mm256_and_si256(bits, low_mask);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low_mask);
      if constexpr (kHigh) {  // bits 2c and 2c + 1 of qh, moved to bit 4
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
      }
      const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), _mm256_shuffle_epi8(scales, ScaleShuffle(2 * c)));
      const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), _mm256_shuffle_epi8(scales, ScaleShuffle(2 * c + 1)));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_broadcastss_ps(dd), acc);
  }
  return HSum(acc) - HSum(acc_m);
}

float VecDotQ4K(const BlockQ4_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  return KQuantRow<BlockQ4_K, false>(w, a, n / kQK_K);
}

float VecDotQ5K(const BlockQ5_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  return KQuantRow<BlockQ5_K, true>(w, a, n / kQK_K);
}

void VecDotQ4KRows(const BlockQ4_K* HWY_RESTRICT w, size_t stride, int n_rows, const BlockQ8_K* HWY_RESTRICT a,
                   int64_t n, float* HWY_RESTRICT y) {
  for (int r = 0; r < n_rows; ++r) y[r] = KQuantRow<BlockQ4_K, false>(w + size_t(r) * stride, a, n / kQK_K);
}
#else
// Q4_K and Q5_K: the block's 256 codes unpacked by unpack(block, q), then each sub-block's
// pair sums times its scale; the minimums once per block.
template <class Block, class Unpack>
HWY_INLINE float KScaleMinRow(const Block* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n,
                              const Unpack& unpack) {
  const D32 d32;
  auto acc = hn::Zero(DF());
  float mins = 0;
  alignas(64) int8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    unpack(w[b], q);
    uint8_t sc[8], m[8];
    k_scales(w[b], sc, m);
    auto sumi = hn::Zero(d32);
    for (int j = 0; j < 8; ++j) sumi = hn::Add(sumi, hn::Mul(DotI8Lanes(q + 32 * j, a[b].qs + 32 * j, 32), hn::Set(d32, int32_t(sc[j]))));
    acc = AccumulateBlock(acc, sumi, f16_to_f32(w[b].d) * a[b].d);
    mins += f16_to_f32(w[b].dmin) * a[b].d * float(q4_k_min_sum(m, a[b]));
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc)) - mins;
}

float VecDotQ4K(const BlockQ4_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  return KScaleMinRow(w, a, n, [](const BlockQ4_K& b, int8_t* q) {
    for (int c = 0; c < 4; ++c) {
      UnpackNibbles(b.qs + 32 * c, q + 64 * c, q + 64 * c + 32);
      UnpackNibbles(b.qs + 32 * c + 16, q + 64 * c + 16, q + 64 * c + 48);
    }
  });
}

void VecDotQ4KRows(const BlockQ4_K* HWY_RESTRICT w, size_t stride, int n_rows, const BlockQ8_K* HWY_RESTRICT a,
                   int64_t n, float* HWY_RESTRICT y) {
  for (int r = 0; r < n_rows; ++r) y[r] = VecDotQ4K(w + size_t(r) * stride, a, n);
}

float VecDotQ5K(const BlockQ5_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  return KScaleMinRow(w, a, n, [](const BlockQ5_K& b, int8_t* q) {
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) q[32 * j + l] = q5_k_weight(b, j, l);
    }
  });
}
#endif

#if !(HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2)
float VecDotQ6K(const BlockQ6_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const DB db;
  const D32 d32;
  const hn::RebindToSigned<DB> di8;
  const size_t L = hn::Lanes(db);
  auto acc = hn::Zero(DF());
  alignas(64) int8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    // Weight 128h + 32p + l: nibble of ql[64h + 32(p & 1) + l] (high for p >= 2) | top bits
    // 2p..2p+1 of qh[32h + l] << 4, minus 32.
    for (int h = 0; h < 2; ++h) {
      for (int p = 0; p < 4; ++p) {
        for (size_t l = 0; l < 32; l += L) {
          const auto low = hn::LoadU(db, w[b].ql + 64 * h + 32 * (p & 1) + l);
          const auto nib = p < 2 ? hn::And(low, hn::Set(db, uint8_t(15))) : hn::ShiftRight<4>(low);
          const auto top = hn::And(hn::ShiftRightSame(hn::LoadU(db, w[b].qh + 32 * h + l), 2 * p), hn::Set(db, uint8_t(3)));
          const auto v = hn::Or(nib, hn::ShiftLeft<4>(top));
          hn::StoreU(hn::Sub(hn::BitCast(di8, v), hn::Set(di8, int8_t(32))), di8, q + 128 * h + 32 * p + l);
        }
      }
    }
    auto sumi = hn::Zero(d32);
    for (int g = 0; g < 16; ++g) sumi = hn::Add(sumi, hn::Mul(DotI8Lanes(q + 16 * g, a[b].qs + 16 * g, 16), hn::Set(d32, int32_t(w[b].scales[g]))));
    acc = AccumulateBlock(acc, sumi, f16_to_f32(w[b].d) * a[b].d);
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}
#endif

float VecDotQ4_0(const BlockQ4_0* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) { return LegacyRow(w, a, n); }
float VecDotQ4_1(const BlockQ4_1* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) { return LegacyRow(w, a, n); }
float VecDotQ5_0(const BlockQ5_0* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) { return LegacyRow(w, a, n); }
float VecDotQ5_1(const BlockQ5_1* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) { return LegacyRow(w, a, n); }

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(VecDotQ8_0);
HWY_EXPORT(VecDotQ4_0);
HWY_EXPORT(VecDotQ4_1);
HWY_EXPORT(VecDotQ5_0);
HWY_EXPORT(VecDotQ5_1);
HWY_EXPORT(VecDotIQ4NL);
HWY_EXPORT(VecDotIQ4XS);
HWY_EXPORT(VecDotQ2K);
HWY_EXPORT(VecDotQ3K);
HWY_EXPORT(VecDotQ4K);
HWY_EXPORT(VecDotQ4KRows);
HWY_EXPORT(VecDotQ5K);
HWY_EXPORT(VecDotQ6K);

// Each type's entry: its reference on KernelPath::kRef, else the dispatched target's kernel.
#define KVQ_VEC_DOT_ENTRY(name, Block, ActBlock, Kernel)                                       \
  float name(const Block* w, const ActBlock* a, int64_t n, KernelPath path) {                 \
    return path == KernelPath::kRef ? name##_ref(w, a, n) : HWY_DYNAMIC_DISPATCH(Kernel)(w, a, n); \
  }
KVQ_VEC_DOT_ENTRY(vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0, VecDotQ8_0)
KVQ_VEC_DOT_ENTRY(vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0, VecDotQ4_0)
KVQ_VEC_DOT_ENTRY(vec_dot_q2_k_q8_k, BlockQ2_K, BlockQ8_K, VecDotQ2K)
KVQ_VEC_DOT_ENTRY(vec_dot_q3_k_q8_k, BlockQ3_K, BlockQ8_K, VecDotQ3K)
KVQ_VEC_DOT_ENTRY(vec_dot_q5_k_q8_k, BlockQ5_K, BlockQ8_K, VecDotQ5K)
KVQ_VEC_DOT_ENTRY(vec_dot_q4_1_q8_0, BlockQ4_1, BlockQ8_0, VecDotQ4_1)
KVQ_VEC_DOT_ENTRY(vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0, VecDotQ5_0)
KVQ_VEC_DOT_ENTRY(vec_dot_q5_1_q8_0, BlockQ5_1, BlockQ8_0, VecDotQ5_1)
KVQ_VEC_DOT_ENTRY(vec_dot_iq4_nl_q8_0, BlockIQ4_NL, BlockQ8_0, VecDotIQ4NL)
KVQ_VEC_DOT_ENTRY(vec_dot_iq4_xs_q8_k, BlockIQ4_XS, BlockQ8_K, VecDotIQ4XS)
KVQ_VEC_DOT_ENTRY(vec_dot_q4_k_q8_k, BlockQ4_K, BlockQ8_K, VecDotQ4K)
KVQ_VEC_DOT_ENTRY(vec_dot_q6_k_q8_k, BlockQ6_K, BlockQ8_K, VecDotQ6K)
#undef KVQ_VEC_DOT_ENTRY

void vec_dot_q4_k_q8_k_rows(const BlockQ4_K* w, size_t row_stride, int n_rows, const BlockQ8_K* a, int64_t n, float* y,
                            KernelPath path) {
  if (path == KernelPath::kRef) {
    for (int r = 0; r < n_rows; ++r) y[r] = vec_dot_q4_k_q8_k_ref(w + size_t(r) * row_stride, a, n);
    return;
  }
  HWY_DYNAMIC_DISPATCH(VecDotQ4KRows)(w, row_stride, n_rows, a, n, y);
}

}  // namespace kvq
#endif  // HWY_ONCE
