// SPDX-License-Identifier: MIT
// Highway helpers shared by the quant kernels: unpacking 16 b-bit codes of a packed row
// (bitpack.h layout) into uint32 lanes. Per-target include guard, as Highway requires.
#if defined(KVQ_QUANT_BITPACK_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_QUANT_BITPACK_INL_H_
#undef KVQ_QUANT_BITPACK_INL_H_
#else
#define KVQ_QUANT_BITPACK_INL_H_
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Float tag of the quant kernels: at most 16 lanes, so a 16-code chunk (2b bytes, always
// byte aligned) is 16/N whole vectors on every target.
using DF = hn::CappedTag<float, 16>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;
inline constexpr size_t kChunk = 16;

struct UnpackTable {
  uint8_t idx[64];     // byte indices for TableLookupBytes, 4 per uint32 lane
  uint32_t shift[16];  // right shift of lane i
};

// Lane i receives bytes (b*i)/8 and (b*i)/8 + 1 of the chunk in its low 16 bits; shifting
// right by (b*i) % 8 and masking leaves code i. The chunk's 8 bytes are broadcast to every
// 16-byte block, so indices 0..8 are valid in each block (index 8 aliases byte 0, which is
// only ever read into bits that the mask clears).
// at: the chunk's first byte within the 8 bytes read (2 for a row's last 3-bit chunk read from
// 2 bytes before it, UnpackRowCodes).
constexpr UnpackTable make_unpack_table(int bits, int at = 0) {
  UnpackTable t{};
  for (int i = 0; i < 16; ++i) {
    const int byte = at + ((bits * i) >> 3);
    t.idx[4 * i + 0] = uint8_t(byte);
    t.idx[4 * i + 1] = uint8_t(byte + 1);
    t.idx[4 * i + 2] = 0;
    t.idx[4 * i + 3] = 0;
    t.shift[i] = uint32_t((bits * i) & 7);
  }
  return t;
}
// First bit of code i of a 16-code chunk.
template <int kBits>
struct CodeBits {
  uint32_t bit[16];
};
template <int kBits>
constexpr CodeBits<kBits> make_code_bits() {
  CodeBits<kBits> t{};
  for (int i = 0; i < 16; ++i) t.bit[i] = uint32_t(kBits * i);
  return t;
}
template <int kBits>
alignas(64) inline constexpr CodeBits<kBits> kCodeBit = make_code_bits<kBits>();

alignas(64) inline constexpr UnpackTable kUnpack2 = make_unpack_table(2);
alignas(64) inline constexpr UnpackTable kUnpack3 = make_unpack_table(3);
alignas(64) inline constexpr UnpackTable kUnpack4 = make_unpack_table(4);
alignas(64) inline constexpr UnpackTable kUnpack3Last = make_unpack_table(3, 2);

// One stored f16 as float, with the target's conversion instruction (F16C on x86) instead of
// base/fp16.h's portable bit manipulation; exact either way.
HWY_INLINE float F16ToF32(const void* HWY_RESTRICT p) {
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(hn::PromoteTo(d1, hn::LoadU(hn::Rebind<hwy::float16_t, decltype(d1)>(),
                                                   static_cast<const hwy::float16_t*>(p))));
}

#if HWY_TARGET != HWY_SCALAR
// Lanes [lane0, lane0 + N) of a chunk whose bytes are those of bits64 from table t's first
// byte on: each lane's two bytes picked, shifted to its code and (kMask) masked.
template <int kBits, bool kMask>
HWY_INLINE hn::Vec<DU> UnpackWord(uint64_t bits64, const UnpackTable& t, size_t lane0) {
  const DU du;
  const hn::Repartition<uint8_t, DU> du8;
  const hn::Repartition<uint64_t, DU> du64;
  const auto bytes = hn::BitCast(du8, hn::Set(du64, bits64));
  const auto lanes = hn::BitCast(du, hn::TableLookupBytes(bytes, hn::LoadU(du8, t.idx + 4 * lane0)));
  const auto shifted = lanes >> hn::LoadU(du, t.shift + lane0);
  if constexpr (!kMask) return shifted;
  return hn::And(shifted, hn::Set(du, (1u << kBits) - 1u));
}
#endif

// Codes [lane0, lane0 + Lanes(du)) of the 16-code chunk starting at `chunk` (2*kBits bytes).
// kMask false: each lane's code in its low kBits with other bits above it, for a lookup that
// reads only the low bits (codebook-inl.h's LevelLut).
template <int kBits, bool kMask = true>
HWY_INLINE hn::Vec<DU> UnpackCodes(const uint8_t* HWY_RESTRICT chunk, size_t lane0) {
  const DU du;
#if HWY_TARGET == HWY_SCALAR
  // One lane: no byte shuffles on this target.
  const size_t bit = size_t(kBits) * lane0;
  uint32_t w = chunk[bit >> 3];
  if ((bit & 7) + kBits > 8) w |= uint32_t(chunk[(bit >> 3) + 1]) << 8;
  return hn::Set(du, (w >> (bit & 7)) & ((1u << kBits) - 1u));
#else
  if constexpr (kBits == 8) {
    const hn::Rebind<uint8_t, DU> du8;
    return hn::PromoteTo(du, hn::LoadU(du8, chunk + lane0));
  } else if constexpr (kBits * hn::MaxLanes(DU()) <= 32 && hn::MaxLanes(DU()) >= 4) {
    // The lanes' kBits * N bits fit one 32-bit word of the chunk: broadcast it and shift each
    // lane to its code (3 ops per N codes). The word starts at the byte holding code lane0,
    // moved back so that it stays inside the chunk's 2 * kBits bytes.
    const size_t byte = std::min(size_t(kBits) * lane0 / 8, size_t(2 * kBits - 4));
    uint32_t w;
    std::memcpy(&w, chunk + byte, 4);
    const auto shift = hn::Sub(hn::LoadU(du, kCodeBit<kBits>.bit + lane0), hn::Set(du, uint32_t(8 * byte)));
    if constexpr (!kMask) return hn::Set(du, w) >> shift;
    return hn::And(hn::Set(du, w) >> shift, hn::Set(du, (1u << kBits) - 1u));
  } else {
    const UnpackTable& t = kBits == 2 ? kUnpack2 : kBits == 3 ? kUnpack3 : kUnpack4;
    // Register loads of exactly 2*kBits bytes (a 6-byte memcpy into a stack u64 would stall
    // on store forwarding for 3-bit).
    uint64_t bits64;
    if constexpr (kBits == 4) {
      std::memcpy(&bits64, chunk, 8);
    } else if constexpr (kBits == 2) {
      uint32_t w;
      std::memcpy(&w, chunk, 4);
      bits64 = w;
    } else {
      uint32_t w;
      uint16_t h;
      std::memcpy(&w, chunk, 4);
      std::memcpy(&h, chunk + 4, 2);
      bits64 = w | uint64_t(h) << 32;
    }
    return UnpackWord<kBits, kMask>(bits64, t, lane0);
  }
#endif
}

// Codes [c, c + Lanes(du)) of a packed row of row_bytes bytes, c a multiple of the lanes:
// UnpackCodes of c's chunk, except that a 3-bit chunk on 16 lanes (6 bytes, which UnpackCodes
// reads as two loads, a shift and an or: 5 scalar instructions per 16 codes, as many as the
// rest of a codebook lookup) is one 8-byte broadcast load inside the row: at the chunk, or for
// the row's last chunk 2 bytes before it.
template <int kBits, bool kMask = true>
HWY_INLINE hn::Vec<DU> UnpackRowCodes(const uint8_t* HWY_RESTRICT row, size_t c, size_t row_bytes) {
  const size_t off = c / kChunk * 2 * kBits;
#if HWY_TARGET != HWY_SCALAR
  if constexpr (kBits == 3 && hn::MaxLanes(DU()) == kChunk) {
    if (off + 8 <= row_bytes || off >= 2) {
      const bool last = off + 8 > row_bytes;
      uint64_t bits64;
      std::memcpy(&bits64, row + off - (last ? 2 : 0), 8);
      return UnpackWord<kBits, kMask>(bits64, last ? kUnpack3Last : kUnpack3, 0);
    }
  }
#endif
  return UnpackCodes<kBits, kMask>(row + off, c % kChunk);
}

// Codes [i, i + N) of a packed row as float lanes (i a multiple of N: lanes never straddle a
// 16-code chunk).
template <int kBits>
HWY_INLINE hn::Vec<DF> UnpackCodesF(const uint8_t* HWY_RESTRICT row, size_t i) {
  return hn::ConvertTo(DF(), hn::BitCast(DI(), UnpackCodes<kBits>(row + i / kChunk * 2 * kBits, i % kChunk)));
}

// Calls fn(std::integral_constant<int, bits>) for a packable width (2, 3, 4, 8): one switch for
// every kernel templated on its code width. False for any other width.
template <class Fn>
HWY_INLINE bool WithCodeBits(int bits, const Fn& fn) {
  switch (bits) {
    case 2: fn(std::integral_constant<int, 2>()); return true;
    case 3: fn(std::integral_constant<int, 3>()); return true;
    case 4: fn(std::integral_constant<int, 4>()); return true;
    case 8: fn(std::integral_constant<int, 8>()); return true;
  }
  return false;
}

// Stores the low byte of each uint32 lane of v (values < 256) to out.
HWY_INLINE void StoreU8(hn::Vec<DU> v, uint8_t* HWY_RESTRICT out) {
  const DI di;
  const hn::Rebind<uint8_t, DI> du8;
  hn::StoreU(hn::DemoteTo(du8, hn::BitCast(di, v)), du8, out);
}

// Unpacks n codes of a packed row (starting at code 0) into one byte each.
template <int kBits>
HWY_INLINE void UnpackRow(const uint8_t* HWY_RESTRICT packed, size_t n,
                          uint8_t* HWY_RESTRICT codes) {
  const size_t N = hn::Lanes(DU());
  const size_t n_chunks = n / kChunk;
  for (size_t c = 0; c < n_chunks; ++c) {
    const uint8_t* chunk = packed + c * 2 * kBits;
    for (size_t l = 0; l < kChunk; l += N) {
      StoreU8(UnpackCodes<kBits>(chunk, l), codes + c * kChunk + l);
    }
  }
  for (size_t i = n_chunks * kChunk; i < n; ++i) {
    const size_t bit = size_t(kBits) * i;
    uint32_t w = packed[bit >> 3];
    if ((bit & 7) + kBits > 8) w |= uint32_t(packed[(bit >> 3) + 1]) << 8;
    codes[i] = uint8_t((w >> (bit & 7)) & ((1u << kBits) - 1u));
  }
}

HWY_INLINE void UnpackRowBits(int bits, const uint8_t* HWY_RESTRICT packed, size_t n,
                              uint8_t* HWY_RESTRICT codes) {
  switch (bits) {
    case 2: return UnpackRow<2>(packed, n, codes);
    case 3: return UnpackRow<3>(packed, n, codes);
    case 4: return UnpackRow<4>(packed, n, codes);
    default: return UnpackRow<8>(packed, n, codes);
  }
}



}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
