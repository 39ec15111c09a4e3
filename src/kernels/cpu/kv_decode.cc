// SPDX-License-Identifier: MIT
// Highway decoders of every KvFormat over a run of tokens: one dispatch per run, the rows
// decoded straight from the packed pages into a small f32 tile that the attention kernels use
// while it is in L1 (the context is never copied). Bit-identical to kernels/ref/kv_decode_ref.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_decode.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/kv_decode.h"
#include "kernels/cpu/kv_run-inl.h"
#include "quant/codebook-inl.h"
#include "quant/ggml_blocks-inl.h"
#include "quant/uniform_group-inl.h"

#ifndef KVQ_KERNELS_KV_DECODE_ONCE
#define KVQ_KERNELS_KV_DECODE_ONCE
#include <algorithm>
#include <cstring>

#include "quant/normalize.h"
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// KIVI keys: code * s_c + z_c with the block's per-channel scales (exactly the reference's
// unfused float ops). head_dim a multiple of 16.
template <int kBits>
void UniformColsRun(const KvRun& r, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim);
  HWY_ALIGN float sf[512], zf[512];
  F16Row(reinterpret_cast<const f16_t*>(r.rows + r.scales_off), hd, sf);
  F16Row(reinterpret_cast<const f16_t*>(r.rows + r.zeros_off), hd, zf);
  for (int t = 0; t < r.n; ++t) {
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    float* o = out + size_t(t) * hd;
    for (size_t i = 0; i < hd; i += N) {
      hn::StoreU(hn::Add(hn::Mul(UnpackCodesF<kBits>(row, i), hn::Load(df, sf + i)), hn::Load(df, zf + i)), df, o + i);
    }
  }
}

// int-b / KIVI values: code * s_g + z_g per group of `group` values (a multiple of N).
template <int kBits>
void UniformRowRun(const KvRun& r, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim), g = size_t(std::min(r.group, r.head_dim));
  for (int t = 0; t < r.n; ++t) {
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    const auto* sc = reinterpret_cast<const f16_t*>(r.rows + r.scales_off + size_t(t) * r.meta_stride);
    const auto* zc = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off + size_t(t) * r.meta_stride);
    float* o = out + size_t(t) * hd;
    for (size_t g0 = 0; g0 < hd; g0 += g) {
      const auto vs = hn::Set(df, F16ToF32(sc + g0 / g)), vz = hn::Set(df, F16ToF32(zc + g0 / g));
      for (size_t i = g0; i < g0 + g; i += N) hn::StoreU(hn::Add(hn::Mul(UnpackCodesF<kBits>(row, i), vs), vz), df, o + i);
    }
  }
}

void DecodeRun(const KvRun& r, float* HWY_RESTRICT out) {
  const size_t hd = size_t(r.head_dim);
  switch (r.format) {
    case KvFormat::kF32:
      for (int t = 0; t < r.n; ++t) std::memcpy(out + size_t(t) * hd, r.rows + size_t(t) * r.stride, hd * 4);
      return;
    case KvFormat::kF16:
      for (int t = 0; t < r.n; ++t) {
        F16Row(reinterpret_cast<const f16_t*>(r.rows + size_t(t) * r.stride), hd, out + size_t(t) * hd);
      }
      return;
    case KvFormat::kQ8_0:
      for (int t = 0; t < r.n; ++t) {
        DequantizeRowQ8_0Simd(reinterpret_cast<const BlockQ8_0*>(r.rows + size_t(t) * r.stride),
                              out + size_t(t) * hd, int64_t(hd));
      }
      return;
    case KvFormat::kQ4_0:
      for (int t = 0; t < r.n; ++t) {
        DequantizeRowQ4_0Simd(reinterpret_cast<const BlockQ4_0*>(r.rows + size_t(t) * r.stride),
                              out + size_t(t) * hd, int64_t(hd));
      }
      return;
    case KvFormat::kUniformRow: {
      const size_t g = size_t(std::min(r.group, r.head_dim));
      if (r.head_dim % 16 == 0 && g % hn::Lanes(DF()) == 0 && g % 16 == 0) {
        if (WithCodeBits(r.bits, [&](auto b) { UniformRowRun<b()>(r, out); })) return;
      }
      UniformParams p;
      p.bits = r.bits;
      p.group_size = r.group >= r.head_dim ? 0 : r.group;
      p.symmetric = false;
      for (int t = 0; t < r.n; ++t) {
        const uint8_t* row = r.rows + size_t(t) * r.stride;
        DequantizeUniformRowSimd(row, reinterpret_cast<const f16_t*>(r.rows + r.scales_off + size_t(t) * r.meta_stride),
                                 reinterpret_cast<const f16_t*>(r.rows + r.zeros_off + size_t(t) * r.meta_stride), hd, p,
                                 out + size_t(t) * hd);
      }
      return;
    }
    case KvFormat::kUniformCols:
      if (hd % 16 == 0 && hd <= 512) {
        if (WithCodeBits(r.bits, [&](auto b) { UniformColsRun<b()>(r, out); })) return;
      }
      if (r.stride == packed_bytes(r.bits, hd)) {
        DequantizeUniformColsSimd(r.rows, reinterpret_cast<const f16_t*>(r.rows + r.scales_off),
                                  reinterpret_cast<const f16_t*>(r.rows + r.zeros_off), size_t(r.n), hd,
                                  r.bits, out, hd);
        return;
      }
      for (int t = 0; t < r.n; ++t) {
        DequantizeUniformColsSimd(r.rows + size_t(t) * r.stride,
                                  reinterpret_cast<const f16_t*>(r.rows + r.scales_off),
                                  reinterpret_cast<const f16_t*>(r.rows + r.zeros_off), 1, hd, r.bits,
                                  out + size_t(t) * hd, hd);
      }
      return;
    case KvFormat::kCodebookPc:
      for (int t = 0; t < r.n; ++t) {
        float* o = out + size_t(t) * hd;
        DecodeCodebookRowPcSimd(r.rows + size_t(t) * r.stride, hd, r.levels, r.ch_half, r.ch_zero, r.bits, o);
      }
      if (r.out_ptr) apply_run_outliers(r, out, F16At);
      return;
    case KvFormat::kCodebookRow: {
      HWY_ALIGN float lut[16];
      for (int t = 0; t < r.n; ++t) {
        const uint8_t* row = r.rows + size_t(t) * r.stride;
        const NormF f = RunNorm(r, t);
        for (int j = 0; j < 16; ++j) lut[j] = j < (1 << r.bits) ? r.levels[j] * f.half + f.zero : 0.0f;
        float* o = out + size_t(t) * hd;
        DecodeCodebookRowSimd(row, hd, lut, r.bits, o);
      }
      if (r.out_ptr) apply_run_outliers(r, out, F16At);
      return;
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(DecodeRun);
void decode_run(const KvRun& run, float* out) { HWY_DYNAMIC_DISPATCH(DecodeRun)(run, out); }
}  // namespace kvq::cpu
#endif
