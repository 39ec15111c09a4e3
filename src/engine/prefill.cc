// SPDX-License-Identifier: MIT
#include "engine/prefill.h"

#include <algorithm>
#include <string>

namespace kvq {

Status prefill(ExecContext& ctx, const LlamaModel& model, std::span<const int32_t> tokens, KvCache& cache,
               ForwardWorkspace& ws, float* logits, bool all_logits, int batch) {
  if (batch < 1) return invalid_argument("the batch size (-b) must be at least 1, got " + std::to_string(batch));
  // The whole sequence is checked first: a prompt that cannot fit fails before any step runs.
  KVQ_RETURN_IF_ERROR(model.check_step(tokens, cache));
  const size_t n_vocab = size_t(model.config().n_vocab);
  for (size_t t0 = 0; t0 < tokens.size(); t0 += size_t(batch)) {
    const size_t n = std::min(tokens.size() - t0, size_t(batch));
    const bool last = t0 + n == tokens.size();
    // Without all_logits only the last step's last row is wanted: earlier steps skip the head.
    float* out = !logits ? nullptr : all_logits ? logits + t0 * n_vocab : last ? logits : nullptr;
    KVQ_RETURN_IF_ERROR(model.forward(ctx, tokens.subspan(t0, n), cache, ws, out, all_logits));
  }
  return ok_status();
}

}  // namespace kvq
