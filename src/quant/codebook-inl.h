// SPDX-License-Identifier: MIT
// Highway kernels of codebook.h: threshold-count encode, LUT decode, fused dot/axpy.
#if defined(KVQ_QUANT_CODEBOOK_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_QUANT_CODEBOOK_INL_H_
#undef KVQ_QUANT_CODEBOOK_INL_H_
#else
#define KVQ_QUANT_CODEBOOK_INL_H_
#endif

#include <algorithm>

#include "hwy/highway.h"
#include "quant/bitpack-inl.h"
#include "quant/bitpack.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// lut[idx] for a 16-float table (entries past 2^kBits unused): one in-register permute when
// the table fits one or two vectors (AVX-512: 16 lanes; AVX2: 8), a gather otherwise.
template <int kBits>
HWY_INLINE hn::Vec<DF> Lut(const float* HWY_RESTRICT lut, hn::Vec<DI> idx) {
  const DF df;
  const DI di;
  constexpr size_t kN = hn::MaxLanes(DF());
  if constexpr (kN >= 4 && kN >= (1u << kBits)) {
    return hn::TableLookupLanes(hn::LoadU(df, lut), hn::IndicesFromVec(df, idx));
  } else if constexpr (kN >= 4 && 2 * kN >= (1u << kBits)) {
    const auto low = hn::And(idx, hn::Set(di, int32_t(kN - 1)));
    const auto a = hn::TableLookupLanes(hn::LoadU(df, lut), hn::IndicesFromVec(df, low));
    const auto b = hn::TableLookupLanes(hn::LoadU(df, lut + kN), hn::IndicesFromVec(df, low));
    return hn::IfThenElse(hn::RebindMask(df, hn::Lt(idx, hn::Set(di, int32_t(kN)))), a, b);
  } else {
    return hn::GatherIndex(df, lut, idx);
  }
}

// The levels of a packed row's codes, for the fused attention kernels' inner loops: the codes
// unpacked and looked up in one call. Where the levels fit one register (up to 3 bits on AVX2,
// 4 on AVX-512) the codes are not masked: the permute reads an index's low 3 (AVX2) or 4 bits,
// and the table repeats the 2^kBits levels to fill them; one instruction of ~5 per vector fewer.
// Elsewhere UnpackRowCodes then Lut. The lanes' permutes are raw intrinsics because Highway's
// checked builds reject indices past the lanes.
template <int kBits>
class LevelLut {
 public:
  HWY_INLINE explicit LevelLut(const float* HWY_RESTRICT levels) : levels_(levels) {
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
    if constexpr (kRepeat) {
      HWY_ALIGN float t[hn::MaxLanes(DF())];
      for (size_t j = 0; j < hn::MaxLanes(DF()); ++j) t[j] = levels[j % (size_t(1) << kBits)];
      lanes_ = hn::LoadU(DF(), t);
    }
#endif
  }
  // Levels of codes [c, c + N) of a packed row of row_bytes bytes (c a multiple of N).
  HWY_INLINE hn::Vec<DF> at(const uint8_t* HWY_RESTRICT row, size_t c, size_t row_bytes) const {
#if HWY_TARGET == HWY_AVX2
    if constexpr (kRepeat) {
      return hn::Vec<DF>{_mm256_permutevar8x32_ps(lanes_.raw, UnpackRowCodes<kBits, false>(row, c, row_bytes).raw)};
    }
#elif HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
    if constexpr (kRepeat) return of_unmasked(UnpackRowCodes<kBits, false>(row, c, row_bytes).raw);
#endif
    return Lut<kBits>(levels_, hn::BitCast(DI(), UnpackRowCodes<kBits>(row, c, row_bytes)));
  }
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  // Levels of codes already unpacked, one per lane in its low kBits with any bits above (the
  // permute reads the low 4, which the repeated levels cover), for kernels with their own lane
  // order.
  HWY_INLINE hn::Vec<DF> of_unmasked(__m512i codes) const {
    static_assert(kRepeat);
    return hn::Vec<DF>{_mm512_permutexvar_ps(codes, lanes_.raw)};
  }
#endif

