// SPDX-License-Identifier: MIT
// Scalar decoders of every KvFormat: the specification of the fused attention kernels.
#pragma once

#include "kernels/kv_run.h"

namespace kvq::ref {

// out: [run.n, head_dim] f32, the exact values the cache holds (outliers applied).
void decode_run_ref(const KvRun& run, float* out);

}  // namespace kvq::ref
