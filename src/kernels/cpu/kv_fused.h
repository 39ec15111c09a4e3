// SPDX-License-Identifier: MIT
// Fused attention kernels over a packed run for n_q queries (kv_fused.cc): they read the codes
// directly, without decoding to a tile. Uniform formats (KIVI, int-b) unpack each row once for
// all the queries (a GQA group); the others repeat the single-query kernel per query. A
// query's result does not depend on n_q. Each returns false for a format or shape it does not
// fuse (the caller then decodes a tile); results agree with the tile path within float
// reassociation. Specification: ref::decode_run_ref followed by a dot product / axpy.
#pragma once

#include "kernels/kv_run.h"

namespace kvq::cpu {

// scores[i * ld + t] = scale * q_i . x'_t for t < run.n, q: [n_q][head_dim] (keys stored
// after RoPE).
bool score_run_fused(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld);
// Keys stored before RoPE (KVQuant codebook keys): scores[i * ld + t] = scale * q_i . R(t) x'_t,
// R(t) the rotation of row t of key_table (Rope::key_table(): offsets within the run, t <
// Rope::kKeyOffsets) in adjacent-pair mode (Rope::pair_stride() == 1), q: [n_q][head_dim]
// rotated to the run's first position.
bool score_run_rope_fused(const KvRun& run, const float* q, int n_q, const float* key_table, float scale,
                          float* scores, size_t ld);
// out_i[:] += sum_t p[i * ld + t] * x'_t, out: [n_q][head_dim].
bool accumulate_run_fused(const KvRun& run, const float* p, int n_q, size_t ld, float* out);

}  // namespace kvq::cpu
