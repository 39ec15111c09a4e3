// SPDX-License-Identifier: MIT
// The pre-norm decoder of the GGUF architectures llama, qwen2, phi3 and gemma: RMSNorm, RoPE
// (llama.cpp's normal or neox pairs, optional frequency factors), optional Q/K/V/O biases,
// grouped-query attention over a KvCache, SwiGLU or GeGLU FFN, output head (tied to
// token_embd when the file has no output.weight). What differs between the architectures is
// data (ModelConfig, optional tensors), not code paths: one layer loop runs them all.
// Batched prefill and single-token decode share one path.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/exec_context.h"
#include "io/gguf.h"
#include "kernels/rope.h"
#include "kv/kv_cache.h"
#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace kvq {

// Activation buffers for one forward call, grown on demand and reused across calls.
struct ForwardWorkspace {
  AlignedBuffer<float> x, xb, q, k, v, att, hb, hb2;
  AlignedBuffer<float> out;    // forward_batch's logits [n_seqs, n_vocab] before they are handed out
  std::vector<float> rope_cs;  // RoPE angles of the step's positions [n_tokens][rope_dim]
  int capacity = 0;  // tokens
  bool reserve(int n_tokens, const ModelConfig& c);
};

// For a step that failed after appending to some layers: truncates cache back to n_tokens,
// its length before the step, so that every layer has the same length again, and returns
// error (saying so when the cache could not drop the step's tokens).
Status undo_step(KvCache& cache, int n_tokens, const Status& error);

// One sequence's part of a batched step (LlamaModel::forward_batch).
struct BatchSeq {
  std::span<const int32_t> tokens;  // run at positions [cache->n_tokens(0), +tokens.size())
  KvCache* cache = nullptr;         // this sequence's own cache; no two entries share one
  float* logits = nullptr;          // [n_vocab] for the last token, or null to skip the head
};

class LlamaModel {
 public:
  // Loads a GGUF file: config, weights and tokenizer. Errors name the file and the problem.
  static StatusOr<std::unique_ptr<LlamaModel>> load(const std::string& path);

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const LlamaWeights& weights() const { return *weights_; }
  const GgufFile& gguf() const { return *file_; }
  const Rope& rope() const { return rope_; }
  KvCacheShape kv_shape(int n_ctx) const {
    return {config_.n_layers, config_.n_kv_heads, config_.head_dim, n_ctx};
  }

  // Checks that tokens can run as one step on cache: at least one token, every id inside the
  // vocabulary, room for them in the cache's n_ctx. Callers that split a sequence into several
  // steps (engine/prefill.h) check the whole sequence first, so no step fails half-way.
  Status check_step(std::span<const int32_t> tokens, const KvCache& cache) const;

  // Runs tokens at positions [cache.n_tokens(0), +tokens.size()) and appends their K/V.
  // logits: [tokens.size(), n_vocab] when all_logits, else [1, n_vocab] for the last token;
  // null skips the output head (a prefill chunk whose logits nobody reads).
  // All or nothing: on any error the cache is left at its length before the call, in every
  // layer. Errors: kInvalidArgument (check_step), kOutOfMemory for the activations, anything
  // the cache's append or end_step or attention returns.
  Status forward(ExecContext& ctx, std::span<const int32_t> tokens, KvCache& cache,
                 ForwardWorkspace& ws, float* logits, bool all_logits) const;

  // Several sequences as one step (continuous batching): their rows are stacked so every
  // weight matrix is read once per step for all of them; attention runs per sequence over its
  // own cache. Each sequence's result equals forward() on it alone up to the matmul's
  // rounding for that batch size (the same as batched prefill against one-token steps).
  // All or nothing: on any error every cache is left at its length before the call and
  // *failed (when given) names the sequence the error came from (-1: none in particular).
  Status forward_batch(ExecContext& ctx, std::span<const BatchSeq> seqs, ForwardWorkspace& ws,
                       int* failed = nullptr) const;

 private:
  // A run of rows of ws.x: one sequence's tokens at positions [pos0, +n) of its cache.
  struct Segment {
    int row0 = 0, n = 0, pos0 = 0;
    KvCache* cache = nullptr;
  };
  // ws.x rows for tokens: the embedding rows, times config_.embd_scale.
  void embed(ExecContext& ctx, std::span<const int32_t> tokens, float* x) const;
  // The decoder layers over ws.x for every segment, appending to their caches, then each
  // cache's end_step(). The first error is returned as is with *failed set to its segment;
  // the caller restores the caches.
  Status run_layers(ExecContext& ctx, std::span<const Segment> segs, ForwardWorkspace& ws,
                    int* failed) const;

  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  std::unique_ptr<LlamaWeights> weights_;
  Tokenizer tokenizer_;
  Rope rope_;
};

}  // namespace kvq