 private:
  // The levels repeated to fill one register, looked up by unmasked codes.
  static constexpr bool kRepeat = (1u << kBits) <= hn::MaxLanes(DF()) && hn::MaxLanes(DF()) >= 8;
  const float* levels_;
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  hn::Vec<DF> lanes_ = hn::Zero(DF());
#endif
};

template <int kBits, bool kPerChannel>
HWY_INLINE void EncodeRow(const float* HWY_RESTRICT x, size_t n, float z, float inv,
                          const float* HWY_RESTRICT zc, const float* HWY_RESTRICT invc,
                          const float* HWY_RESTRICT thr, uint8_t* HWY_RESTRICT codes) {
  constexpr size_t kPiece = 1024;
  const DF df;
  const DI di;
  const size_t N = hn::Lanes(df);
  HWY_ALIGN uint8_t buf[kPiece];
  const auto vz = hn::Set(df, z), vinv = hn::Set(df, inv);
  for (size_t piece = 0; piece < n; piece += kPiece) {
    const size_t m = std::min(kPiece, n - piece);
    const float* xp = x + piece;
    size_t i = 0;
    for (; i + N <= m; i += N) {
      const auto xz = kPerChannel ? hn::Sub(hn::LoadU(df, xp + i), hn::LoadU(df, zc + piece + i))
                                  : hn::Sub(hn::LoadU(df, xp + i), vz);
      const auto xhat = hn::Mul(xz, kPerChannel ? hn::LoadU(df, invc + piece + i) : vinv);
      auto code = hn::Zero(di);
      for (int j = 0; j + 1 < (1 << kBits); ++j) {
        code = hn::Sub(code, hn::BitCast(di, hn::VecFromMask(df, hn::Gt(xhat, hn::Set(df, thr[j])))));
      }
      StoreU8(hn::BitCast(DU(), code), buf + i);
    }
    for (; i < m; ++i) {
      const float xhat = kPerChannel ? (xp[i] - zc[piece + i]) * invc[piece + i] : (xp[i] - z) * inv;
      int code = 0;
      for (int j = 0; j + 1 < (1 << kBits); ++j) code += xhat > thr[j];
      buf[i] = uint8_t(code);
    }
    pack_codes(kBits, buf, m, codes + piece * kBits / 8);
  }
}

// Walks the packed row in 16-code chunks: fn(i, lut_values_vector) for every vector of lanes
// [i, i + N), then tail(i, code) for the last n % 16 codes. The lookups are LevelLut's (the
// row's bytes are packed_bytes(kBits, n)).
template <int kBits, class Fn, class Tail>
HWY_INLINE void ForEachLut(const uint8_t* HWY_RESTRICT codes, size_t n,
                           const float* HWY_RESTRICT lut, const Fn& fn, const Tail& tail) {
  const size_t N = hn::Lanes(DF());
  const LevelLut<kBits> levels(lut);
  const size_t n_full = n / kChunk * kChunk, bytes = packed_bytes(kBits, n);
  for (size_t i = 0; i < n_full; i += N) fn(i, levels.at(codes, i, bytes));
  for (size_t i = n_full; i < n; ++i) tail(i, code_at(codes, kBits, i));
}

template <int kBits>
void DecodeRowT(const uint8_t* HWY_RESTRICT codes, size_t n, const float* HWY_RESTRICT lut,
                float* HWY_RESTRICT out) {
  const DF df;
  ForEachLut<kBits>(
      codes, n, lut, [&](size_t i, hn::Vec<DF> v) { hn::StoreU(v, df, out + i); },
      [&](size_t i, uint32_t c) { out[i] = lut[c]; });
}

template <int kBits>
void AxpyRowT(const uint8_t* HWY_RESTRICT codes, size_t n, const float* HWY_RESTRICT alut,
              float* HWY_RESTRICT y) {
  const DF df;
  ForEachLut<kBits>(
      codes, n, alut,
      [&](size_t i, hn::Vec<DF> v) { hn::StoreU(hn::Add(hn::LoadU(df, y + i), v), df, y + i); },
      [&](size_t i, uint32_t c) { y[i] += alut[c]; });
}

