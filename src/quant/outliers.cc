// SPDX-License-Identifier: MIT
// Dense-and-sparse outliers (KVQuant §3.4): selection, encode, reconstruction, sparse rows.
#include "quant/outliers.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "base/check.h"
#include "quant/bitpack.h"

namespace kvq {

size_t outliers_per_side(size_t n, double fraction) {
  if (n == 0 || fraction <= 0.0) return 0;
  const size_t k = size_t(std::ceil(double(n) * fraction / 2 - 1e-9));
  return std::min(k, (n - 1) / 2);
}

namespace {

struct Cand {
  float x;
  uint32_t i;
};

// Keeps the m best candidates seen so far, best first. Indices arrive in increasing order.
// kTop: best = larger value, ties to the lower (earlier) index.
// !kTop: best = smaller value, ties to the higher (later) index (the reverse order).
template <bool kTop>
void offer(Cand* best, size_t& size, size_t m, Cand c) {
  if (size == m) {
    const float last = best[m - 1].x;
    if (kTop ? !(c.x > last) : !(c.x <= last)) return;
  }
  // Insertion point: after every better element.
  size_t p = size < m ? size : m - 1;
  while (p > 0 && (kTop ? best[p - 1].x < c.x : best[p - 1].x >= c.x)) {
    if (p < m) best[p] = best[p - 1];
    --p;
  }
  // Shifting above moved elements one slot down; when full, the last one fell off.
  best[p] = c;
  if (size < m) ++size;
}

void finish(const Cand* top, const Cand* bottom, size_t k, uint16_t* idx, float* upper,
            float* lower) {
  for (size_t j = 0; j < k; ++j) {
    idx[j] = uint16_t(top[j].i);
    idx[k + j] = uint16_t(bottom[j].i);
  }
  std::sort(idx, idx + 2 * k);
  *upper = top[k].x;
  *lower = bottom[k].x;
}

}  // namespace

void select_token_outliers(const float* x, size_t n, size_t k, uint16_t* idx, float* upper,
                           float* lower) {
  KVQ_DCHECK(n >= 1 && 2 * k < n);
  const size_t m = k + 1;
  constexpr size_t kStack = 128;
  Cand top_s[kStack], bottom_s[kStack];
  std::vector<Cand> top_v, bottom_v;
  Cand* top = top_s;
  Cand* bottom = bottom_s;
  if (m > kStack) {
    top_v.resize(m);
    bottom_v.resize(m);
    top = top_v.data();
    bottom = bottom_v.data();
  }
  size_t nt = 0, nb = 0;
  for (size_t i = 0; i < n; ++i) {
    const Cand c{x[i], uint32_t(i)};
    // Cheap rejection first: most values are inside the current extremes.
    if (nt == m && nb == m && x[i] <= top[m - 1].x && x[i] > bottom[m - 1].x) continue;
    offer<true>(top, nt, m, c);
    offer<false>(bottom, nb, m, c);
  }
  finish(top, bottom, k, idx, upper, lower);
}

void select_token_outliers_ref(const float* x, size_t n, size_t k, uint16_t* idx, float* upper,
                               float* lower) {
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return x[a] > x[b] || (x[a] == x[b] && a < b);
  });
  for (size_t j = 0; j < k; ++j) {
    idx[j] = uint16_t(order[j]);
    idx[k + j] = uint16_t(order[n - 1 - j]);
  }
  std::sort(idx, idx + 2 * k);
  *upper = x[order[k]];
  *lower = x[order[n - 1 - k]];
}

size_t select_channel_outliers(const float* x, size_t n, const float* upper, const float* lower,
                               uint16_t* idx) {
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (x[i] > upper[i] || x[i] < lower[i]) idx[count++] = uint16_t(i);
  }
  return count;
}

