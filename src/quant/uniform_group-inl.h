// SPDX-License-Identifier: MIT
// Highway kernels of uniform_group.h. Same float ops in the same order as the reference, so
// quantize and dequantize are bit-exact; dot/axpy accumulate in a different order.
#if defined(KVQ_QUANT_UNIFORM_GROUP_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_QUANT_UNIFORM_GROUP_INL_H_
#undef KVQ_QUANT_UNIFORM_GROUP_INL_H_
#else
#define KVQ_QUANT_UNIFORM_GROUP_INL_H_
#endif

#include <algorithm>

#include "hwy/highway.h"
#include "quant/bitpack-inl.h"
#include "quant/bitpack.h"
#include "quant/uniform_group.h"
#include "quant/uniform_group_math.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// Codes are staged in byte buffers of this many codes (a multiple of 8, so every piece starts
// on a byte of the packed stream).
inline constexpr size_t kPiece = 1024;

HWY_INLINE void MinMaxSpan(const float* HWY_RESTRICT x, size_t n, float& mn, float& mx) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  mn = x[0];
  mx = x[0];
  if (n >= N) {
    auto vmin = hn::LoadU(df, x);
    auto vmax = vmin;
    for (i = N; i + N <= n; i += N) {
      const auto v = hn::LoadU(df, x + i);
      vmin = hn::Min(vmin, v);
      vmax = hn::Max(vmax, v);
    }
    mn = hn::GetLane(hn::MinOfLanes(df, vmin));
    mx = hn::GetLane(hn::MaxOfLanes(df, vmax));
  }
  for (; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
}

HWY_INLINE void QuantizeSpan(const float* HWY_RESTRICT x, size_t n,
                             const detail::UniformGroupQ& g, uint8_t* HWY_RESTRICT codes) {
  const DF df;
  const DI di;
  const size_t N = hn::Lanes(df);
  const auto z = hn::Set(df, g.z), inv = hn::Set(df, g.inv), lo = hn::Set(df, g.lo),
             hi = hn::Set(df, g.hi), off = hn::Set(df, g.off);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto r = hn::Round(hn::Mul(hn::Sub(hn::LoadU(df, x + i), z), inv));
    r = hn::Add(hn::Min(hn::Max(r, lo), hi), off);
    StoreU8(hn::BitCast(DU(), hn::ConvertTo(di, r)), codes + i);
  }
  for (; i < n; ++i) codes[i] = detail::uniform_code(x[i], g);
}

// Byte codes -> float codes (exact).
HWY_INLINE hn::Vec<DF> LoadCodesF(const uint8_t* HWY_RESTRICT c) {
  const DI di;
  const hn::Rebind<uint8_t, DI> du8;
  return hn::ConvertTo(DF(), hn::PromoteTo(di, hn::LoadU(du8, c)));
}

HWY_INLINE void DequantSpan(const uint8_t* HWY_RESTRICT c, size_t n,
                            const detail::UniformGroupQ& g, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto s = hn::Set(df, g.s), z = hn::Set(df, g.z), off = hn::Set(df, g.off);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(hn::Add(hn::Mul(hn::Sub(LoadCodesF(c + i), off), s), z), df, out + i);
  }
  for (; i < n; ++i) out[i] = detail::uniform_value(c[i], g);
}

// acc += q * x' over a span.
HWY_INLINE void DotSpan(const float* HWY_RESTRICT q, const uint8_t* HWY_RESTRICT c, size_t n,
                        const detail::UniformGroupQ& g, hn::Vec<DF>& acc, float& tail) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto s = hn::Set(df, g.s), z = hn::Set(df, g.z), off = hn::Set(df, g.off);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::Add(hn::Mul(hn::Sub(LoadCodesF(c + i), off), s), z);
    acc = hn::MulAdd(hn::LoadU(df, q + i), v, acc);
  }
  for (; i < n; ++i) tail += q[i] * detail::uniform_value(c[i], g);
}

HWY_INLINE void AxpySpan(float a, const uint8_t* HWY_RESTRICT c, size_t n,
                         const detail::UniformGroupQ& g, float* HWY_RESTRICT y) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto s = hn::Set(df, g.s), z = hn::Set(df, g.z), off = hn::Set(df, g.off),
             va = hn::Set(df, a);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::Add(hn::Mul(hn::Sub(LoadCodesF(c + i), off), s), z);
    hn::StoreU(hn::MulAdd(va, v, hn::LoadU(df, y + i)), df, y + i);
  }
  for (; i < n; ++i) y[i] += a * detail::uniform_value(c[i], g);
}

