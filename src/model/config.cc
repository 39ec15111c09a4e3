// SPDX-License-Identifier: MIT
#include "model/config.h"

#include <cmath>

#include "base/printable.h"

namespace kvq {

namespace {

// Upper bounds far beyond any real model; they keep a corrupt file from asking for terabytes.
constexpr int64_t kMaxDim = 1 << 20;
constexpr int64_t kMaxLayers = 4096;

StatusOr<int> get_int(const GgufFile& f, const std::string& key, int64_t lo, int64_t hi) {
  KVQ_ASSIGN_OR_RETURN(int64_t v, f.get_i64(key));
  if (v < lo || v > hi) {
    return invalid_argument("metadata '" + key + "' = " + std::to_string(v) + " is out of range [" +
                            std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return int(v);
}

StatusOr<int> get_int_or(const GgufFile& f, const std::string& key, int64_t lo, int64_t hi,
                         int fallback) {
  if (!f.find(key)) return fallback;
  return get_int(f, key, lo, hi);
}

// What an architecture's llama.cpp graph does differently from LLaMA's, as data. Tensor names
// and fused tensors are bound in model/weights.cc (model/arch_phi3.cc for Phi-3).
struct ArchInfo {
  const char* name;
  RopeMode rope_mode;
  FfnActivation ffn_act;
  bool embd_scale_sqrt;  // x *= sqrt(n_embd) after the embedding lookup
  bool scale_queries;
  bool sliding_window;   // attention.sliding_window is used (llama.cpp ignores it for llama)
};

constexpr ArchInfo kArchs[] = {
    {"llama", RopeMode::kNormal, FfnActivation::kSilu, false, false, false},
    {"qwen2", RopeMode::kNeox, FfnActivation::kSilu, false, false, false},
    {"phi3", RopeMode::kNeox, FfnActivation::kSilu, false, true, true},
    {"gemma", RopeMode::kNeox, FfnActivation::kGelu, true, true, false},
};

}  // namespace

std::string supported_architectures() {
  std::string r;
  for (const ArchInfo& a : kArchs) r += (r.empty() ? "" : ", ") + std::string(a.name);
  return r;
}

StatusOr<ModelConfig> read_model_config(const GgufFile& f) {
  ModelConfig c;
  KVQ_ASSIGN_OR_RETURN(c.arch, f.get_string("general.architecture"));
  const ArchInfo* arch = nullptr;
  for (const ArchInfo& a : kArchs) {
    if (c.arch == a.name) arch = &a;
  }
  if (!arch) {
    return unimplemented("architecture '" + printable(c.arch) + "' is not supported (kvq runs " +
                         supported_architectures() + ")");
  }
  c.rope_mode = arch->rope_mode;
  c.ffn_act = arch->ffn_act;
  c.scale_queries = arch->scale_queries;
  if (auto name = f.get_string("general.name"); name.ok()) c.name = *name;
  const std::string a = c.arch + ".";
  KVQ_ASSIGN_OR_RETURN(c.n_embd, get_int(f, a + "embedding_length", 1, kMaxDim));
  KVQ_ASSIGN_OR_RETURN(c.n_layers, get_int(f, a + "block_count", 1, kMaxLayers));
  KVQ_ASSIGN_OR_RETURN(c.n_heads, get_int(f, a + "attention.head_count", 1, kMaxDim));
  KVQ_ASSIGN_OR_RETURN(c.n_kv_heads,
                       get_int_or(f, a + "attention.head_count_kv", 1, kMaxDim, c.n_heads));
  KVQ_ASSIGN_OR_RETURN(c.n_ff, get_int(f, a + "feed_forward_length", 1, kMaxDim));
  KVQ_ASSIGN_OR_RETURN(c.n_ctx_train, get_int_or(f, a + "context_length", 1, 1 << 30, 2048));
  if (c.n_embd % c.n_heads != 0) {
    return invalid_argument("embedding_length " + std::to_string(c.n_embd) +
                            " is not a multiple of head_count " + std::to_string(c.n_heads));
  }
  KVQ_ASSIGN_OR_RETURN(c.head_dim, get_int_or(f, a + "attention.key_length", 1, kMaxDim,
                                              c.n_embd / c.n_heads));
  if (f.find(a + "attention.value_length")) {
    KVQ_ASSIGN_OR_RETURN(int vl, get_int(f, a + "attention.value_length", 1, kMaxDim));
    if (vl != c.head_dim) return unimplemented("value_length different from key_length");
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return invalid_argument("head_count " + std::to_string(c.n_heads) +
                            " is not a multiple of head_count_kv " + std::to_string(c.n_kv_heads));
  }
  KVQ_ASSIGN_OR_RETURN(c.rope_dim, get_int_or(f, a + "rope.dimension_count", 2, kMaxDim, c.head_dim));
  if (c.rope_dim > c.head_dim || c.rope_dim % 2 != 0) {
    return invalid_argument("rope.dimension_count " + std::to_string(c.rope_dim) +
                            " must be even and at most head_dim " + std::to_string(c.head_dim));
  }
  if (f.find(a + "rope.freq_base")) {
    KVQ_ASSIGN_OR_RETURN(double b, f.get_f64(a + "rope.freq_base"));
    if (!(b > 1.0 && b < 1e12)) return invalid_argument("rope.freq_base out of range");
    c.rope_freq_base = float(b);
  }
  if (f.find(a + "attention.layer_norm_rms_epsilon")) {
    KVQ_ASSIGN_OR_RETURN(double e, f.get_f64(a + "attention.layer_norm_rms_epsilon"));
    if (!(e > 0.0 && e < 1.0)) return invalid_argument("layer_norm_rms_epsilon out of range");
    c.rms_eps = float(e);
  }
  if (f.find(a + "rope.scaling.type")) {
    // Llama-3.1's scaling has no type key: convert_hf_to_gguf writes its per-pair frequency
    // factors as the rope_freqs tensor, which the weights bind.
    auto t = f.get_string(a + "rope.scaling.type");
    if (!t.ok() || (*t != "none" && !t->empty())) {
      return unimplemented("RoPE scaling (" + a + "rope.scaling.type = '" + (t.ok() ? printable(*t) : "?") +
                           "') is not supported");
    }
  }
  if (arch->sliding_window && f.find(a + "attention.sliding_window")) {
    KVQ_ASSIGN_OR_RETURN(c.n_swa, get_int(f, a + "attention.sliding_window", 0, 1 << 30));
  }
  if (arch->embd_scale_sqrt) c.embd_scale = std::sqrt(float(c.n_embd));
  if (const GgufTensorInfo* e = f.find_tensor("token_embd.weight")) {
    if (e->ne.size() != 2 || e->ne[1] > uint64_t(kMaxDim) * 16) {
      return invalid_argument("token_embd.weight has an unexpected shape");
    }
    c.n_vocab = int(e->ne[1]);
  } else {
    return not_found("tensor 'token_embd.weight' is missing");
  }
  return c;
}

}  // namespace kvq
