// SPDX-License-Identifier: MIT
// LLaMA-family hyper-parameters read from GGUF metadata.
#pragma once

#include <cstdint>
#include <string>

#include "io/gguf.h"
#include "kvq/status.h"

namespace kvq {

struct ModelConfig {
  std::string arch;  // "llama"
  std::string name;  // general.name, if any
  int n_vocab = 0;
  int n_embd = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_ff = 0;
  int n_ctx_train = 0;
  int rope_dim = 0;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads and validates the config. Errors: kUnimplemented for an architecture other than llama
// or for RoPE scaling; kInvalidArgument for inconsistent or absurd values.
StatusOr<ModelConfig> read_model_config(const GgufFile& file);

}  // namespace kvq
