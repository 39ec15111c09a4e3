// SPDX-License-Identifier: MIT
// Text generation: prefill the prompt in steps of at most `batch` tokens (engine/prefill.h),
// then decode one token at a time.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/exec_context.h"
#include "engine/prefill.h"
#include "engine/sampler.h"
#include "kv/kv_cache.h"
#include "model/llama.h"

namespace kvq {

struct GenerateArgs {
  std::string prompt;
  int n_predict = 128;  // < 0: until EOS or the context is full
  int batch = kDefaultBatch;  // prompt tokens per forward step
  SamplingArgs sampling;
  // When the context fills while generating, drop the oldest tokens after the first n_keep a
  // page (kKvPageTokens) at a time and go on (KvCache::shift), instead of stopping.
  bool context_shift = false;
  int n_keep = -1;  // -1: the cache's sink tokens, at least the BOS
  // The cache already holds the prompt's first n_cached tokens (a restored session,
  // engine/session.h), fewer than the prompt has: only the rest is prefilled.
  int n_cached = 0;
  // Called once the prompt is in the cache, with its tokens (llama.cpp saves --prompt-cache
  // there); an error stops the generation.
  std::function<Status(std::span<const int32_t> prompt)> after_prompt;
};

struct GenerateStats {
  int n_prompt = 0;  // prefilled (the prompt's tokens after the n_cached ones)
  int n_generated = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  bool context_full = false;
  int n_shifts = 0;   // context shifts
  int n_dropped = 0;  // tokens they dropped, all after the first n_keep
  int n_keep = 0;
};

// Streams the prompt's pieces and then every generated piece to on_piece. tokens_out, if
// given, receives prompt and generated ids. The cache must hold args.n_cached tokens (0: be
// empty) and be sized for the run.
// The prompt's tokens (BOS first when the model adds one); an error unless they leave room to
// generate in n_ctx. Tools call it before calibrating, so a prompt that cannot fit fails fast.
StatusOr<std::vector<int32_t>> encode_prompt(const LlamaModel& model, const std::string& prompt, int n_ctx);

StatusOr<GenerateStats> generate(ExecContext& ctx, const LlamaModel& model, KvCache& cache,
                                 const GenerateArgs& args,
                                 const std::function<void(std::string_view)>& on_piece,
                                 std::vector<int32_t>* tokens_out = nullptr);

}  // namespace kvq
