// SPDX-License-Identifier: MIT
// Chunked prefill: a sequence of any length runs through the model in steps of at most `batch`
// tokens (llama.cpp's -b), so the activations (ForwardWorkspace) grow with the batch, not with
// the prompt. Every engine path that feeds a prompt or a text window goes through prefill().
#pragma once

#include <span>

#include "base/exec_context.h"
#include "kv/kv_cache.h"
#include "model/llama.h"

namespace kvq {

// llama.cpp's default logical batch.
inline constexpr int kDefaultBatch = 512;

// Runs tokens at positions [cache.n_tokens(0), +tokens.size()) as consecutive forward steps
// of at most batch tokens; each step ends with cache.end_step(), so windowed caches (KIVI)
// flush between steps as they would between decode steps. For batch-invariant caches the
// logits and the cache equal one single step's bit for bit (tests/golden/prefill_test.cc).
// logits: [tokens.size(), n_vocab] when all_logits (each step writes its rows), else
// [1, n_vocab] for the last token; may be null when no logits are wanted.
// Errors: kInvalidArgument for batch < 1 or for what LlamaModel::check_step finds in the
// whole sequence (nothing runs then); otherwise the failing step's error, with the cache
// holding the steps before it (each step is all or nothing).
Status prefill(ExecContext& ctx, const LlamaModel& model, std::span<const int32_t> tokens, KvCache& cache,
               ForwardWorkspace& ws, float* logits, bool all_logits, int batch);

}  // namespace kvq
