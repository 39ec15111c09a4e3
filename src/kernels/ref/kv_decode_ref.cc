// SPDX-License-Identifier: MIT
#include "kernels/ref/kv_decode_ref.h"

#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "quant/bitpack.h"
#include "quant/ggml_blocks.h"
#include "quant/normalize.h"
#include "quant/uniform_group.h"

namespace kvq {

const char* kv_format_name(KvFormat f) {
  switch (f) {
    case KvFormat::kF32: return "f32";
    case KvFormat::kF16: return "f16";
    case KvFormat::kQ8_0: return "q8_0";
    case KvFormat::kQ4_0: return "q4_0";
    case KvFormat::kUniformRow: return "uniform-row";
    case KvFormat::kUniformCols: return "uniform-cols";
    case KvFormat::kCodebookPc: return "codebook-pc";
    case KvFormat::kCodebookRow: return "codebook-row";
  }
  return "?";
}

namespace ref {

void decode_run_ref(const KvRun& r, float* out) {
  const size_t hd = size_t(r.head_dim);
  for (int t = 0; t < r.n; ++t) {
    const uint8_t* row = r.rows + size_t(t) * r.stride;
    float* o = out + size_t(t) * hd;
    switch (r.format) {
      case KvFormat::kF32:
        std::memcpy(o, row, hd * sizeof(float));
        break;
      case KvFormat::kF16:
        for (size_t i = 0; i < hd; ++i) o[i] = f16_to_f32(reinterpret_cast<const f16_t*>(row)[i]);
        break;
      case KvFormat::kQ8_0:
        dequantize_row_q8_0_ref(reinterpret_cast<const BlockQ8_0*>(row), o, int64_t(hd));
        break;
      case KvFormat::kQ4_0:
        dequantize_row_q4_0_ref(reinterpret_cast<const BlockQ4_0*>(row), o, int64_t(hd));
        break;
      case KvFormat::kUniformRow: {
        UniformParams p;
        p.bits = r.bits;
        p.group_size = r.group >= r.head_dim ? 0 : r.group;
        p.symmetric = false;
        dequantize_uniform_row_ref(row, reinterpret_cast<const f16_t*>(r.rows + r.scales_off + size_t(t) * r.meta_stride),
                                   reinterpret_cast<const f16_t*>(r.rows + r.zeros_off + size_t(t) * r.meta_stride), hd, p, o);
        break;
      }
      case KvFormat::kUniformCols: {
        const auto* s = reinterpret_cast<const f16_t*>(r.rows + r.scales_off);
        const auto* z = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off);
        for (size_t c = 0; c < hd; ++c) o[c] = float(code_at(row, r.bits, c)) * f16_to_f32(s[c]) + f16_to_f32(z[c]);
        break;
      }
      case KvFormat::kCodebookPc:
        for (size_t i = 0; i < hd; ++i) o[i] = r.levels[code_at(row, r.bits, i)] * r.ch_half[i] + r.ch_zero[i];
        break;
      case KvFormat::kCodebookRow: {
        const uint8_t* at = r.rows + r.norm_off + size_t(t) * r.meta_stride;
        NormF f;
        if (r.norm8) {
          NormParams8 p8;
          std::memcpy(&p8, at, sizeof p8);
          f = norm_float(norm8_decode(p8));  // the fp16 NormParams it stands for
        } else {
          NormParams np;
          std::memcpy(&np, at, sizeof np);
          f = norm_float(np);
        }
        for (size_t i = 0; i < hd; ++i) o[i] = r.levels[code_at(row, r.bits, i)] * f.half + f.zero;
        break;
      }
    }
  }
  // KVQuant's sparse outliers add their stored corrections (x - dense) to the dense values (§3.4).
  if (r.out_ptr && (r.format == KvFormat::kCodebookPc || r.format == KvFormat::kCodebookRow)) apply_run_outliers(r, out);
}

}  // namespace ref
}  // namespace kvq