template <int kBits>
void DecodeRowPcT(const uint8_t* HWY_RESTRICT codes, size_t n, const float* HWY_RESTRICT values,
                  const float* HWY_RESTRICT h, const float* HWY_RESTRICT z,
                  float* HWY_RESTRICT out) {
  const DF df;
  ForEachLut<kBits>(
      codes, n, values,
      [&](size_t i, hn::Vec<DF> v) {
        hn::StoreU(hn::Add(hn::Mul(v, hn::LoadU(df, h + i)), hn::LoadU(df, z + i)), df, out + i);
      },
      [&](size_t i, uint32_t c) { out[i] = values[c] * h[i] + z[i]; });
}

template <int kBits>
float DotRowPcT(const float* HWY_RESTRICT w, float bias, const uint8_t* HWY_RESTRICT codes,
                size_t n, const float* HWY_RESTRICT values) {
  const DF df;
  auto acc = hn::Zero(df);
  float tail = 0.0f;
  ForEachLut<kBits>(
      codes, n, values,
      [&](size_t i, hn::Vec<DF> v) { acc = hn::MulAdd(hn::LoadU(df, w + i), v, acc); },
      [&](size_t i, uint32_t c) { tail += w[i] * values[c]; });
  return hn::GetLane(hn::SumOfLanes(df, acc)) + tail + bias;
}

// Exported entry points (bits in {2, 3, 4}).
inline void EncodeCodebookRowSimd(const float* x, size_t n, float z, float inv, const float* thr,
                           int bits, uint8_t* codes) {
  if (bits == 2) return EncodeRow<2, false>(x, n, z, inv, nullptr, nullptr, thr, codes);
  if (bits == 3) return EncodeRow<3, false>(x, n, z, inv, nullptr, nullptr, thr, codes);
  return EncodeRow<4, false>(x, n, z, inv, nullptr, nullptr, thr, codes);
}

inline void EncodeCodebookRowPcSimd(const float* x, size_t n, const float* zc, const float* invc,
                             const float* thr, int bits, uint8_t* codes) {
  if (bits == 2) return EncodeRow<2, true>(x, n, 0.0f, 0.0f, zc, invc, thr, codes);
  if (bits == 3) return EncodeRow<3, true>(x, n, 0.0f, 0.0f, zc, invc, thr, codes);
  return EncodeRow<4, true>(x, n, 0.0f, 0.0f, zc, invc, thr, codes);
}

inline void DecodeCodebookRowSimd(const uint8_t* codes, size_t n, const float* lut, int bits,
                           float* out) {
  if (bits == 2) return DecodeRowT<2>(codes, n, lut, out);
  if (bits == 3) return DecodeRowT<3>(codes, n, lut, out);
  return DecodeRowT<4>(codes, n, lut, out);
}

inline void AxpyCodebookRowSimd(const uint8_t* codes, size_t n, const float* alut, int bits,
                         float* y) {
  if (bits == 2) return AxpyRowT<2>(codes, n, alut, y);
  if (bits == 3) return AxpyRowT<3>(codes, n, alut, y);
  return AxpyRowT<4>(codes, n, alut, y);
}

inline void DecodeCodebookRowPcSimd(const uint8_t* codes, size_t n, const float* values,
                             const float* h, const float* z, int bits, float* out) {
  if (bits == 2) return DecodeRowPcT<2>(codes, n, values, h, z, out);
  if (bits == 3) return DecodeRowPcT<3>(codes, n, values, h, z, out);
  return DecodeRowPcT<4>(codes, n, values, h, z, out);
}

inline float DotCodebookRowPcSimd(const float* w, float bias, const uint8_t* codes, size_t n,
                           const float* values, int bits) {
  if (bits == 2) return DotRowPcT<2>(w, bias, codes, n, values);
  if (bits == 3) return DotRowPcT<3>(w, bias, codes, n, values);
  return DotRowPcT<4>(w, bias, codes, n, values);
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
