// SPDX-License-Identifier: MIT
// ggml q8_0 / q4_0 blocks: references (from ggml-quants.c), checked API, Highway dispatch.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/ggml_blocks.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/ggml_blocks-inl.h"

#if HWY_ONCE
#include <algorithm>
#include <cmath>

#include "base/check.h"
#include "quant/ggml_blocks.h"

namespace kvq {

HWY_EXPORT(QuantizeRowQ8_0Simd);
HWY_EXPORT(QuantizeRowQ4_0Simd);
HWY_EXPORT(DequantizeRowQ8_0Simd);
HWY_EXPORT(DequantizeRowQ4_0Simd);
HWY_EXPORT(DotQ8_0Simd);
HWY_EXPORT(DotQ4_0Simd);

void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t k) {
  const int64_t nb = k / kQK8_0;
  for (int64_t i = 0; i < nb; i++) {
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; j++) amax = std::max(amax, std::fabs(x[i * kQK8_0 + j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK8_0; ++j) {
      const float x0 = x[i * kQK8_0 + j] * id;
      y[i].qs[j] = int8_t(std::round(x0));
    }
  }
}

void dequantize_row_q8_0_ref(const BlockQ8_0* x, float* y, int64_t k) {
  const int64_t nb = k / kQK8_0;
  for (int64_t i = 0; i < nb; i++) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[i * kQK8_0 + j] = x[i].qs[j] * d;
  }
}

void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t k) {
  const int qk = kQK4_0;
  const int64_t nb = k / qk;
  for (int64_t i = 0; i < nb; i++) {
    float amax = 0.0f;  // absolute max
    float max = 0.0f;
    for (int j = 0; j < qk; j++) {
      const float v = x[i * qk + j];
      if (amax < std::fabs(v)) {
        amax = std::fabs(v);
        max = v;
      }
    }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < qk / 2; ++j) {
      const float x0 = x[i * qk + 0 + j] * id;
      const float x1 = x[i * qk + qk / 2 + j] * id;
      const uint8_t xi0 = uint8_t(std::min(15, int(int8_t(x0 + 8.5f))));
      const uint8_t xi1 = uint8_t(std::min(15, int(int8_t(x1 + 8.5f))));
      y[i].qs[j] = xi0;
      y[i].qs[j] |= uint8_t(xi1 << 4);
    }
  }
}

void dequantize_row_q4_0_ref(const BlockQ4_0* x, float* y, int64_t k) {
  const int qk = kQK4_0;
  const int64_t nb = k / qk;
  for (int64_t i = 0; i < nb; i++) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < qk / 2; ++j) {
      const int x0 = (x[i].qs[j] & 0x0F) - 8;
      const int x1 = (x[i].qs[j] >> 4) - 8;
      y[i * qk + j + 0] = x0 * d;
      y[i * qk + j + qk / 2] = x1 * d;
    }
  }
}

namespace {
Status check_row(const float* x, int64_t k, const void* y) {
  if (k <= 0 || k % 32 != 0) return invalid_argument("ggml blocks: k must be a positive multiple of 32");
  if (!y) return invalid_argument("ggml blocks: null output");
  return check_finite(x, size_t(k), "ggml block input");
}
}  // namespace

Status quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t k, KernelPath path) {
  KVQ_RETURN_IF_ERROR(check_row(x, k, y));
  if (path == KernelPath::kRef) {
    quantize_row_q8_0_ref(x, y, k);
  } else {
    HWY_DYNAMIC_DISPATCH(QuantizeRowQ8_0Simd)(x, y, k);
  }
  return ok_status();
}

Status quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t k, KernelPath path) {
  KVQ_RETURN_IF_ERROR(check_row(x, k, y));
  if (path == KernelPath::kRef) {
    quantize_row_q4_0_ref(x, y, k);
  } else {
    HWY_DYNAMIC_DISPATCH(QuantizeRowQ4_0Simd)(x, y, k);
  }
  return ok_status();
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t k, KernelPath path) {
  KVQ_CHECK(k % 32 == 0, "q8_0: k %lld", (long long)k);
  if (path == KernelPath::kRef) return dequantize_row_q8_0_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ8_0Simd)(x, y, k);
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t k, KernelPath path) {
  KVQ_CHECK(k % 32 == 0, "q4_0: k %lld", (long long)k);
  if (path == KernelPath::kRef) return dequantize_row_q4_0_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ4_0Simd)(x, y, k);
}

float dot_q8_0(const float* q, const BlockQ8_0* x, int64_t k, KernelPath path) {
  KVQ_CHECK(k % 32 == 0, "q8_0: k %lld", (long long)k);
  if (path == KernelPath::kRef) {
    double s = 0;
    for (int64_t i = 0; i < k; ++i) s += double(q[i]) * (x[i / 32].qs[i % 32] * f16_to_f32(x[i / 32].d));
    return float(s);
  }
  return HWY_DYNAMIC_DISPATCH(DotQ8_0Simd)(q, x, k);
}

float dot_q4_0(const float* q, const BlockQ4_0* x, int64_t k, KernelPath path) {
  KVQ_CHECK(k % 32 == 0, "q4_0: k %lld", (long long)k);
  if (path == KernelPath::kRef) {
    double s = 0;
    for (int64_t i = 0; i < k; ++i) {
      const BlockQ4_0& b = x[i / 32];
      const int j = int(i % 32);
      const int c = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
      s += double(q[i]) * ((c - 8) * f16_to_f32(b.d));
    }
    return float(s);
  }
  return HWY_DYNAMIC_DISPATCH(DotQ4_0Simd)(q, x, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
