// SPDX-License-Identifier: MIT
// Rotary position embedding as ggml_rope_ext computes it without YaRN: pair i rotates by
// pos * base^(-2i / rope_dim) / freq_factor[i] (freq factors: Llama-3.1's rope_freqs tensor,
// 1 without one). The pair is (x[2i], x[2i+1]) in llama.cpp's "normal" mode (LLaMA) and
// (x[i], x[i + rope_dim/2]) in its "neox" mode (Qwen2, Phi-3, Gemma); dims past rope_dim are
// left alone (partial rotary). Two uses:
//  - the model rotates queries and post-RoPE keys with ggml's own angles (float repeated
//    multiplication, bit-identical to ref::rope_ref), computed per token: no table per position;
//  - attention rotates pre-RoPE keys (KVQuant §2) by composition, q . R(p) k = (R(b)^T q) . (R(j) k)
//    with p = b + j: the query is rotated once per block start b, each key by its small offset j.
//    Offsets come from a fixed table of kOffsets rows; block starts from angles() in double.
// Memory is fixed by head_dim, never by the context length.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvq {

enum class RopeMode { kNormal, kNeox };

// The offset tables a pre-RoPE score kernel reads (offsets j < Rope::kKeyOffsets within a run),
// in the three layouts its forms need: Rope::key_table(), key_pair_table() and
// key_pair_lanes().
struct RopeKeyTables {
  const float* by_dim = nullptr;
  const float* by_pair = nullptr;
  const float* by_offset = nullptr;
};

class Rope {
 public:
  static constexpr int kOffsets = 1024;  // tabulated offsets j in [0, kOffsets)
  static constexpr int kKeyOffsets = 64; // offsets expanded for the SIMD key rotation

  Rope() = default;
  // freq_factors: empty, or rope_dim / 2 positive divisors of the pairs' angles.
  Rope(int head_dim, int rope_dim, float freq_base, RopeMode mode = RopeMode::kNormal,
       std::vector<float> freq_factors = {});
  int head_dim() const { return head_dim_; }
  int rope_dim() const { return rope_dim_; }
  float freq_base() const { return freq_base_; }
  RopeMode mode() const { return mode_; }
  // The distance between the two dims of a pair: 1 (normal) or rope_dim / 2 (neox).
  int pair_stride() const { return mode_ == RopeMode::kNeox ? rope_dim_ / 2 : 1; }

  // ggml's angles for positions pos0 .. pos0 + n_tokens - 1 (float angle recurrence):
  // cs: [n_tokens][rope_dim / 2][2] cos/sin pairs. Computed once per forward step.
  void ggml_angles(int64_t pos0, int n_tokens, float* cs) const;
  // x: [n_tokens, n_heads, head_dim], token t rotated in place by the pairs of row t of cs.
  void rotate_rows(float* x, int n_tokens, int n_heads, const float* cs) const;

  // cos/sin pairs [rope_dim / 2][2] of the angles at pos, computed in double.
  void angles(int64_t pos, float* cs) const;
  // The pairs of offset j < kOffsets (same layout as angles()).
  const float* offset(int j) const { return &offsets_[size_t(j) * size_t(rope_dim_)]; }
  // Rotates one head vector by the pairs cs: R x, or R^T x when transpose.
  void rotate(float* x, const float* cs, bool transpose) const;
  // Offsets j < kKeyOffsets expanded for SIMD: row j is [C | S] over head_dim lanes such that
  // R(j) x = x * C + partner(x) * S, partner swapping the two dims of each pair: in normal mode
  // C = (c0, c0, c1, c1, ...), S = (-s0, s0, -s1, s1, ...); in neox mode C = (c0, c1, ..., c0,
  // c1, ...), S = (-s0, -s1, ..., s0, s1, ...); 1 and 0 past rope_dim.
  const float* key_table() const { return keys_.data(); }
  // The same offsets by pair for kernels that hold a pair's two dims in two vectors: row j is
  // [cos | sin] over head_dim / 2 pairs (pair i: dims pair_first(i) and its partner), R(j)
  // taking (x, y) to (x cos - y sin, x sin + y cos); cos 1 and sin 0 past rope_dim / 2.
  const float* key_pair_table() const { return pairs_.data(); }
  // The same cos and sin with the offsets in lanes, for kernels that hold a run's tokens in
  // lanes: [cos | sin][head_dim / 2 pairs][kKeyOffsets], i.e. key_pair_table() transposed.
  const float* key_pair_lanes() const { return lanes_.data(); }
  RopeKeyTables key_tables() const { return {keys_.data(), pairs_.data(), lanes_.data()}; }

 private:
  int head_dim_ = 0, rope_dim_ = 0;
  float freq_base_ = 0.0f;
  RopeMode mode_ = RopeMode::kNormal;
  std::vector<float> freq_factors_;  // empty or [rope_dim / 2]
  std::vector<double> inv_freq_;  // base^(-2i / rope_dim) / freq_factor[i]
  std::vector<float> offsets_;    // [kOffsets][rope_dim / 2][2]
  std::vector<float> keys_;       // [kKeyOffsets][2][head_dim]
  std::vector<float> pairs_;      // [kKeyOffsets][2][head_dim / 2]
  std::vector<float> lanes_;      // [2][head_dim / 2][kKeyOffsets]
};

}  // namespace kvq
