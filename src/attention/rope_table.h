// SPDX-License-Identifier: MIT
// cos/sin of every RoPE angle for positions [0, n_pos), computed exactly as ref::rope_ref
// does (ggml's repeated multiplication in float), so table-driven RoPE is bit-identical to it.
#pragma once

#include <cstddef>
#include <vector>

namespace kvq {

class RopeTable {
 public:
  // Grows the table to cover positions [0, n_pos).
  void reserve(int n_pos, int rope_dim, float freq_base);
  // Rotates one head vector (llama.cpp adjacent-pair mode) to position pos.
  void apply(float* x, int pos) const;
  int rope_dim() const { return rope_dim_; }
  // cos and sin of the rope_dim / 2 angles at position pos.
  const float* cos_row(int pos) const { return &cos_[size_t(pos) * size_t(rope_dim_ / 2)]; }
  const float* sin_row(int pos) const { return &sin_[size_t(pos) * size_t(rope_dim_ / 2)]; }

 private:
  int rope_dim_ = 0;
  float freq_base_ = 0.0f;
  int n_pos_ = 0;
  std::vector<float> cos_, sin_;  // [n_pos, rope_dim / 2]
};

}  // namespace kvq
