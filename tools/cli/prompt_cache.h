// SPDX-License-Identifier: MIT
// kvq run's --prompt-cache FILE, --prompt-cache-all and --prompt-cache-ro (llama.cpp's flags):
// restore a session file (engine/session.h) when there is one, reuse the prefix it shares with
// the prompt, and save the cache after the prompt (or after generation with -all; never with -ro).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/common.h"
#include "engine/generate.h"

namespace kvq::cli {

struct PromptCacheArgs {
  std::string path;
  bool all = false;  // save after generation: prompt and generated tokens
  bool ro = false;   // restore only
};

void add_prompt_cache_flags(ArgParser& p, PromptCacheArgs* a);

class PromptCache {
 public:
  // Checks the flags and the file before any work: an existing file must be a regular one,
  // and unless --prompt-cache-ro the path is prepared as an output (io/output_file.h).
  static StatusOr<PromptCache> prepare(const PromptCacheArgs& a, CommandFiles* files);
  bool enabled() const { return !a_.path.empty(); }
  // Restores the file when it exists and is not empty (else: a note) into the empty cache and
  // keeps the prefix shared with prompt: sets gen->n_cached; sets gen->after_prompt to save
  // unless --prompt-cache-all or -ro. Errors: the file's (load_session).
  Status restore(const LlamaModel& model, KvCache& cache, std::span<const int32_t> prompt, GenerateArgs* gen);
  // After generation: with --prompt-cache-all, saves what the cache holds. tokens: the prompt
  // and the generated ids (generate's tokens_out).
  Status finish(const LlamaModel& model, const KvCache& cache, const std::vector<int32_t>& tokens,
                const GenerateStats& st);

 private:
  Status save(const LlamaModel& model, const KvCache& cache, std::span<const int32_t> tokens);
  PromptCacheArgs a_;
  bool exists_ = false;
  std::optional<OutputFile> out_;
};

}  // namespace kvq::cli
