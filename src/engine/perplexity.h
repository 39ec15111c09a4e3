// SPDX-License-Identifier: MIT
// Perplexity of a token stream, in llama-perplexity's protocol or the KVQuant paper's, with
// saved log-prob files for KL divergence against a base run.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/exec_context.h"
#include "engine/logprob_file.h"
#include "engine/prefill.h"
#include "kv/cache_spec.h"
#include "model/llama.h"

namespace kvq {

enum class PplProtocol {
  // llama-perplexity: chunks of n_ctx tokens, BOS replaces each chunk's first token (when the
  // vocabulary adds BOS), only the second half of each chunk is scored.
  kLlamaCpp,
  // KVQuant paper (§8): non-overlapping windows of n_ctx tokens, every next token scored.
  kFull,
};

enum class PplMode {
  // Each token attends to the cache as deployment leaves it after the previous tokens (KIVI's
  // fp16 windows, online quantization). Runs batched when the cache is batch-invariant, which
  // gives bit-identical results; token by token otherwise.
  kDecode,
  // Batched prefill with every K/V quantized on append and no full-precision window (the
  // KVQuant paper's simulated quantization).
  kSimulated,
};
const char* mode_name(PplMode m);

struct PplArgs {
  int n_ctx = 512;
  int n_chunks = -1;  // -1: as many as the tokens allow
  PplProtocol protocol = PplProtocol::kLlamaCpp;
  PplMode mode = PplMode::kDecode;
  // Tokens per forward step of a batched chunk (engine/prefill.h). Results do not depend on it
  // for batch-invariant caches; simulated KIVI keeps a step's trailing partial key group in
  // fp16 for that step, so there a batch that is a multiple of g gives the unsplit result.
  int batch = kDefaultBatch;
  CacheCalibration calibration;  // kvquant parameters, when the spec needs them
  OutputFile* save_logits = nullptr;  // write the scored rows here (a prepared output file)
  // Compare against these rows (read from a --kl-base file, or kept in memory); refused before
  // the run unless they were made by the same run (check_same_run).
  const LogprobFile* base = nullptr;
  std::string base_name = "<memory>";  // for messages
  LogprobFile* rows_out = nullptr;    // receives the scored rows and targets
  // Called with done = 0 once the settings are validated, then after every chunk.
  std::function<void(int done, int total)> progress;
};

struct PplResult {
  int n_chunks = 0;
  int64_t n_scored = 0;
  double ppl = 0, ppl_stderr = 0;
  double seconds = 0;
  size_t cache_bytes = 0;  // allocated by the cache after the last chunk
  int cache_tokens = 0;    // tokens it held then
  bool has_kl = false;
  double base_ppl = 0, delta_ppl = 0, kl_mean = 0, kl_p99 = 0, top1_agreement = 0;
  // Standard error of delta_ppl from the paired per-token NLL differences (same tokens).
  double delta_ppl_stderr = 0;
  // Standard error of kl_mean, and the KL of every scored token (in scoring order), so that two
  // caches scored against the same base can be compared token by token (paired_kl_difference).
  double kl_stderr = 0;
  std::vector<double> token_kl;
};

// What identifies a run of these settings on these tokens (a LogprobFile without rows), after
// checking the settings: -c of at least 4, at least one chunk of text, --chunks -1 or >= 1.
// Cheap: tools call it to check a --kl-base file before any other work.
StatusOr<LogprobFile> perplexity_run_header(const LlamaModel& model, std::span<const int32_t> tokens,
                                            const PplArgs& args);

// tokens: the whole text tokenized once with BOS prepended (as llama-perplexity does).
// A result that is not finite (NaN logits) is an error, never a number.
StatusOr<PplResult> run_perplexity(ExecContext& ctx, const LlamaModel& model,
                                   const CacheSpec& cache_spec, std::span<const int32_t> tokens,
                                   const PplArgs& args);

const char* protocol_name(PplProtocol p);

// mean(a.kl - b.kl) over the same scored tokens and its paired standard error: the difference
// between two caches is usually far better resolved than either KL's own error suggests,
// because both are scored on the same tokens against the same base. invalid_argument unless
// both results carry KL over the same number of tokens.
struct PairedDifference {
  double mean = 0, std_error = 0;
};
StatusOr<PairedDifference> paired_kl_difference(const PplResult& a, const PplResult& b);

}  // namespace kvq
