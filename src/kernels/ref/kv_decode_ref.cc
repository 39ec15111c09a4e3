// SPDX-License-Identifier: MIT
#include "kernels/ref/kv_decode_ref.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "kernels/ref/ops_ref.h"
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
namespace {

// out_i += sum_t p_it x'_t in floats: the decoded rows, one axpy per token.
void decode_axpy_ref(const KvRun& r, const float* p, int n_q, size_t ld, float* out) {
  const size_t hd = size_t(r.head_dim);
  std::vector<float> x(static_cast<size_t>(r.n) * hd);
  decode_run_ref(r, x.data());
  for (int i = 0; i < n_q; ++i) {
    for (int t = 0; t < r.n; ++t) axpy_ref(p[size_t(i) * ld + size_t(t)], &x[size_t(t) * hd], out + size_t(i) * hd, int(hd));
  }
}

// The largest |x_j| of x [n] (*amax), when the values round to int8 steps of it: false, with
// every q zero and *amax NaN when a value is not finite, 0 when it is below kRoundedMaxFloor.
bool rounded_max_abs(const float* x, int n, int8_t* q, float* amax) {
  float m = 0.0f;
  bool finite = true;
  for (int j = 0; j < n; ++j) {
    finite = finite && std::isfinite(x[j]);
    m = std::max(m, std::fabs(x[j]));
  }
  *amax = m;
  if (finite && m >= kRoundedMaxFloor) return true;
  std::fill(q, q + n, int8_t(0));
  *amax = finite ? 0.0f : NAN;
  return false;
}

}  // namespace

NormF run_norm_ref(const KvRun& r, int t) {
  const uint8_t* at = r.rows + r.norm_off + size_t(t) * r.meta_stride;
  if (r.norm8) {
    NormParams8 p8;
    std::memcpy(&p8, at, sizeof p8);
    return norm_float(norm8_decode(p8));  // the fp16 NormParams it stands for
  }
  NormParams np;
  std::memcpy(&np, at, sizeof np);
  return norm_float(np);
}

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
        const NormF f = run_norm_ref(r, t);
        for (size_t i = 0; i < hd; ++i) o[i] = r.levels[code_at(row, r.bits, i)] * f.half + f.zero;
        break;
      }
    }
  }
  // KVQuant's sparse outliers add their stored corrections (x - dense) to the dense values (§3.4).
  if (r.out_ptr && (r.format == KvFormat::kCodebookPc || r.format == KvFormat::kCodebookRow)) apply_run_outliers(r, out);
}

float round_weighted_query_ref(const float* w, int n, int8_t* w8) {
  float amax;
  if (!rounded_max_abs(w, n, w8, &amax)) return amax;
  const float id = 127.0f / amax;
  for (int c = 0; c < n; ++c) w8[c] = int8_t(std::nearbyint(w[c] * id));
  return amax / 127.0f;
}

void uniform_cols_scores_ref(const KvRun& r, const float* q, int n_q, float scale, float* scores, size_t ld) {
  KVQ_CHECK(r.format == KvFormat::kUniformCols);
  const int hd = r.head_dim;
  const auto* s = reinterpret_cast<const f16_t*>(r.rows + r.scales_off);
  const auto* z = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off);
  std::vector<float> w(static_cast<size_t>(hd));
  std::vector<int8_t> w8(static_cast<size_t>(hd));
  for (int i = 0; i < n_q; ++i) {
    const float* qi = q + size_t(i) * size_t(hd);
    float bias = 0.0f;
    for (int c = 0; c < hd; ++c) {
      w[size_t(c)] = qi[c] * f16_to_f32(s[c]);
      bias += qi[c] * f16_to_f32(z[c]);
    }
    const float d = round_weighted_query_ref(w.data(), hd, w8.data());
    for (int t = 0; t < r.n; ++t) {
      const uint8_t* row = r.rows + size_t(t) * r.stride;
      int32_t sum = 0;
      for (int c = 0; c < hd; ++c) sum += int32_t(w8[size_t(c)]) * int32_t(code_at(row, r.bits, size_t(c)));
      scores[size_t(i) * ld + size_t(t)] = (d * float(sum) + bias) * scale;
    }
  }
}

void uniform_row_scores_ref(const KvRun& r, const float* q, int n_q, float scale, float* scores, size_t ld) {
  KVQ_CHECK(r.format == KvFormat::kUniformRow && key_query_in_integers(r));
  const int hd = r.head_dim;
  std::vector<int8_t> w8(static_cast<size_t>(hd));
  for (int i = 0; i < n_q; ++i) {
    const float* qi = q + size_t(i) * size_t(hd);
    float qsum = 0.0f;
    for (int c = 0; c < hd; ++c) qsum += qi[c];
    const float d = round_weighted_query_ref(qi, hd, w8.data());
    for (int t = 0; t < r.n; ++t) {
      const uint8_t* row = r.rows + size_t(t) * r.stride;
      const uint8_t* meta = r.rows + size_t(t) * r.meta_stride;
      const float st = f16_to_f32(reinterpret_cast<const f16_t*>(meta + r.scales_off)[0]);
      const float zt = f16_to_f32(reinterpret_cast<const f16_t*>(meta + r.zeros_off)[0]);
      int32_t sum = 0;
      for (int c = 0; c < hd; ++c) sum += int32_t(w8[size_t(c)]) * int32_t(code_at(row, r.bits, size_t(c)));
      scores[size_t(i) * ld + size_t(t)] = std::fma(d * float(sum), st, zt * qsum) * scale;
    }
  }
}

