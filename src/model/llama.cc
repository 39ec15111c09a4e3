// SPDX-License-Identifier: MIT
#include "model/llama.h"

#include <cmath>
#include <cstring>

#include "attention/attention.h"
#include "kernels/ref/ops_ref.h"
#include "model/model_ops.h"

namespace kvq {

bool ForwardWorkspace::reserve(int n, const ModelConfig& c) {
  if (n <= capacity) return true;
  const size_t t = size_t(n);
  const bool ok = x.resize(t * c.n_embd) && xb.resize(t * c.n_embd) && q.resize(t * c.q_dim()) &&
                  k.resize(t * c.kv_dim()) && v.resize(t * c.kv_dim()) &&
                  att.resize(t * c.q_dim()) && hb.resize(t * c.n_ff) && hb2.resize(t * c.n_ff);
  capacity = ok ? n : 0;
  return ok;
}

StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::load(const std::string& path) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  KVQ_ASSIGN_OR_RETURN(m->file_, GgufFile::open(path));
  auto config = read_model_config(*m->file_);
  if (!config.ok()) return config.status().with_context(path);
  m->config_ = *config;
  m->rope_ = Rope(m->config_.head_dim, m->config_.rope_dim, m->config_.rope_freq_base);
  auto weights = load_llama_weights(*m->file_, m->config_);
  if (!weights.ok()) return weights.status().with_context(path);
  m->weights_ = std::move(*weights);
  auto tok = Tokenizer::from_gguf(*m->file_);
  if (!tok.ok()) return tok.status().with_context(path);
  m->tokenizer_ = std::move(*tok);
  if (m->tokenizer_.n_vocab() != m->config_.n_vocab) {
    return invalid_argument(path + ": tokenizer has " + std::to_string(m->tokenizer_.n_vocab()) +
                            " tokens but token_embd.weight has " +
                            std::to_string(m->config_.n_vocab) + " rows");
  }
  return m;
}

Status undo_step(KvCache& cache, int n_tokens, const Status& error) {
  const Status undo = cache.truncate(n_tokens);
  if (undo.ok()) return error;
  return Status(error.code(), error.message() + " (and the cache could not drop this step's tokens: " +
                                  undo.message() + ")");
}

Status LlamaModel::check_step(std::span<const int32_t> tokens, const KvCache& cache) const {
  if (tokens.empty()) return invalid_argument("forward called with no tokens");
  const int64_t pos0 = cache.n_tokens(0), n = int64_t(tokens.size());
  if (pos0 + n > cache.shape().n_ctx) {
    return invalid_argument("the context is full: " + std::to_string(pos0) + " + " + std::to_string(n) +
                            " tokens exceed -c " + std::to_string(cache.shape().n_ctx));
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= config_.n_vocab) {
      return invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary of " +
                              std::to_string(config_.n_vocab));
    }
  }
  return ok_status();
}

Status LlamaModel::forward(ExecContext& ctx, std::span<const int32_t> tokens, KvCache& cache,
                           ForwardWorkspace& ws, float* logits, bool all_logits) const {
  const ModelConfig& c = config_;
  // Everything that can be checked is checked before the cache is touched.
  KVQ_RETURN_IF_ERROR(check_step(tokens, cache));
  const int n = int(tokens.size());
  const int pos0 = cache.n_tokens(0);
  if (!ws.reserve(n, c)) return out_of_memory("cannot allocate activations for " + std::to_string(n) + " tokens");

  const size_t d = size_t(c.n_embd);
  float* x = ws.x.data();
  for (int t = 0; t < n; ++t) {
    weights_->token_embd.dequantize_row(tokens[size_t(t)], x + size_t(t) * d, ctx.path());
  }
  // A failure at layer il > 0 leaves layers 0..il-1 one step longer: undone.
  const Status s = run_layers(ctx, n, pos0, cache, ws);
  if (!s.ok()) return undo_step(cache, pos0, s);
  if (!logits) return ok_status();
  const int first = all_logits ? 0 : n - 1;
  const int n_out = n - first;
  rmsnorm_rows(ctx, x + size_t(first) * d, weights_->output_norm, ws.xb.data(), n_out, c.rms_eps);
  matmul(ctx, weights_->output, ws.xb.data(), logits, n_out);
  return ok_status();
}

Status LlamaModel::run_layers(ExecContext& ctx, int n, int pos0, KvCache& cache, ForwardWorkspace& ws) const {
  const ModelConfig& c = config_;
  const size_t d = size_t(c.n_embd);
  float* x = ws.x.data();
  ws.rope_cs.resize(size_t(n) * size_t(c.rope_dim));
  rope_.ggml_angles(pos0, n, ws.rope_cs.data());
  const AttentionParams ap{c.n_heads, c.n_kv_heads, c.head_dim, 1.0f / std::sqrt(float(c.head_dim)),
                           &rope_};
  for (int il = 0; il < c.n_layers; ++il) {
    const LayerWeights& l = weights_->layers[size_t(il)];
    rmsnorm_rows(ctx, x, l.attn_norm, ws.xb.data(), n, c.rms_eps);
    matmul(ctx, l.wq, ws.xb.data(), ws.q.data(), n);
    matmul(ctx, l.wk, ws.xb.data(), ws.k.data(), n);
    matmul(ctx, l.wv, ws.xb.data(), ws.v.data(), n);
    rope_.rotate_rows(ws.q.data(), n, c.n_heads, ws.rope_cs.data());
    // KVQuant caches take keys before RoPE (kvquant.md §2); attention rotates them on read.
    if (!cache.pre_rope()) rope_.rotate_rows(ws.k.data(), n, c.n_kv_heads, ws.rope_cs.data());
    KVQ_RETURN_IF_ERROR(cache.append(il, n, ws.k.data(), ws.v.data()));
    KVQ_RETURN_IF_ERROR(attend(ctx, ap, cache, il, ws.q.data(), n, pos0, ws.att.data()));
    matmul(ctx, l.wo, ws.att.data(), ws.xb.data(), n);
    for (size_t i = 0; i < size_t(n) * d; ++i) x[i] += ws.xb[i];

    rmsnorm_rows(ctx, x, l.ffn_norm, ws.xb.data(), n, c.rms_eps);
    matmul(ctx, l.w_gate, ws.xb.data(), ws.hb.data(), n);
    matmul(ctx, l.w_up, ws.xb.data(), ws.hb2.data(), n);
    for (size_t i = 0; i < size_t(n) * size_t(c.n_ff); ++i) ws.hb[i] = ref::silu(ws.hb[i]) * ws.hb2[i];
    matmul(ctx, l.w_down, ws.hb.data(), ws.xb.data(), n);
    for (size_t i = 0; i < size_t(n) * d; ++i) x[i] += ws.xb[i];
  }
  return cache.end_step();
}

}  // namespace kvq
