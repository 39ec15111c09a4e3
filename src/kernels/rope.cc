// SPDX-License-Identifier: MIT
#include "kernels/rope.h"

#include <cmath>
#include <utility>

#include "base/check.h"

namespace kvq {

namespace {
// The first dim of pair i: 2i for adjacent pairs (step 1), i for neox halves.
int pair_first(int i, int step) { return step == 1 ? 2 * i : i; }
}  // namespace

Rope::Rope(int head_dim, int rope_dim, float freq_base, RopeMode mode, std::vector<float> freq_factors)
    : head_dim_(head_dim), rope_dim_(rope_dim), freq_base_(freq_base), mode_(mode),
      freq_factors_(std::move(freq_factors)) {
  KVQ_CHECK(rope_dim > 0 && rope_dim % 2 == 0 && rope_dim <= head_dim, "bad rope_dim %d", rope_dim);
  const int half = rope_dim / 2;
  KVQ_CHECK(freq_factors_.empty() || freq_factors_.size() == size_t(half), "%zu freq factors for rope_dim %d",
            freq_factors_.size(), rope_dim);
  for (int i = 0; i < half; ++i) {
    const double ff = freq_factors_.empty() ? 1.0 : double(freq_factors_[size_t(i)]);
    KVQ_CHECK(ff > 0.0, "freq factor %d is not positive", i);
    inv_freq_.push_back(std::pow(double(freq_base), -2.0 * i / rope_dim) / ff);
  }
  const int step = pair_stride();
  offsets_.resize(size_t(kOffsets) * size_t(rope_dim));
  for (int j = 0; j < kOffsets; ++j) angles(j, &offsets_[size_t(j) * size_t(rope_dim)]);
  keys_.assign(size_t(kKeyOffsets) * 2 * size_t(head_dim), 0.0f);
  for (int j = 0; j < kKeyOffsets; ++j) {
    float* c = &keys_[size_t(j) * 2 * size_t(head_dim)];
    float* s = c + head_dim;
    for (int d = 0; d < head_dim; ++d) c[d] = 1.0f;
    for (int i = 0; i < half; ++i) {
      const int a = pair_first(i, step);
      c[a] = c[a + step] = offset(j)[2 * i];
      s[a] = -offset(j)[2 * i + 1];
      s[a + step] = offset(j)[2 * i + 1];
    }
  }
  const size_t n_pairs = size_t(head_dim) / 2;
  pairs_.assign(size_t(kKeyOffsets) * 2 * n_pairs, 0.0f);
  for (int j = 0; j < kKeyOffsets; ++j) {
    float* c = &pairs_[size_t(j) * 2 * n_pairs];
    for (size_t i = 0; i < n_pairs; ++i) c[i] = 1.0f;
    for (int i = 0; i < half; ++i) {
      c[i] = offset(j)[2 * i];
      c[n_pairs + size_t(i)] = offset(j)[2 * i + 1];
    }
  }
  lanes_.resize(pairs_.size());
  for (int j = 0; j < kKeyOffsets; ++j) {
    for (size_t k = 0; k < 2 * n_pairs; ++k) lanes_[k * kKeyOffsets + size_t(j)] = pairs_[size_t(j) * 2 * n_pairs + k];
  }
}

void Rope::ggml_angles(int64_t pos0, int n_tokens, float* cs) const {
  // Exactly ggml's rope cache: theta = pos, then theta *= base^(-2/rope_dim) per pair, in
  // float; a pair with a freq factor turns by theta / factor (freq_scale 1, no YaRN ramp).
  const float theta_scale = std::pow(freq_base_, -2.0f / float(rope_dim_));
  const float* ff = freq_factors_.empty() ? nullptr : freq_factors_.data();
  for (int t = 0; t < n_tokens; ++t) {
    float theta = float(pos0 + t);
    float* row = cs + size_t(t) * size_t(rope_dim_);
    for (int i = 0; i < rope_dim_ / 2; ++i) {
      const float a = ff ? theta / ff[i] : theta;
      row[2 * i] = std::cos(a);
      row[2 * i + 1] = std::sin(a);
      theta *= theta_scale;
    }
  }
}

void Rope::rotate_rows(float* x, int n_tokens, int n_heads, const float* cs) const {
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < n_heads; ++h) {
      rotate(x + (size_t(t) * size_t(n_heads) + size_t(h)) * size_t(head_dim_),
             cs + size_t(t) * size_t(rope_dim_), false);
    }
  }
}

void Rope::angles(int64_t pos, float* cs) const {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (size_t i = 0; i < inv_freq_.size(); ++i) {
    // Reduce in double so positions in the millions keep their low-frequency precision.
    const double a = std::fmod(double(pos) * inv_freq_[i], kTwoPi);
    cs[2 * i] = float(std::cos(a));
    cs[2 * i + 1] = float(std::sin(a));
  }
}

void Rope::rotate(float* x, const float* cs, bool transpose) const {
  const int step = pair_stride();
  for (int i = 0; i < rope_dim_ / 2; ++i) {
    const int a = pair_first(i, step);
    const float c = cs[2 * i], s = transpose ? -cs[2 * i + 1] : cs[2 * i + 1];
    const float x0 = x[a], x1 = x[a + step];
    x[a] = x0 * c - x1 * s;
    x[a + step] = x0 * s + x1 * c;
  }
}

}  // namespace kvq