Status quantize_dense_sparse_token(const float* x, size_t n, double fraction, const Codebook& cb,
                                   uint8_t* codes, NormParams* norm, uint16_t* idx, f16_t* val,
                                   size_t* n_outliers, KernelPath path, NormParams8* norm8) {
  if (n == 0 || n > 65536) return invalid_argument("dense-sparse: n must be in [1, 65536]");
  if (!(fraction >= 0.0 && fraction < 1.0)) return invalid_argument("dense-sparse: fraction not in [0, 1)");
  if (!codes || !norm || !n_outliers) return invalid_argument("dense-sparse: null output");
  KVQ_RETURN_IF_ERROR(check_finite(x, n, "dense-sparse token", true));
  const size_t k = outliers_per_side(n, fraction);
  if (k > 0 && (!idx || !val)) return invalid_argument("dense-sparse: null outlier output");
  float upper, lower;
  if (path == KernelPath::kRef) {
    select_token_outliers_ref(x, n, k, idx, &upper, &lower);
  } else {
    select_token_outliers(x, n, k, idx, &upper, &lower);
  }
  if (norm8) {
    KVQ_ASSIGN_OR_RETURN(*norm8, norm8_from_thresholds(upper, lower));
    *norm = norm8_decode(*norm8);
  } else {
    *norm = norm_from_thresholds(upper, lower);
  }
  KVQ_RETURN_IF_ERROR(encode_codebook_row(x, n, *norm, cb, codes, path));
  for (size_t j = 0; j < 2 * k; ++j) val[j] = f32_to_f16(x[idx[j]]);
  *n_outliers = 2 * k;
  return ok_status();
}

Status quantize_dense_sparse_channels(const float* x, size_t n, const ChannelNorm& norm,
                                      const Codebook& cb, uint8_t* codes, uint16_t* idx,
                                      f16_t* val, size_t* n_outliers, KernelPath path) {
  if (n == 0 || n > 65536) return invalid_argument("dense-sparse: n must be in [1, 65536]");
  if (norm.size() != n || norm.upper.size() != n) {
    return invalid_argument("dense-sparse: channel norm has " + std::to_string(norm.size()) +
                            " channels, input has " + std::to_string(n));
  }
  if (!codes || !idx || !val || !n_outliers) return invalid_argument("dense-sparse: null output");
  KVQ_RETURN_IF_ERROR(check_finite(x, n, "dense-sparse key", true));
  KVQ_RETURN_IF_ERROR(encode_codebook_row_pc(x, n, norm, cb, codes, path));
  const size_t count = select_channel_outliers(x, n, norm.upper.data(), norm.lower.data(), idx);
  for (size_t j = 0; j < count; ++j) val[j] = f32_to_f16(x[idx[j]]);
  *n_outliers = count;
  return ok_status();
}

void apply_outliers(const uint16_t* idx, const f16_t* val, size_t count, float* out) {
  for (size_t j = 0; j < count; ++j) out[idx[j]] = f16_to_f32(val[j]);
}

float outlier_dot_correction_pc(const float* q, const uint16_t* idx, const f16_t* val,
                                size_t count, const uint8_t* codes, const ChannelNorm& norm,
                                const Codebook& cb) {
  float sum = 0.0f;
  for (size_t j = 0; j < count; ++j) {
    const size_t c = idx[j];
    const float dense = cb.values[code_at(codes, cb.bits, c)] * norm.half_f[c] + norm.zero_f[c];
    sum += q[c] * (f16_to_f32(val[j]) - dense);
  }
  return sum;
}

void outlier_axpy_correction(float a, const uint16_t* idx, const f16_t* val, size_t count,
                             const uint8_t* codes, NormParams norm, const Codebook& cb,
                             float* y) {
  const NormF f = norm_float(norm);
  for (size_t j = 0; j < count; ++j) {
    const size_t c = idx[j];
    const float dense = cb.values[code_at(codes, cb.bits, c)] * f.half + f.zero;
    y[c] += a * (f16_to_f32(val[j]) - dense);
  }
}

void SparseRows::append_row(const uint16_t* idx, const f16_t* val, size_t count) {
  idx_.insert(idx_.end(), idx, idx + count);
  val_.insert(val_.end(), val, val + count);
  row_ptr_.push_back(uint32_t(idx_.size()));
}

void SparseRows::truncate(size_t n_rows) {
  if (n_rows >= this->n_rows()) return;
  row_ptr_.resize(n_rows + 1);
  idx_.resize(row_ptr_.back());
  val_.resize(row_ptr_.back());
}

std::span<const uint16_t> SparseRows::idx(size_t row) const {
  return {idx_.data() + row_ptr_[row], row_ptr_[row + 1] - row_ptr_[row]};
}

std::span<const f16_t> SparseRows::val(size_t row) const {
  return {val_.data() + row_ptr_[row], row_ptr_[row + 1] - row_ptr_[row]};
}

}  // namespace kvq
