// SPDX-License-Identifier: MIT
// Codebook formats: NF signposts, scalar reference, checked entry points, Highway dispatch.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/codebook.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/codebook-inl.h"

#if HWY_ONCE
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/check.h"
#include "quant/bitpack.h"
#include "quant/codebook.h"

namespace kvq {

HWY_EXPORT(EncodeCodebookRowSimd);
HWY_EXPORT(EncodeCodebookRowPcSimd);
HWY_EXPORT(DecodeCodebookRowSimd);
HWY_EXPORT(AxpyCodebookRowSimd);
HWY_EXPORT(DecodeCodebookRowPcSimd);
HWY_EXPORT(DotCodebookRowPcSimd);

namespace {

Codebook from_sorted(int bits, const float* sorted) {
  Codebook cb;
  cb.bits = bits;
  for (int j = 0; j < cb.size(); ++j) cb.values[j] = sorted[j];
  for (int j = 0; j + 1 < cb.size(); ++j) cb.thresholds[j] = (sorted[j] + sorted[j + 1]) * 0.5f;
  return cb;
}

bool valid_bits(int bits) { return bits >= 2 && bits <= 4; }

void check_cb(const Codebook& cb) { KVQ_CHECK(valid_bits(cb.bits), "codebook: bits %d", cb.bits); }

// lut[j] = h * c_j + z: the per-token decode table (same float ops as the reference).
void make_lut(const Codebook& cb, NormParams norm, float* lut) {
  const NormF f = norm_float(norm);
  for (int j = 0; j < 16; ++j) lut[j] = j < cb.size() ? cb.values[j] * f.half + f.zero : 0.0f;
}

}  // namespace

double normal_quantile(double p) {
  if (p <= 0.0) return -INFINITY;
  if (p >= 1.0) return INFINITY;
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                             -2.759285104469687e+02, 1.383577518672690e+02,
                             -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                             -1.556989798598866e+02, 6.680131188771972e+01,
                             -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                             -2.400758277161838e+00, -2.549732539343734e+00,
                             4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                             2.445134137142996e+00, 3.754408661907416e+00};
  const double p_low = 0.02425;
  double x;
  if (p < p_low || p > 1 - p_low) {
    const double q = std::sqrt(-2 * std::log(p < p_low ? p : 1 - p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    if (p > 1 - p_low) x = -x;
  } else {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  // One Halley step on Phi(x) - p (Acklam's refinement): relative error ~1e-15.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

StatusOr<Codebook> make_codebook(int bits, std::span<const float> centroids) {
  if (!valid_bits(bits)) return invalid_argument("codebook: bits must be 2, 3 or 4");
  if (centroids.size() != size_t(1) << bits) {
    return invalid_argument("codebook: expected " + std::to_string(1 << bits) + " centroids, got " +
                            std::to_string(centroids.size()));
  }
  KVQ_RETURN_IF_ERROR(check_finite(centroids.data(), centroids.size(), "codebook centroids"));
  std::vector<float> s(centroids.begin(), centroids.end());
  std::sort(s.begin(), s.end());
  for (size_t j = 1; j < s.size(); ++j) {
    if (!(s[j] > s[j - 1])) return invalid_argument("codebook: duplicate centroids");
  }
  return from_sorted(bits, s.data());
}

Codebook make_nf_codebook(int bits) {
  KVQ_CHECK(valid_bits(bits), "nf: bits %d", bits);
  const double p0 = 0.5 * (1.0 / 32 + 1.0 / 30);
  const int half = 1 << (bits - 1);
  std::vector<double> lv;
  // Negative half: `half` quantiles on linspace(p0, 0.5), scaled so the first is -1.
  const double neg_end = normal_quantile(p0);
  for (int i = 0; i < half; ++i) {
    const double p = p0 + (0.5 - p0) * i / (half - 1);
    lv.push_back(i == half - 1 ? 0.0 : normal_quantile(p) / -neg_end);
  }
  // Positive half: half + 1 quantiles on linspace(0.5, 1 - p0), first (0) dropped.
  const double pos_end = normal_quantile(1 - p0);
  for (int i = 1; i <= half; ++i) {
    const double p = 0.5 + (0.5 - p0) * i / half;
    lv.push_back(i == half ? 1.0 : normal_quantile(p) / pos_end);
  }
  std::vector<float> f(lv.begin(), lv.end());
  return from_sorted(bits, f.data());
}

// ---------------------------------------------------------------- per token

void encode_codebook_row_ref(const float* x, size_t n, NormParams norm, const Codebook& cb,
                             uint8_t* codes) {
  const NormF f = norm_float(norm);
  std::vector<uint8_t> c(n);
  for (size_t i = 0; i < n; ++i) c[i] = codebook_encode((x[i] - f.zero) * f.inv, cb);
  pack_codes_ref(cb.bits, c.data(), n, codes);
}

Status encode_codebook_row(const float* x, size_t n, NormParams norm, const Codebook& cb,
                           uint8_t* codes, KernelPath path) {
  if (!valid_bits(cb.bits)) return invalid_argument("codebook: bits must be 2, 3 or 4");
  if (n > 0 && !codes) return invalid_argument("codebook: null output");
  KVQ_RETURN_IF_ERROR(check_finite(x, n, "codebook input"));
  if (n == 0) return ok_status();
  if (path == KernelPath::kRef) {
    encode_codebook_row_ref(x, n, norm, cb, codes);
  } else {
    const NormF f = norm_float(norm);
    HWY_DYNAMIC_DISPATCH(EncodeCodebookRowSimd)(x, n, f.zero, f.inv, cb.thresholds.data(), cb.bits, codes);
  }
  return ok_status();
}

void decode_codebook_row(const uint8_t* codes, size_t n, NormParams norm, const Codebook& cb,
                         float* out, KernelPath path) {
  check_cb(cb);
  alignas(64) float lut[16];
  make_lut(cb, norm, lut);
  if (path == KernelPath::kRef) {
    const NormF f = norm_float(norm);
    for (size_t i = 0; i < n; ++i) out[i] = cb.values[code_at(codes, cb.bits, i)] * f.half + f.zero;
    return;
  }
  HWY_DYNAMIC_DISPATCH(DecodeCodebookRowSimd)(codes, n, lut, cb.bits, out);
}

void axpy_codebook_row(float a, const uint8_t* codes, size_t n, NormParams norm,
                       const Codebook& cb, float* y, KernelPath path) {
  check_cb(cb);
  alignas(64) float lut[16];
  make_lut(cb, norm, lut);
  for (float& v : lut) v *= a;
  if (path == KernelPath::kRef) {
    const NormF f = norm_float(norm);
    for (size_t i = 0; i < n; ++i) y[i] += a * (cb.values[code_at(codes, cb.bits, i)] * f.half + f.zero);
    return;
  }
  HWY_DYNAMIC_DISPATCH(AxpyCodebookRowSimd)(codes, n, lut, cb.bits, y);
}

// ---------------------------------------------------------------- per channel

void encode_codebook_row_pc_ref(const float* x, size_t n, const ChannelNorm& norm,
                                const Codebook& cb, uint8_t* codes) {
  std::vector<uint8_t> c(n);
  for (size_t i = 0; i < n; ++i) c[i] = codebook_encode((x[i] - norm.zero_f[i]) * norm.inv_f[i], cb);
  pack_codes_ref(cb.bits, c.data(), n, codes);
}

Status encode_codebook_row_pc(const float* x, size_t n, const ChannelNorm& norm,
                              const Codebook& cb, uint8_t* codes, KernelPath path) {
  if (!valid_bits(cb.bits)) return invalid_argument("codebook: bits must be 2, 3 or 4");
  if (norm.size() != n) return invalid_argument("codebook: channel norm size != n");
  if (n > 0 && !codes) return invalid_argument("codebook: null output");
  KVQ_RETURN_IF_ERROR(check_finite(x, n, "codebook input"));
  if (n == 0) return ok_status();
  if (path == KernelPath::kRef) {
    encode_codebook_row_pc_ref(x, n, norm, cb, codes);
  } else {
    HWY_DYNAMIC_DISPATCH(EncodeCodebookRowPcSimd)(x, n, norm.zero_f.data(), norm.inv_f.data(),
                                                  cb.thresholds.data(), cb.bits, codes);
  }
  return ok_status();
}

void decode_codebook_row_pc(const uint8_t* codes, size_t n, const ChannelNorm& norm,
                            const Codebook& cb, float* out, KernelPath path) {
  check_cb(cb);
  KVQ_CHECK(norm.size() == n, "codebook: channel norm size %zu != n %zu", norm.size(), n);
  if (path == KernelPath::kRef) {
    for (size_t i = 0; i < n; ++i) {
      out[i] = cb.values[code_at(codes, cb.bits, i)] * norm.half_f[i] + norm.zero_f[i];
    }
    return;
  }
  HWY_DYNAMIC_DISPATCH(DecodeCodebookRowPcSimd)(codes, n, cb.values.data(), norm.half_f.data(),
                                                norm.zero_f.data(), cb.bits, out);
}

void prepare_codebook_query_pc(const float* q, size_t n, const ChannelNorm& norm, float* w,
                               float* bias) {
  KVQ_CHECK(norm.size() == n, "codebook: channel norm size %zu != n %zu", norm.size(), n);
  double b = 0.0;
  for (size_t i = 0; i < n; ++i) {
    w[i] = q[i] * norm.half_f[i];
    b += double(q[i]) * norm.zero_f[i];
  }
  *bias = float(b);
}

float dot_codebook_row_pc(const float* w, float bias, const uint8_t* codes, size_t n,
                          const Codebook& cb, KernelPath path) {
  check_cb(cb);
  if (path == KernelPath::kRef) {
    double sum = bias;
    for (size_t i = 0; i < n; ++i) sum += double(w[i]) * cb.values[code_at(codes, cb.bits, i)];
    return float(sum);
  }
  return HWY_DYNAMIC_DISPATCH(DotCodebookRowPcSimd)(w, bias, codes, n, cb.values.data(), cb.bits);
}

}  // namespace kvq
#endif  // HWY_ONCE
