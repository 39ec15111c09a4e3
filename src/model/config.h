// SPDX-License-Identifier: MIT
// Hyper-parameters of the decoder architectures kvq runs, read from GGUF metadata. One layer
// loop serves them all (model/llama.cc); what differs between architectures is data here,
// filled from a per-architecture table (config.cc), and optional tensors (model/weights.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "kernels/rope.h"
#include "kvq/status.h"

namespace kvq {

// The FFN's activation of the gate: SwiGLU (silu) or GeGLU (ggml's tanh GELU, Gemma).
enum class FfnActivation { kSilu, kGelu };

struct ModelConfig {
  std::string arch;  // "llama", "qwen2", "phi3" or "gemma" (supported_architectures())
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
  // Per architecture (config.cc's table):
  RopeMode rope_mode = RopeMode::kNormal;
  FfnActivation ffn_act = FfnActivation::kSilu;
  // The input embedding is multiplied by this (Gemma: sqrt(n_embd), rounded to float).
  float embd_scale = 1.0f;
  // Queries are scaled by 1/sqrt(head_dim) before attention instead of the scores (Phi-3,
  // Gemma: llama.cpp's graph does so; with an f16 cache the query is rounded after scaling).
  bool scale_queries = false;
  // Sliding-window attention (0: none): a query attends to keys less than n_swa positions
  // back (Phi-3's attention.sliding_window; every layer, as llama.cpp's phi3 graph does).
  int n_swa = 0;


  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads and validates the config. Errors: kUnimplemented for an architecture not in
// supported_architectures() (naming it) or for a RoPE scaling type other than none and
// Llama-3.1's (whose frequencies come as the rope_freqs tensor, bound with the weights);
// kInvalidArgument for inconsistent or absurd values.
StatusOr<ModelConfig> read_model_config(const GgufFile& file);

// "llama, qwen2, phi3, gemma": for messages and --help.
std::string supported_architectures();

}  // namespace kvq
