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
                  att.resize(t * c.q_dim()) && hb.resize(t * c.n_ff) && hb2.resize(t * c.n_ff) &&
                  out.resize(t * c.n_vocab);
  capacity = ok ? n : 0;
  return ok;
}

StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::load(const std::string& path) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  KVQ_ASSIGN_OR_RETURN(m->file_, GgufFile::open(path));
  auto config = read_model_config(*m->file_);
  if (!config.ok()) return config.status().with_context(path);
  m->config_ = *config;
  auto weights = load_llama_weights(*m->file_, m->config_);
  if (!weights.ok()) return weights.status().with_context(path);
  m->weights_ = std::move(*weights);
  m->rope_ = Rope(m->config_.head_dim, m->config_.rope_dim, m->config_.rope_freq_base, m->config_.rope_mode,
                  m->weights_->rope_freqs);
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

void LlamaModel::embed(ExecContext& ctx, std::span<const int32_t> tokens, float* x) const {
  const size_t d = size_t(config_.n_embd);
  for (size_t t = 0; t < tokens.size(); ++t) {
    weights_->token_embd.dequantize_row(tokens[t], x + t * d, ctx.path());
    if (config_.embd_scale != 1.0f) {
      for (size_t i = 0; i < d; ++i) x[t * d + i] *= config_.embd_scale;
    }
  }
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
  embed(ctx, tokens, x);
  // A failure at layer il > 0 leaves layers 0..il-1 one step longer: undone.
  const Segment seg{0, n, pos0, &cache};
  const Status s = run_layers(ctx, std::span<const Segment>(&seg, 1), ws, nullptr);
  if (!s.ok()) return undo_step(cache, pos0, s);
  if (!logits) return ok_status();
  const int first = all_logits ? 0 : n - 1;
  const int n_out = n - first;
  rmsnorm_rows(ctx, x + size_t(first) * d, weights_->output_norm, ws.xb.data(), n_out, c.rms_eps);
  matmul(ctx, weights_->output, ws.xb.data(), logits, n_out);
  return ok_status();
}

Status LlamaModel::forward_batch(ExecContext& ctx, std::span<const BatchSeq> seqs, ForwardWorkspace& ws,
                                 int* failed) const {
  const ModelConfig& c = config_;
  if (failed) *failed = -1;
  if (seqs.empty()) return invalid_argument("forward_batch called with no sequences");
  std::vector<Segment> segs(seqs.size());
  int rows = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const BatchSeq& s = seqs[i];
    Status st = s.cache ? check_step(s.tokens, *s.cache) : invalid_argument("sequence without a cache");
    for (size_t j = 0; st.ok() && j < i; ++j) {
      if (seqs[j].cache == s.cache) st = invalid_argument("two sequences of one step share a cache");
    }
    if (!st.ok()) {
      if (failed) *failed = int(i);
      return st;
    }
    segs[i] = {rows, int(s.tokens.size()), s.cache->n_tokens(0), s.cache};
    rows += segs[i].n;
  }
  if (!ws.reserve(rows, c)) {
    return out_of_memory("cannot allocate activations for " + std::to_string(rows) + " tokens");
  }
  const size_t d = size_t(c.n_embd);
  float* x = ws.x.data();
  for (const Segment& g : segs) embed(ctx, seqs[size_t(&g - segs.data())].tokens, x + size_t(g.row0) * d);
  const Status s = run_layers(ctx, segs, ws, failed);
  if (!s.ok()) {
    Status first = s;
    for (const Segment& g : segs) first = undo_step(*g.cache, g.pos0, first);
    return first;
  }
  // The output head over the last row of every sequence that wants logits, as one matmul.
  int n_out = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (!seqs[i].logits) continue;
    rmsnorm_rows(ctx, x + size_t(segs[i].row0 + segs[i].n - 1) * d, weights_->output_norm,
                 ws.xb.data() + size_t(n_out++) * d, 1, c.rms_eps);
  }
  if (n_out == 0) return ok_status();
  matmul(ctx, weights_->output, ws.xb.data(), ws.out.data(), n_out);
  const size_t nv = size_t(c.n_vocab);
  for (size_t i = 0, r = 0; i < seqs.size(); ++i) {
    if (seqs[i].logits) std::memcpy(seqs[i].logits, ws.out.data() + (r++) * nv, nv * sizeof(float));
  }
  return ok_status();
}

