// SPDX-License-Identifier: MIT
#include "attention/rope_table.h"

#include <cmath>

namespace kvq {

void RopeTable::reserve(int n_pos, int rope_dim, float freq_base) {
  if (rope_dim != rope_dim_ || freq_base != freq_base_) {
    rope_dim_ = rope_dim;
    freq_base_ = freq_base;
    n_pos_ = 0;
    cos_.clear();
    sin_.clear();
  }
  if (n_pos <= n_pos_) return;
  const int half = rope_dim / 2;
  const float theta_scale = std::pow(freq_base, -2.0f / float(rope_dim));
  cos_.resize(size_t(n_pos) * half);
  sin_.resize(size_t(n_pos) * half);
  for (int p = n_pos_; p < n_pos; ++p) {
    float theta = float(p);
    for (int i = 0; i < half; ++i) {
      cos_[size_t(p) * half + i] = std::cos(theta);
      sin_[size_t(p) * half + i] = std::sin(theta);
      theta *= theta_scale;
    }
  }
  n_pos_ = n_pos;
}

void RopeTable::apply(float* x, int pos) const {
  const int half = rope_dim_ / 2;
  const float* c = &cos_[size_t(pos) * half];
  const float* s = &sin_[size_t(pos) * half];
  for (int i = 0; i < half; ++i) {
    const float x0 = x[2 * i], x1 = x[2 * i + 1];
    x[2 * i] = x0 * c[i] - x1 * s[i];
    x[2 * i + 1] = x0 * s[i] + x1 * c[i];
  }
}

}  // namespace kvq
