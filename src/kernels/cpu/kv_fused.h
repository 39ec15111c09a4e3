// SPDX-License-Identifier: MIT
// Fused attention kernels over a packed run for n_q queries (kv_fused_*.cc, one file per format
// family): they read the codes directly, without decoding to a tile. Uniform formats (KIVI,
// int-b) unpack each row once for all the queries (a GQA group); the others repeat the
// single-query kernel per query. A query's result does not depend on n_q. Each returns false
// for a format or shape it does not fuse (the caller then decodes a tile); results agree with
// the tile path within float reassociation. Specification: ref::decode_run_ref followed by a
// dot product / axpy.
#pragma once

#include "kernels/kv_run.h"
#include "kernels/rope.h"
#include "quant/ggml_blocks.h"

namespace kvq::cpu {

// scores[i * ld + t] = scale * q_i . x'_t for t < run.n, q: [n_q][head_dim] (keys stored
// after RoPE; not q4_0 / q8_0 keys, which score_run_q8 takes). KIVI keys (kUniformCols) are
// scored in integers against each block's weighted query rounded to int8, as
// ref::uniform_cols_scores_ref specifies.
bool score_run_fused(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld);
// q4_0 / q8_0 keys against queries rounded to q8_0 blocks, as llama.cpp scores them (q8_0 is
// ggml's vec_dot_type for both): scores[i * ld + t] = scale * q8_i' . x'_t, q8: [n_q][head_dim /
// 32] blocks, q8_i' their dequantized values; the block sums in integers.
bool score_run_q8(const KvRun& run, const BlockQ8_0* q8, int n_q, float scale, float* scores, size_t ld);
// Keys stored before RoPE (KVQuant codebook keys): scores[i * ld + t] = scale * q_i . R(t) x'_t,
// R(t) the rotation of offset t within the run (t < Rope::kKeyOffsets; rope: Rope::key_tables())
// in adjacent-pair mode (Rope::pair_stride() == 1), q: [n_q][head_dim] rotated to the run's
// first position. group: the model's queries per KV head, which chooses one arithmetic for
// every query of the model whatever the pass (1: the rotation folded into each query; 1 or 2 at
// 2 bits: tokens in lanes; more: each key rotated once for the group), so prefill and decode agree.
bool score_run_rope_fused(const KvRun& run, const float* q, int n_q, int group, const RopeKeyTables& rope,
                          float scale, float* scores, size_t ld);
// out_i[:] += sum_t p[i * ld + t] * x'_t, out: [n_q][head_dim]. 2-bit per-token groups (KIVI-2
// values, int2) accumulate in integers with each run's weights rounded to uint8, as
// ref::uniform_row_accumulate_ref specifies (on AVX2 for groups of a multiple of 32, at most 4
// per token; false for the rest, which take the reference); so do 2-bit KVQuant values, their
// levels rounded to int8 steps too, as ref::codebook_row_accumulate_ref specifies (on AVX2 for
// head_dim 64 and 128 and runs of at most 64 tokens; false for the rest).
bool accumulate_run_fused(const KvRun& run, const float* p, int n_q, size_t ld, float* out);
// The Highway target q4_0 / q8_0 attention dispatches to: besides the targets every kernel is
// built for, kv_fused_ggml.cc is built for AVX3_DL, whose VNNI sums its key blocks (as
// kv_fused_codebook_values.cc is, for 2-bit KVQuant values).
const char* ggml_kernels_target();

}  // namespace kvq::cpu
