// SPDX-License-Identifier: MIT
// LLaMA weights bound by canonical GGUF tensor names. Matrices stay in their file format and
// are read in place from the mapping (model_ops' matmul dequantizes rows as it goes); only the
// 1-D norm vectors of a non-F32 file are converted to f32 at load (n_embd floats each).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/check.h"
#include "base/kernel_path.h"
#include "io/gguf.h"
#include "kvq/status.h"
#include "model/config.h"
#include "model/weight_format.h"

namespace kvq {

// Row-major [rows, cols] matrix of packed rows in a ggml weight format (a vector has
// rows == 1). Row r is the row_bytes at data + r * row_bytes: F32 floats, or the type's blocks.
struct Matrix {
  const uint8_t* data = nullptr;
  const WeightFormat* format = nullptr;
  int rows = 0;
  int cols = 0;
  size_t row_bytes = 0;

  GgmlType type() const { return format->type; }
  const uint8_t* row(int r) const { return data + size_t(r) * row_bytes; }
  // The f32 data of an F32 matrix (norm vectors are always F32 after loading).
  const float* f32() const {
    KVQ_CHECK(format->type == GgmlType::kF32, "f32() on a %s matrix", ggml_type_name(uint32_t(format->type)).c_str());
    return reinterpret_cast<const float*>(data);
  }
  // Rows [r0, r0 + n) as a matrix of their own, in place: a part of a fused tensor.
  Matrix row_range(int r0, int n) const {
    KVQ_CHECK(r0 >= 0 && n > 0 && r0 + n <= rows, "rows [%d, +%d) of %d", r0, n, rows);
    Matrix m = *this;
    m.data = row(r0);
    m.rows = n;
    return m;
  }
  bool present() const { return data != nullptr; }
  // Dequantizes row r into out[0, cols).
  void dequantize_row(int r, float* out, KernelPath path = KernelPath::kSimd) const {
    format->dequantize(path)(row(r), out, cols);
  }
};

// A view of f32 data the caller keeps alive, as a Matrix.
Matrix f32_matrix(const float* data, int rows, int cols);

// One decoder layer. A fused tensor of the file (Phi-3's attn_qkv, its gate+up ffn_up) is bound
// as row ranges of it, so every architecture presents the same matrices.
struct LayerWeights {
  Matrix attn_norm;  // [n_embd]
  Matrix wq;         // [n_heads * head_dim, n_embd]
  Matrix wk;         // [n_kv_heads * head_dim, n_embd]
  Matrix wv;         // [n_kv_heads * head_dim, n_embd]
  Matrix wo;         // [n_embd, n_heads * head_dim]
  // Optional biases (absent: !present()), f32 vectors added after their projection (Qwen2).
  Matrix bq, bk, bv, bo;
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
  // Llama-3.1's per-pair RoPE frequency divisors (the rope_freqs tensor) or empty.
  std::vector<float> rope_freqs;
  std::vector<LayerWeights> layers;
  std::vector<AlignedBuffer<float>> converted;  // owns f32 copies of non-F32 norm vectors
  size_t n_params = 0;
  size_t mapped_bytes = 0;  // bytes of the file's tensors the weights read in place
};

// Binds every tensor under the architecture's names, checking its shape against the config and
// its type against the supported set (weight_format_names()); errors name the tensor and what
// is wrong, and a tensor the architecture has but kvq does not compute with is an error.
StatusOr<std::unique_ptr<LlamaWeights>> load_llama_weights(const GgufFile& file,
                                                           const ModelConfig& config);

}  // namespace kvq