float round_weights_u8_ref(const float* w, int n, uint8_t* w8) {
  float wmax = 0.0f;
  bool finite = true;
  for (int j = 0; j < n; ++j) {
    finite = finite && std::isfinite(w[j]);
    wmax = std::max(wmax, w[j]);
  }
  if (!finite || !(wmax >= kRoundedMaxFloor)) {
    std::fill(w8, w8 + n, uint8_t(0));
    return finite ? 0.0f : NAN;
  }
  const float id = 255.0f / wmax;
  for (int j = 0; j < n; ++j) w8[j] = uint8_t(std::clamp(std::nearbyint(w[j] * id), 0.0f, 255.0f));
  return wmax / 255.0f;
}

void uniform_row_accumulate_ref(const KvRun& r, const float* p, int n_q, size_t ld, float* out) {
  KVQ_CHECK(r.format == KvFormat::kUniformRow);
  const size_t hd = size_t(r.head_dim), g = std::min(size_t(r.group), hd), n_groups = hd / g;
  if (!value_weights_in_integers(r)) return decode_axpy_ref(r, p, n_q, ld, out);
  std::vector<float> w(static_cast<size_t>(r.n) * n_groups), zsum(n_groups);
  std::vector<uint8_t> w8(w.size());
  for (int i = 0; i < n_q; ++i) {
    const float* pi = p + size_t(i) * ld;
    std::fill(zsum.begin(), zsum.end(), 0.0f);
    for (int t = 0; t < r.n; ++t) {
      const uint8_t* meta = r.rows + size_t(t) * r.meta_stride;
      for (size_t k = 0; k < n_groups; ++k) {
        const float sk = f16_to_f32(reinterpret_cast<const f16_t*>(meta + r.scales_off)[k]);
        const float zk = f16_to_f32(reinterpret_cast<const f16_t*>(meta + r.zeros_off)[k]);
        w[size_t(t) * n_groups + k] = pi[t] == 0.0f ? 0.0f : pi[t] * sk;
        if (pi[t] != 0.0f) zsum[k] += pi[t] * zk;
      }
    }
    const float d = round_weights_u8_ref(w.data(), int(w.size()), w8.data());
    float* o = out + size_t(i) * hd;
    for (size_t c = 0; c < hd; ++c) {
      int32_t sum = 0;
      for (int t = 0; t < r.n; ++t) {
        sum += int32_t(w8[size_t(t) * n_groups + c / g]) * int32_t(code_at(r.rows + size_t(t) * r.stride, r.bits, c));
      }
      o[c] += d * float(sum) + zsum[c / g];
    }
  }
}

float round_levels_ref(const float* levels, int n, int8_t* lq) {
  float lmax;
  if (!rounded_max_abs(levels, n, lq, &lmax)) return lmax;
  // The scale whose steps fit the levels best: s steps to lmax for s in [kLevelSteps / 2,
  // kLevelSteps], the least sum of squared rounding errors (in level units), the finest on a tie.
  int best = kLevelSteps;
  float best_err = INFINITY;
  for (int st = kLevelSteps; st >= kLevelSteps / 2; --st) {
    const float id = float(st) / lmax, step = lmax / float(st);
    float err = 0.0f;
    for (int j = 0; j < n; ++j) {
      const float e = (levels[j] * id - std::nearbyint(levels[j] * id)) * step;
      err += e * e;
    }
    if (err < best_err) {
      best_err = err;
      best = st;
    }
  }
  const float id = float(best) / lmax;
  for (int j = 0; j < n; ++j) lq[j] = int8_t(std::nearbyint(levels[j] * id));
  return lmax / float(best);
}

void codebook_row_accumulate_ref(const KvRun& r, const float* p, int n_q, size_t ld, float* out) {
  KVQ_CHECK(r.format == KvFormat::kCodebookRow);
  if (!value_weights_in_integers(r)) return decode_axpy_ref(r, p, n_q, ld, out);
  const size_t hd = size_t(r.head_dim);
  int8_t lq[4];
  const float lambda = round_levels_ref(r.levels, 4, lq);
  std::vector<float> a(static_cast<size_t>(r.n));
  std::vector<uint8_t> w8(a.size());
  for (int i = 0; i < n_q; ++i) {
    const float* pi = p + size_t(i) * ld;
    float zsum = 0.0f;
    for (int t = 0; t < r.n; ++t) {
      const NormF f = run_norm_ref(r, t);
      a[size_t(t)] = pi[t] == 0.0f ? 0.0f : pi[t] * f.half;
      if (pi[t] != 0.0f) zsum += pi[t] * f.zero;
    }
    const float dl = round_weights_u8_ref(a.data(), r.n, w8.data()) * lambda;
    float* o = out + size_t(i) * hd;
    for (size_t c = 0; c < hd; ++c) {
      int32_t sum = 0;
      for (int t = 0; t < r.n; ++t) sum += int32_t(w8[size_t(t)]) * int32_t(lq[code_at(r.rows + size_t(t) * r.stride, 2, c)]);
      o[c] += dl * float(sum);
    }
    // KVQuant's sparse outliers (§3.4) correct their channel by p_t (x - dense), in floats.
    if (r.out_ptr) for_each_run_outlier(r, [&](int t, size_t c, float v) { o[c] = std::fma(pi[t], v, o[c]); });
    for (size_t c = 0; c < hd; ++c) o[c] += zsum;
  }
}

}  // namespace ref
}  // namespace kvq
