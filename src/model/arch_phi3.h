// SPDX-License-Identifier: MIT
// Phi-3 (GGUF architecture "phi3"): its fused tensors as the common layer's matrices.
#pragma once

#include <string>

#include "io/gguf.h"
#include "kvq/status.h"
#include "model/config.h"
#include "model/tensor_binder.h"
#include "model/weights.h"

namespace kvq {

// Refuses what kvq does not compute for Phi-3: LongRoPE's rope_factors_long/short (the 128K
// models), whose choice depends on the context size of the run.
Status check_phi3_tensors(const GgufFile& file);

// Binds layer `prefix`'s projections: attn_qkv [q_dim + 2 kv_dim, n_embd] split by rows into
// wq, wk, wv (separate attn_q/k/v when the file has no attn_qkv, as llama.cpp allows), and
// ffn_up [2 n_ff, n_embd] into w_gate (first n_ff rows) and w_up (the rest): llama.cpp's
// SwiGLU takes silu of the first half times the second.
Status bind_phi3_fused(TensorBinder& b, const ModelConfig& c, const std::string& prefix, LayerWeights* l);

}  // namespace kvq
