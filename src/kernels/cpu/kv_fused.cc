// SPDX-License-Identifier: MIT
// Routes the fused kernels' entry points to each format family's file (kv_fused_parts.h).
#include "kernels/cpu/kv_fused.h"

#include "kernels/cpu/kv_fused_parts.h"

namespace kvq::cpu {
namespace {

// The head sizes the family kernels take: a multiple of `multiple` values, at most 512.
bool head_fits(const KvRun& run, int multiple) { return run.head_dim % multiple == 0 && run.head_dim <= 512; }

}  // namespace

bool score_run_fused(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld) {
  if (run.format != KvFormat::kUniformCols && run.format != KvFormat::kUniformRow) return false;
  return head_fits(run, 16) && score_run_uniform(run, q, n_q, scale, scores, ld);
}

bool accumulate_run_fused(const KvRun& run, const float* p, int n_q, size_t ld, float* out) {
  if (!head_fits(run, 32)) return false;
  switch (run.format) {
    case KvFormat::kQ4_0:
    case KvFormat::kQ8_0:
      return accumulate_run_ggml(run, p, n_q, ld, out);
    case KvFormat::kUniformRow:
      return accumulate_run_uniform(run, p, n_q, ld, out);
    case KvFormat::kCodebookRow:
      return accumulate_run_codebook(run, p, n_q, ld, out);
    default:
      return false;
  }
}

}  // namespace kvq::cpu