Status LlamaModel::run_layers(ExecContext& ctx, std::span<const Segment> segs, ForwardWorkspace& ws,
                              int* failed) const {
  const ModelConfig& c = config_;
  const size_t d = size_t(c.n_embd);
  const size_t rd = size_t(c.rope_dim);
  const int n = segs.back().row0 + segs.back().n;
  float* x = ws.x.data();
  ws.rope_cs.resize(size_t(n) * rd);
  for (const Segment& g : segs) rope_.ggml_angles(g.pos0, g.n, ws.rope_cs.data() + size_t(g.row0) * rd);
  const float kq_scale = 1.0f / std::sqrt(float(c.head_dim));
  const AttentionParams ap{c.n_heads, c.n_kv_heads, c.head_dim, c.scale_queries ? 1.0f : kq_scale, &rope_, c.n_swa};
  const size_t qd = size_t(c.q_dim()), kd = size_t(c.kv_dim());
  auto fail = [&](const Segment& g, Status s) {
    if (failed) *failed = int(&g - segs.data());
    return s;
  };
  std::vector<AttendItem> items(segs.size());
  for (int il = 0; il < c.n_layers; ++il) {
    const LayerWeights& l = weights_->layers[size_t(il)];
    rmsnorm_rows(ctx, x, l.attn_norm, ws.xb.data(), n, c.rms_eps);
    const MatmulOutput qkv[] = {{&l.wq, ws.q.data()}, {&l.wk, ws.k.data()}, {&l.wv, ws.v.data()}};
    matmul(ctx, qkv, ws.xb.data(), n);
    add_bias_rows(l.bq, ws.q.data(), n);
    add_bias_rows(l.bk, ws.k.data(), n);
    add_bias_rows(l.bv, ws.v.data(), n);
    rope_.rotate_rows(ws.q.data(), n, c.n_heads, ws.rope_cs.data());
    if (c.scale_queries) {
      for (size_t i = 0; i < size_t(n) * qd; ++i) ws.q[i] *= kq_scale;
    }
    for (const Segment& g : segs) {
      float* k = ws.k.data() + size_t(g.row0) * kd;
      const float* cs = ws.rope_cs.data() + size_t(g.row0) * rd;
      // KVQuant caches take keys before RoPE (kvquant.md §2); attention rotates them on read.
      if (!g.cache->pre_rope()) rope_.rotate_rows(k, g.n, c.n_kv_heads, cs);
      const Status s = g.cache->append(il, g.n, k, ws.v.data() + size_t(g.row0) * kd);
      if (!s.ok()) return fail(g, s);
      items[size_t(&g - segs.data())] = {g.cache, ws.q.data() + size_t(g.row0) * qd, g.n, g.pos0,
                                         ws.att.data() + size_t(g.row0) * qd};
    }
    // Every sequence's attention in one pass over the threads (a serving step of many short
    // sequences would otherwise wait on the pool once per sequence and layer).
    int bad = -1;
    if (const Status s = attend_batch(ctx, ap, il, items, &bad); !s.ok()) return fail(segs[size_t(bad)], s);
    matmul(ctx, l.wo, ws.att.data(), ws.xb.data(), n);
    add_bias_rows(l.bo, ws.xb.data(), n);
    for (size_t i = 0; i < size_t(n) * d; ++i) x[i] += ws.xb[i];

    rmsnorm_rows(ctx, x, l.ffn_norm, ws.xb.data(), n, c.rms_eps);
    const MatmulOutput gate_up[] = {{&l.w_gate, ws.hb.data()}, {&l.w_up, ws.hb2.data()}};
    matmul(ctx, gate_up, ws.xb.data(), n);
    const size_t nf = size_t(n) * size_t(c.n_ff);
    if (c.ffn_act == FfnActivation::kGelu) {
      for (size_t i = 0; i < nf; ++i) ws.hb[i] = ref::gelu_ggml(ws.hb[i]) * ws.hb2[i];
    } else {
      swiglu_rows(ctx, ws.hb.data(), ws.hb2.data(), n, c.n_ff);
    }
    matmul(ctx, l.w_down, ws.hb.data(), ws.xb.data(), n);
    for (size_t i = 0; i < size_t(n) * d; ++i) x[i] += ws.xb[i];
  }
  for (const Segment& g : segs) {
    const Status s = g.cache->end_step();
    if (!s.ok()) return fail(g, s);
  }
  return ok_status();
}

}  // namespace kvq