inline void QuantizeUniformRowSimd(const float* HWY_RESTRICT x, size_t n, const UniformParams& p,
                            uint8_t* HWY_RESTRICT codes, f16_t* HWY_RESTRICT scales,
                            f16_t* HWY_RESTRICT zeros) {
  const size_t G = p.group_size > 0 ? size_t(p.group_size) : n;
  HWY_ALIGN uint8_t buf[kPiece];
  f16_t unused_zero;
  size_t piece = 0;  // first code index held in buf
  size_t gi = 0;
  for (size_t g0 = 0; g0 < n; g0 += G, ++gi) {
    const size_t g1 = std::min(n, g0 + G);
    float mn, mx;
    MinMaxSpan(x + g0, g1 - g0, mn, mx);
    const detail::UniformGroupQ g = detail::uniform_group_q(
        p.bits, p.symmetric, mn, mx, &scales[gi], p.symmetric ? &unused_zero : &zeros[gi]);
    for (size_t i = g0; i < g1;) {
      const size_t end = std::min(g1, piece + kPiece);
      QuantizeSpan(x + i, end - i, g, buf + (i - piece));
      i = end;
      if (i == piece + kPiece) {
        pack_codes(p.bits, buf, kPiece, codes + piece * p.bits / 8);
        piece += kPiece;
      }
    }
  }
  if (piece < n) pack_codes(p.bits, buf, n - piece, codes + piece * p.bits / 8);
}

// Visits the row in pieces of unpacked codes: fn(piece_codes, i0, i1, group_q) for every
// maximal span [i0, i1) inside one piece and one group.
template <class Fn>
HWY_INLINE void ForEachCodeSpan(const uint8_t* HWY_RESTRICT codes, const f16_t* scales,
                                const f16_t* zeros, size_t n, const UniformParams& p,
                                const Fn& fn) {
  const size_t G = p.group_size > 0 ? size_t(p.group_size) : n;
  HWY_ALIGN uint8_t buf[kPiece];
  for (size_t piece = 0; piece < n; piece += kPiece) {
    const size_t pend = std::min(n, piece + kPiece);
    UnpackRowBits(p.bits, codes + piece * p.bits / 8, pend - piece, buf);
    for (size_t i = piece; i < pend;) {
      const size_t gi = i / G;
      const size_t end = std::min(pend, (gi + 1) * G);
      const auto g = detail::uniform_group_q_stored(p.bits, p.symmetric, scales[gi],
                                                    p.symmetric ? f16_t(0) : zeros[gi]);
      fn(buf + (i - piece), i, end, g);
      i = end;
    }
  }
}

inline void DequantizeUniformRowSimd(const uint8_t* HWY_RESTRICT codes, const f16_t* scales,
                              const f16_t* zeros, size_t n, const UniformParams& p,
                              float* HWY_RESTRICT out) {
  ForEachCodeSpan(codes, scales, zeros, n, p,
                  [&](const uint8_t* c, size_t i0, size_t i1, const detail::UniformGroupQ& g) {
                    DequantSpan(c, i1 - i0, g, out + i0);
                  });
}

inline float DotUniformRowSimd(const float* HWY_RESTRICT q, const uint8_t* HWY_RESTRICT codes,
                        const f16_t* scales, const f16_t* zeros, size_t n,
                        const UniformParams& p) {
  const DF df;
  auto acc = hn::Zero(df);
  float tail = 0.0f;
  ForEachCodeSpan(codes, scales, zeros, n, p,
                  [&](const uint8_t* c, size_t i0, size_t i1, const detail::UniformGroupQ& g) {
                    DotSpan(q + i0, c, i1 - i0, g, acc, tail);
                  });
  return hn::GetLane(hn::SumOfLanes(df, acc)) + tail;
}

inline void AxpyUniformRowSimd(float a, const uint8_t* HWY_RESTRICT codes, const f16_t* scales,
                        const f16_t* zeros, size_t n, const UniformParams& p,
                        float* HWY_RESTRICT y) {
  ForEachCodeSpan(codes, scales, zeros, n, p,
                  [&](const uint8_t* c, size_t i0, size_t i1, const detail::UniformGroupQ& g) {
                    AxpySpan(a, c, i1 - i0, g, y + i0);
                  });
}

// Columns are processed in chunks of kCols (a multiple of 8: byte-aligned in packed rows).
inline constexpr size_t kCols = 256;

