// SPDX-License-Identifier: MIT
// Filling a cache to a depth without a quadratic prefill (kvq bench -d): the keys (before
// RoPE) and values of one really prefilled window are appended again and again at new
// positions, the keys rotated to their new positions for caches that store them after RoPE.
// Each chunk goes to every layer, then end_step(), as a prefill step would, so each format
// quantizes what it would store for these activations in decode. The filled tokens are
// replayed activations, not a prefill: no attention ran over them, and a token's K/V do not
// depend on the tokens before it. They serve to measure decode speed and memory at depth,
// never quality.
#pragma once

#include <cstdint>
#include <functional>

#include "engine/calibrate.h"
#include "kv/kv_cache.h"
#include "model/llama.h"

namespace kvq {

// The window row that position pos replays: rows 0..window-1 once, then rows 1..window-1
// over and over, so the window's first (BOS) row appears once, at position 0, as in a text.
int replay_row(int64_t pos, int window);

// Appends replayed tokens at positions [cache.n_tokens(0), n_tokens), in steps of at most
// chunk tokens, replaying the first window of acts (captured from model, keys before RoPE).
// progress, if given, is called with the tokens held after each step. Single-threaded:
// KvCache::append promises nothing about concurrent appends to different layers.
// Errors: kInvalidArgument for chunk < 1, a window of fewer than 2 tokens or n_tokens beyond
// the cache's n_ctx; otherwise the cache's error, the failing step undone (undo_step).
Status replay_fill(const LlamaModel& model, const KvActivations& acts, KvCache& cache, int n_tokens,
                   int chunk, const std::function<void(int n_filled)>& progress = {});

}  // namespace kvq
