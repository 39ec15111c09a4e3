// SPDX-License-Identifier: MIT
// Highway decoder of a run of cached tokens (kernels/kv_run.h); spec: ref::decode_run_ref.
#pragma once

#include "kernels/kv_run.h"

namespace kvq::cpu {

// out: [run.n, head_dim] f32. Bit-identical to ref::decode_run_ref.
void decode_run(const KvRun& run, float* out);

}  // namespace kvq::cpu
