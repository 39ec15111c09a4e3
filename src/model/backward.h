// SPDX-License-Identifier: MIT
// Reverse-mode gradients through the LLaMA forward for KVQuant's Fisher information
// (kvquant.md §4.1): the gradient of the mean next-token cross-entropy of a window with respect
// to every layer's key-projection output (before RoPE) and value-projection output. Weights
// are not updated, so only activation gradients flow: dX = dY . W, done by the same SIMD matmul
// over transposed weights. The scalar type is a template parameter so the gradient can be
// checked against finite differences in double precision.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "base/exec_context.h"
#include "model/llama.h"

namespace kvq {

// Adds delta to one element of a projection output during the forward (finite differences).
struct ProjectionNudge {
  int layer = -1;  // -1: none
  bool value = false;
  int token = 0, channel = 0;
  double delta = 0.0;
};

template <typename T>
struct KvGradients {
  double loss = 0.0;  // mean next-token cross-entropy over the window's L - 1 predictions
  std::vector<std::vector<T>> k, v;  // per layer: [n_tokens, n_kv_heads * head_dim]
  // The activations those gradients are taken at: keys before RoPE, values.
  std::vector<std::vector<T>> k_act, v_act;
};

// The gradient follows the llama graph only: normal-mode RoPE (with or without freq factors),
// SwiGLU, no biases, no embedding scale. Other models get kUnimplemented naming the
// architecture (Fisher-weighted calibration is then unavailable; --calib auto still works).
Status check_gradient_support(const LlamaModel& model);

template <typename T>
class LlamaGradient {
 public:
  explicit LlamaGradient(const LlamaModel& model);
  ~LlamaGradient();
  // Loss and gradients for tokens (a window, BOS first); tokens.size() >= 2.
  StatusOr<KvGradients<T>> compute(ExecContext& ctx, std::span<const int32_t> tokens);
  // The loss alone, with an optional nudge (for finite-difference checks).
  StatusOr<double> loss(ExecContext& ctx, std::span<const int32_t> tokens, const ProjectionNudge& nudge);

 private:
  struct State;
  Status forward(ExecContext& ctx, std::span<const int32_t> tokens, const ProjectionNudge& nudge, State& s);
  const LlamaModel& model_;
  std::vector<AlignedBuffer<float>> transposed_;  // float path: W^T of every matrix used backward
  std::vector<Matrix> wt_;                        // views into transposed_, by weight order
};

extern template class LlamaGradient<float>;
extern template class LlamaGradient<double>;

}  // namespace kvq
