// SPDX-License-Identifier: MIT
// Uniform min-max groups: scalar reference, checked entry points and Highway dispatch.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/uniform_group.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/uniform_group-inl.h"

#if HWY_ONCE
#include <algorithm>
#include <string>
#include <vector>

#include "base/check.h"
#include "quant/uniform_group.h"
#include "quant/uniform_group_math.h"

namespace kvq {

HWY_EXPORT(QuantizeUniformRowSimd);
HWY_EXPORT(DequantizeUniformRowSimd);
HWY_EXPORT(DotUniformRowSimd);
HWY_EXPORT(AxpyUniformRowSimd);
HWY_EXPORT(QuantizeUniformColsSimd);
HWY_EXPORT(DequantizeUniformColsSimd);
HWY_EXPORT(DotUniformColsSimd);

namespace {

size_t group_len(const UniformParams& p, size_t n) {
  return p.group_size > 0 ? size_t(p.group_size) : n;
}

detail::UniformGroupQ stored_q(const UniformParams& p, const f16_t* scales, const f16_t* zeros,
                               size_t gi) {
  return detail::uniform_group_q_stored(p.bits, p.symmetric, scales[gi],
                                        p.symmetric ? f16_t(0) : zeros[gi]);
}

Status check_params(const UniformParams& p) {
  if (!is_packable_bits(p.bits)) {
    return invalid_argument("uniform: bits must be 2, 3, 4 or 8, got " + std::to_string(p.bits));
  }
  if (p.group_size < 0) return invalid_argument("uniform: negative group size");
  return ok_status();
}

void check_read_params(const UniformParams& p) {
  KVQ_CHECK(is_packable_bits(p.bits) && p.group_size >= 0, "uniform: bad params (bits %d)",
            p.bits);
}

}  // namespace

// ---------------------------------------------------------------- reference

void quantize_uniform_row_ref(const float* x, size_t n, const UniformParams& p, uint8_t* codes,
                              f16_t* scales, f16_t* zeros) {
  const size_t G = group_len(p, n);
  std::vector<uint8_t> c(n);
  f16_t unused_zero;
  for (size_t g0 = 0, gi = 0; g0 < n; g0 += G, ++gi) {
    const size_t g1 = std::min(n, g0 + G);
    float mn = x[g0], mx = x[g0];
    for (size_t i = g0; i < g1; ++i) {
      mn = std::min(mn, x[i]);
      mx = std::max(mx, x[i]);
    }
    const auto g = detail::uniform_group_q(p.bits, p.symmetric, mn, mx, &scales[gi],
                                           p.symmetric ? &unused_zero : &zeros[gi]);
    for (size_t i = g0; i < g1; ++i) c[i] = detail::uniform_code(x[i], g);
  }
  pack_codes_ref(p.bits, c.data(), n, codes);
}

void dequantize_uniform_row_ref(const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                                size_t n, const UniformParams& p, float* out) {
  const size_t G = group_len(p, n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = detail::uniform_value(code_at(codes, p.bits, i), stored_q(p, scales, zeros, i / G));
  }
}

void quantize_uniform_cols_ref(const float* x, size_t n_rows, size_t n_cols, size_t ld,
                               int bits, uint8_t* codes, f16_t* scales, f16_t* zeros) {
  const size_t row_bytes = packed_bytes(bits, n_cols);
  std::vector<uint8_t> c(n_rows * n_cols);
  for (size_t col = 0; col < n_cols; ++col) {
    float mn = x[col], mx = x[col];
    for (size_t t = 0; t < n_rows; ++t) {
      mn = std::min(mn, x[t * ld + col]);
      mx = std::max(mx, x[t * ld + col]);
    }
    const auto g = detail::uniform_group_q(bits, false, mn, mx, &scales[col], &zeros[col]);
    for (size_t t = 0; t < n_rows; ++t) c[t * n_cols + col] = detail::uniform_code(x[t * ld + col], g);
  }
  for (size_t t = 0; t < n_rows; ++t) pack_codes_ref(bits, &c[t * n_cols], n_cols, codes + t * row_bytes);
}

namespace {

void dequantize_cols_ref(const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                         size_t n_rows, size_t n_cols, int bits, float* out, size_t ldo) {
  const size_t row_bytes = packed_bytes(bits, n_cols);
  for (size_t t = 0; t < n_rows; ++t) {
    for (size_t c = 0; c < n_cols; ++c) {
      out[t * ldo + c] =
          float(code_at(codes + t * row_bytes, bits, c)) * f16_to_f32(scales[c]) + f16_to_f32(zeros[c]);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- checked entry points

Status quantize_uniform_row(const float* x, size_t n, const UniformParams& p, uint8_t* codes,
                            f16_t* scales, f16_t* zeros, KernelPath path) {
  KVQ_RETURN_IF_ERROR(check_params(p));
  if (n > 0 && (!codes || !scales || (!p.symmetric && !zeros))) {
    return invalid_argument("uniform: null output pointer");
  }
  KVQ_RETURN_IF_ERROR(check_finite(x, n, "uniform input", /*f16_range=*/true));
  if (n == 0) return ok_status();
  if (path == KernelPath::kRef) {
    quantize_uniform_row_ref(x, n, p, codes, scales, zeros);
  } else {
    HWY_DYNAMIC_DISPATCH(QuantizeUniformRowSimd)(x, n, p, codes, scales, zeros);
  }
  return ok_status();
}

Status quantize_uniform_rows(ThreadPool* pool, const float* x, size_t n_rows, size_t n,
                             size_t ld, const UniformParams& p, uint8_t* codes,
                             size_t codes_stride, f16_t* scales, f16_t* zeros,
                             KernelPath path) {
  KVQ_RETURN_IF_ERROR(check_params(p));
  if (codes_stride < packed_bytes(p.bits, n) || ld < n) {
    return invalid_argument("uniform rows: stride smaller than a row");
  }
  KVQ_RETURN_IF_ERROR(check_finite_block(x, n_rows, n, ld, "uniform input", true));
  const size_t ng = uniform_group_count(n, p.group_size);
  auto row = [&](int64_t r, int) {
    const float* xr = x + size_t(r) * ld;
    uint8_t* cr = codes + size_t(r) * codes_stride;
    f16_t* zr = p.symmetric ? nullptr : zeros + size_t(r) * ng;
    if (path == KernelPath::kRef) {
      quantize_uniform_row_ref(xr, n, p, cr, scales + size_t(r) * ng, zr);
    } else {
      HWY_DYNAMIC_DISPATCH(QuantizeUniformRowSimd)(xr, n, p, cr, scales + size_t(r) * ng, zr);
    }
  };
  if (n == 0) return ok_status();
  if (pool) {
    pool->parallel_for(int64_t(n_rows), row);
  } else {
    for (size_t r = 0; r < n_rows; ++r) row(int64_t(r), 0);
  }
  return ok_status();
}

void dequantize_uniform_row(const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                            size_t n, const UniformParams& p, float* out, KernelPath path) {
  check_read_params(p);
  if (path == KernelPath::kRef) return dequantize_uniform_row_ref(codes, scales, zeros, n, p, out);
  HWY_DYNAMIC_DISPATCH(DequantizeUniformRowSimd)(codes, scales, zeros, n, p, out);
}

float dot_uniform_row(const float* q, const uint8_t* codes, const f16_t* scales,
                      const f16_t* zeros, size_t n, const UniformParams& p, KernelPath path) {
  check_read_params(p);
  if (path == KernelPath::kRef) {
    const size_t G = group_len(p, n);
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      sum += double(q[i]) *
             detail::uniform_value(code_at(codes, p.bits, i), stored_q(p, scales, zeros, i / G));
    }
    return float(sum);
  }
  return HWY_DYNAMIC_DISPATCH(DotUniformRowSimd)(q, codes, scales, zeros, n, p);
}

void axpy_uniform_row(float a, const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                      size_t n, const UniformParams& p, float* y, KernelPath path) {
  check_read_params(p);
  if (path == KernelPath::kRef) {
    const size_t G = group_len(p, n);
    for (size_t i = 0; i < n; ++i) {
      y[i] += a * detail::uniform_value(code_at(codes, p.bits, i), stored_q(p, scales, zeros, i / G));
    }
    return;
  }
  HWY_DYNAMIC_DISPATCH(AxpyUniformRowSimd)(a, codes, scales, zeros, n, p, y);
}

Status quantize_uniform_cols(const float* x, size_t n_rows, size_t n_cols, size_t ld, int bits,
                             uint8_t* codes, f16_t* scales, f16_t* zeros, KernelPath path) {
  KVQ_RETURN_IF_ERROR(check_params(UniformParams{bits, 0, false}));
  if (n_rows == 0 || n_cols == 0) return invalid_argument("uniform cols: empty block");
  if (ld < n_cols) return invalid_argument("uniform cols: ld < n_cols");
  if (!codes || !scales || !zeros) return invalid_argument("uniform cols: null output pointer");
  KVQ_RETURN_IF_ERROR(check_finite_block(x, n_rows, n_cols, ld, "uniform cols input", true));
  if (path == KernelPath::kRef) {
    quantize_uniform_cols_ref(x, n_rows, n_cols, ld, bits, codes, scales, zeros);
  } else {
    HWY_DYNAMIC_DISPATCH(QuantizeUniformColsSimd)(x, n_rows, n_cols, ld, bits, codes, scales, zeros);
  }
  return ok_status();
}

void dequantize_uniform_cols(const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                             size_t n_rows, size_t n_cols, int bits, float* out, size_t ldo,
                             KernelPath path) {
  KVQ_CHECK(is_packable_bits(bits) && ldo >= n_cols, "uniform cols: bad params");
  if (path == KernelPath::kRef) {
    return dequantize_cols_ref(codes, scales, zeros, n_rows, n_cols, bits, out, ldo);
  }
  HWY_DYNAMIC_DISPATCH(DequantizeUniformColsSimd)(codes, scales, zeros, n_rows, n_cols, bits, out, ldo);
}

void dot_uniform_cols(const float* q, const uint8_t* codes, const f16_t* scales,
                      const f16_t* zeros, size_t n_rows, size_t n_cols, int bits, float* scores,
                      KernelPath path) {
  KVQ_CHECK(is_packable_bits(bits), "uniform cols: bad bits %d", bits);
  if (path == KernelPath::kRef) {
    const size_t row_bytes = packed_bytes(bits, n_cols);
    for (size_t t = 0; t < n_rows; ++t) {
      double sum = 0.0;
      for (size_t c = 0; c < n_cols; ++c) {
        const float v = float(code_at(codes + t * row_bytes, bits, c)) * f16_to_f32(scales[c]) +
                        f16_to_f32(zeros[c]);
        sum += double(q[c]) * v;
      }
      scores[t] = float(sum);
    }
    return;
  }
  HWY_DYNAMIC_DISPATCH(DotUniformColsSimd)(q, codes, scales, zeros, n_rows, n_cols, bits, scores);
}

}  // namespace kvq
#endif  // HWY_ONCE
