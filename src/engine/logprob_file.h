// SPDX-License-Identifier: MIT
// The --save-logits file: log-softmax rows of a perplexity run, the token each row scored, and
// what identifies the run (model, evaluated tokens, context, protocol), so that a --kl-base file
// from another run is refused before any work. Layout: docs/FILE_FORMAT.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "io/output_file.h"
#include "kvq/status.h"

namespace kvq {

inline constexpr uint32_t kLogprobVersion = 2;

struct LogprobFile {
  uint32_t n_vocab = 0;
  uint32_t protocol = 0;  // PplProtocol
  uint32_t n_ctx = 0;
  uint32_t n_chunks = 0;
  uint64_t model_hash = 0;   // gguf_content_hash of the model
  uint64_t tokens_hash = 0;  // FNV-1a of the n_tokens evaluated tokens
  uint64_t n_tokens = 0;     // n_chunks * n_ctx
  std::vector<float> rows;       // [n_rows, n_vocab]
  std::vector<int32_t> targets;  // [n_rows]
  uint64_t n_rows() const { return targets.size(); }
};

// FNV-1a over the token ids (as little-endian i32).
uint64_t hash_tokens(std::span<const int32_t> tokens);

// Written through out (atomically for a regular file).
Status write_logprob_file(OutputFile& out, const LogprobFile& f);
// Errors: kNotFound, kInvalidArgument (not a regular file), kDataLoss for a truncated, foreign
// or corrupt file (non-finite log-probs, targets outside the vocabulary), kUnimplemented for
// version 1 files, which record no identity.
StatusOr<LogprobFile> read_logprob_file(const std::string& path);
// The same over bytes already in memory; name is used in messages.
StatusOr<LogprobFile> parse_logprob_file(std::span<const uint8_t> bytes, const std::string& name);

// An error naming every difference between base's identity and this run's (model, vocabulary,
// protocol, -c, chunks, text), or ok when base was made by the same run.
Status check_same_run(const LogprobFile& base, const LogprobFile& run, const std::string& base_name);

}  // namespace kvq
