// SPDX-License-Identifier: MIT
// The fused kernels of each format family (kv_fused_ggml.cc, kv_fused_uniform_scores.cc,
// kv_fused_uniform_values.cc, kv_fused_codebook.cc), each dispatched at run time to the CPU's
// target; kv_fused.cc routes the public entry points (kernels/cpu/kv_fused.h) to them by
// format and checks the head size once (scores: a multiple of 16, values: of 32; at most 512),
// so each takes only its own formats at those sizes. Same contracts as there otherwise: false
// for a shape the family does not fuse.
#pragma once

#include <cstddef>

#include "kernels/cpu/kv_fused.h"

namespace kvq::cpu {

// KIVI keys (kUniformCols) and per-token groups (kUniformRow).
bool score_run_uniform(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld);
bool accumulate_run_uniform(const KvRun& run, const float* p, int n_q, size_t ld, float* out);
// q4_0 / q8_0 values (their keys: score_run_q8).
bool accumulate_run_ggml(const KvRun& run, const float* p, int n_q, size_t ld, float* out);
// KVQuant codebook rows (values; keys: score_run_rope_fused).
bool accumulate_run_codebook(const KvRun& run, const float* p, int n_q, size_t ld, float* out);

}  // namespace kvq::cpu
