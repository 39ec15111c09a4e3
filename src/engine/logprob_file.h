// SPDX-License-Identifier: MIT
// The --save-logits file: log-softmax rows of a perplexity run plus the token each row scored.
// Layout (little-endian): "KVQLOGP1", u32 version=1, u32 n_vocab, u64 n_rows, u32 protocol,
// u32 n_ctx, then f32 rows [n_rows, n_vocab], then i32 targets [n_rows].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/status.h"

namespace kvq {

struct LogprobFile {
  uint32_t n_vocab = 0;
  uint32_t protocol = 0;
  uint32_t n_ctx = 0;
  std::vector<float> rows;       // [n_rows, n_vocab]
  std::vector<int32_t> targets;  // [n_rows]
  uint64_t n_rows() const { return targets.size(); }
};

// Written to a temporary file and renamed, so a failed write leaves nothing behind.
Status write_logprob_file(const std::string& path, const LogprobFile& f);
// Errors: kNotFound, kDataLoss for a truncated or foreign file.
StatusOr<LogprobFile> read_logprob_file(const std::string& path);

}  // namespace kvq
