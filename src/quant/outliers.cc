// SPDX-License-Identifier: MIT
// Dense-and-sparse outliers (KVQuant §3.4): selection, encode, reconstruction, sparse rows.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/outliers.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/uniform_group-inl.h"  // MinMaxSpan

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The first i in [0, n) with x[i] > hi or x[i] <= lo (a NaN is neither), or n: the selection's
// scan for the next value that can enter a list, a vector of values per test.
size_t FirstOutsideSimd(const float* HWY_RESTRICT x, size_t n, float hi, float lo) {
  const hn::ScalableTag<float> d;
  const size_t kN = hn::Lanes(d);
  const auto vh = hn::Set(d, hi);
  const auto vl = hn::Set(d, lo);
  size_t i = 0;
  for (; i + kN <= n; i += kN) {
    const auto v = hn::LoadU(d, x + i);
    const intptr_t f = hn::FindFirstTrue(d, hn::Or(hn::Gt(v, vh), hn::Le(v, vl)));
    if (f >= 0) return i + size_t(f);
  }
  for (; i < n; ++i) {
    if (x[i] > hi || x[i] <= lo) return i;
  }
  return n;
}

// The first i in [0, n) with x[i] > upper[i] or x[i] < lower[i], or n: per-channel selection's
// scan (~1% of a key row's values are outside their channel's thresholds).
size_t FirstChannelOutsideSimd(const float* HWY_RESTRICT x, const float* HWY_RESTRICT upper,
                               const float* HWY_RESTRICT lower, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t kN = hn::Lanes(d);
  size_t i = 0;
  for (; i + kN <= n; i += kN) {
    const auto v = hn::LoadU(d, x + i);
    const auto out = hn::Or(hn::Gt(v, hn::LoadU(d, upper + i)), hn::Lt(v, hn::LoadU(d, lower + i)));
    const intptr_t f = hn::FindFirstTrue(d, out);
    if (f >= 0) return i + size_t(f);
  }
  for (; i < n; ++i) {
    if (x[i] > upper[i] || x[i] < lower[i]) return i;
  }
  return n;
}

// hi[c], lo[c]: the largest and smallest of x[c * s, (c + 1) * s) for c < n_chunks.
void ChunkExtremesSimd(const float* HWY_RESTRICT x, size_t n_chunks, size_t s, float* HWY_RESTRICT hi,
                       float* HWY_RESTRICT lo) {
  for (size_t c = 0; c < n_chunks; ++c) MinMaxSpan(x + c * s, s, lo[c], hi[c]);
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "base/check.h"
#include "quant/bitpack.h"
#include "quant/outliers.h"

namespace kvq {

HWY_EXPORT(FirstOutsideSimd);
HWY_EXPORT(ChunkExtremesSimd);
HWY_EXPORT(FirstChannelOutsideSimd);

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

// Whether a is a better candidate than b (indices are distinct, so the order is total).
// kTop: the larger value, ties to the lower (earlier) index.
// !kTop: the smaller value, ties to the higher (later) index (the reverse order).
template <bool kTop>
bool better(Cand a, Cand b) {
  if (a.x != b.x) return kTop ? a.x > b.x : a.x < b.x;
  return kTop ? a.i < b.i : a.i > b.i;
}

// Keeps the m best candidates seen so far in a heap whose root h[0] is the worst of them (each
// parent worse than its children): a better candidate replaces the root and sinks, ~log2 m
// moves where a sorted list shifted ~m/2 (at d = 4096 and 1%, m = 22).
template <bool kTop>
void offer(Cand* h, size_t& size, size_t m, Cand c) {
  if (size < m) {
    size_t p = size++;
    while (p > 0 && better<kTop>(h[(p - 1) / 2], c)) {
      h[p] = h[(p - 1) / 2];
      p = (p - 1) / 2;
    }
    h[p] = c;
    return;
  }
  if (!better<kTop>(c, h[0])) return;
  size_t p = 0;
  for (size_t l = 1; l < m; l = 2 * p + 1) {
    const size_t w = l + 1 < m && better<kTop>(h[l], h[l + 1]) ? l + 1 : l;  // the worse child
    if (!better<kTop>(c, h[w])) break;
    h[p] = h[w];
    p = w;
  }
  h[p] = c;
}

// top and bottom: the heaps of each side's k + 1 best. The root is the (k + 1)-th, the inlier
// range's end; the other k are the outliers.
void finish(const Cand* top, const Cand* bottom, size_t k, uint16_t* idx, float* upper, float* lower) {
  for (size_t j = 0; j < k; ++j) {
    idx[j] = uint16_t(top[j + 1].i);
    idx[k + j] = uint16_t(bottom[j + 1].i);
  }
  std::sort(idx, idx + 2 * k);
  *upper = top[0].x;
  *lower = bottom[0].x;
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
  // Bounds first, where the row has at least m whole chunks of 64 values (d = 4096 at 1%: 64
  // chunks, m = 22): t_hi, the m-th largest chunk maximum, has m values >= it, so no value below
  // it is among the m largest; likewise no value above t_lo among the m smallest. The scan below
  // then takes only values outside (t_hi, t_lo) and the heaps' extremes: ~30 a side at d = 4096
  // and 1%, where the heaps alone took ~140 (each entry a few mispredicted branches: most of a
  // KVQuant value row's quantize).
  float hi_bound = -std::numeric_limits<float>::infinity();  // values <= it cannot be in the top
  float lo_bound = std::numeric_limits<float>::infinity();   // values > it cannot be in the bottom
  constexpr size_t kChunk = 64;
  if (const size_t n_chunks = n / kChunk; n_chunks >= m && n_chunks <= 1024) {
    float hi[1024], lo[1024];
    HWY_DYNAMIC_DISPATCH(ChunkExtremesSimd)(x, n_chunks, kChunk, hi, lo);
    std::nth_element(hi, hi + (n_chunks - m), hi + n_chunks);
    std::nth_element(lo, lo + (m - 1), lo + n_chunks);
    hi_bound = std::nextafter(hi[n_chunks - m], -std::numeric_limits<float>::infinity());
    lo_bound = lo[m - 1];
  }
  // Everything the heaps are offered is offered to both (a value the top heap takes below
  // t_hi is outdone by m others before the end), so the heaps end with the m best of a set that
  // holds every value that can be among them: the same choice as offering all n values.
  size_t nt = 0, nb = 0;
  for (size_t i = 0; i < n;) {
    // The values a vector at a time up to the next that either heap may take: the extremes
    // move only when a value is taken.
    const float hi = nt == m ? std::max(hi_bound, top[0].x) : hi_bound;
    const float lo = nb == m ? std::min(lo_bound, bottom[0].x) : lo_bound;
    i += HWY_DYNAMIC_DISPATCH(FirstOutsideSimd)(x + i, n - i, hi, lo);
    if (i == n) break;
    offer<true>(top, nt, m, Cand{x[i], uint32_t(i)});
    offer<false>(bottom, nb, m, Cand{x[i], uint32_t(i)});
    ++i;
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
    i += HWY_DYNAMIC_DISPATCH(FirstChannelOutsideSimd)(x + i, upper + i, lower + i, n - i);
    if (i < n) idx[count++] = uint16_t(i);
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
#endif  // HWY_ONCE
