// SPDX-License-Identifier: MIT
// LLaMA weights bound by canonical GGUF tensor names. F32 tensors are used in place from the
// mapping; F16, BF16 and Q8_0 tensors are converted to f32 once at load (documented trade-off:
// simple, exact kernels over one weight type, at 2-4x the memory of the file for those types).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "io/gguf.h"
#include "kvq/status.h"
#include "model/config.h"

namespace kvq {

// Row-major [rows, cols] f32 matrix (a vector has rows == 1).
struct Matrix {
  const float* data = nullptr;
  int rows = 0;
  int cols = 0;
};

struct LayerWeights {
  Matrix attn_norm;  // [n_embd]
  Matrix wq;         // [n_heads * head_dim, n_embd]
  Matrix wk;         // [n_kv_heads * head_dim, n_embd]
  Matrix wv;         // [n_kv_heads * head_dim, n_embd]
  Matrix wo;         // [n_embd, n_heads * head_dim]
  Matrix ffn_norm;   // [n_embd]
  Matrix w_gate;     // [n_ff, n_embd]
  Matrix w_up;       // [n_ff, n_embd]
  Matrix w_down;     // [n_embd, n_ff]
};

struct LlamaWeights {
  Matrix token_embd;   // [n_vocab, n_embd]
  Matrix output_norm;  // [n_embd]
  Matrix output;       // [n_vocab, n_embd]; token_embd when the file has no output.weight
  bool output_tied = false;
  std::vector<LayerWeights> layers;
  std::vector<AlignedBuffer<float>> converted;  // owns f32 copies of non-F32 tensors
  size_t n_params = 0;
};

// Binds every tensor, checking its shape against the config and its type against the
// supported set (F32, F16, BF16, Q8_0); errors name the tensor and what is wrong.
StatusOr<std::unique_ptr<LlamaWeights>> load_llama_weights(const GgufFile& file,
                                                           const ModelConfig& config);

}  // namespace kvq
