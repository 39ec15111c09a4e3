// SPDX-License-Identifier: MIT
// Fused attention kernels over a packed run for one query (kv_fused.cc): they read the codes
// directly, without decoding to a tile. Each returns false for a format or shape it does not
// fuse (the caller then decodes a tile); results agree with the tile path within float
// reassociation. Specification: ref::decode_run_ref followed by a dot product / axpy.
#pragma once

#include "kernels/kv_run.h"

namespace kvq::cpu {

// scores[t] = scale * q . x'_t for t < run.n (keys stored after RoPE).
bool score_run_fused(const KvRun& run, const float* q, float scale, float* scores);
// out[:] += sum_t p[t] * x'_t.
bool accumulate_run_fused(const KvRun& run, const float* p, float* out);

}  // namespace kvq::cpu