inline void QuantizeUniformColsSimd(const float* HWY_RESTRICT x, size_t n_rows, size_t n_cols,
                             size_t ld, int bits, uint8_t* HWY_RESTRICT codes,
                             f16_t* HWY_RESTRICT scales, f16_t* HWY_RESTRICT zeros) {
  const DF df;
  const DI di;
  const size_t N = hn::Lanes(df);
  const size_t row_bytes = packed_bytes(bits, n_cols);
  HWY_ALIGN float mn[kCols], mx[kCols], zf[kCols], inv[kCols];
  HWY_ALIGN uint8_t buf[kCols];
  const float qmax = float((1 << bits) - 1);
  const auto lo = hn::Zero(df), hi = hn::Set(df, qmax);
  for (size_t c0 = 0; c0 < n_cols; c0 += kCols) {
    const size_t nc = std::min(kCols, n_cols - c0);
    size_t c = 0;
    for (; c + N <= nc; c += N) {
      auto vmin = hn::LoadU(df, x + c0 + c);
      auto vmax = vmin;
      for (size_t t = 1; t < n_rows; ++t) {
        const auto v = hn::LoadU(df, x + t * ld + c0 + c);
        vmin = hn::Min(vmin, v);
        vmax = hn::Max(vmax, v);
      }
      hn::Store(vmin, df, mn + c);
      hn::Store(vmax, df, mx + c);
    }
    for (; c < nc; ++c) {
      mn[c] = mx[c] = x[c0 + c];
      for (size_t t = 1; t < n_rows; ++t) {
        mn[c] = std::min(mn[c], x[t * ld + c0 + c]);
        mx[c] = std::max(mx[c], x[t * ld + c0 + c]);
      }
    }
    for (c = 0; c < nc; ++c) {
      const auto g = detail::uniform_group_q(bits, false, mn[c], mx[c], &scales[c0 + c],
                                             &zeros[c0 + c]);
      zf[c] = g.z;
      inv[c] = g.inv;
    }
    for (size_t t = 0; t < n_rows; ++t) {
      const float* xr = x + t * ld + c0;
      for (c = 0; c + N <= nc; c += N) {
        auto r = hn::Round(
            hn::Mul(hn::Sub(hn::LoadU(df, xr + c), hn::Load(df, zf + c)), hn::Load(df, inv + c)));
        r = hn::Min(hn::Max(r, lo), hi);
        StoreU8(hn::BitCast(DU(), hn::ConvertTo(di, r)), buf + c);
      }
      for (; c < nc; ++c) {
        const detail::UniformGroupQ g{0.0f, zf[c], inv[c], 0.0f, qmax, 0.0f};
        buf[c] = detail::uniform_code(xr[c], g);
      }
      pack_codes(bits, buf, nc, codes + t * row_bytes + c0 * bits / 8);
    }
  }
}

// out[t][c] = code_tc * s_c + z_c.
inline void DequantizeUniformColsSimd(const uint8_t* HWY_RESTRICT codes, const f16_t* scales,
                               const f16_t* zeros, size_t n_rows, size_t n_cols, int bits,
                               float* HWY_RESTRICT out, size_t ldo) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t row_bytes = packed_bytes(bits, n_cols);
  HWY_ALIGN float sf[kCols], zf[kCols];
  HWY_ALIGN uint8_t buf[kCols];
  for (size_t c0 = 0; c0 < n_cols; c0 += kCols) {
    const size_t nc = std::min(kCols, n_cols - c0);
    for (size_t c = 0; c < nc; ++c) {
      sf[c] = f16_to_f32(scales[c0 + c]);
      zf[c] = f16_to_f32(zeros[c0 + c]);
    }
    for (size_t t = 0; t < n_rows; ++t) {
      UnpackRowBits(bits, codes + t * row_bytes + c0 * bits / 8, nc, buf);
      float* o = out + t * ldo + c0;
      size_t c = 0;
      for (; c + N <= nc; c += N) {
        hn::StoreU(hn::Add(hn::Mul(LoadCodesF(buf + c), hn::Load(df, sf + c)), hn::Load(df, zf + c)),
                   df, o + c);
      }
      for (; c < nc; ++c) o[c] = float(buf[c]) * sf[c] + zf[c];
    }
  }
}

// scores[t] = sum_c (q_c s_c) code_tc + sum_c q_c z_c.
inline void DotUniformColsSimd(const float* HWY_RESTRICT q, const uint8_t* HWY_RESTRICT codes,
                        const f16_t* scales, const f16_t* zeros, size_t n_rows, size_t n_cols,
                        int bits, float* HWY_RESTRICT scores) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t row_bytes = packed_bytes(bits, n_cols);
  HWY_ALIGN float w[kCols];
  HWY_ALIGN uint8_t buf[kCols];
  for (size_t t = 0; t < n_rows; ++t) scores[t] = 0.0f;
  for (size_t c0 = 0; c0 < n_cols; c0 += kCols) {
    const size_t nc = std::min(kCols, n_cols - c0);
    float bias = 0.0f;
    for (size_t c = 0; c < nc; ++c) {
      w[c] = q[c0 + c] * f16_to_f32(scales[c0 + c]);
      bias += q[c0 + c] * f16_to_f32(zeros[c0 + c]);
    }
    for (size_t t = 0; t < n_rows; ++t) {
      UnpackRowBits(bits, codes + t * row_bytes + c0 * bits / 8, nc, buf);
      auto acc = hn::Zero(df);
      size_t c = 0;
      for (; c + N <= nc; c += N) acc = hn::MulAdd(hn::Load(df, w + c), LoadCodesF(buf + c), acc);
      float sum = hn::GetLane(hn::SumOfLanes(df, acc));
      for (; c < nc; ++c) sum += w[c] * float(buf[c]);
      scores[t] += sum + bias;
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
