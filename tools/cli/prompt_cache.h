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
  // After generation: with --prompt-cache-all, saves what the cache holds (tokens: the prompt
  // and the generated ids, generate's tokens_out); prints the line saying what was saved (kept
  // until now so that it does not cut the generated text on a terminal).
  Status finish(const LlamaModel& model, const KvCache& cache, const std::vector<int32_t>& tokens,
                const GenerateStats& st);

 private:
  Status save(const LlamaModel& model, const KvCache& cache, std::span<const int32_t> tokens);
  // The tokens the cache holds after generation: a context shift dropped st.n_dropped after
  // the first st.n_keep, and the last generated token was never fed back (n_held).
  static std::vector<int32_t> held_tokens(const std::vector<int32_t>& tokens, const GenerateStats& st, int n_held);
  PromptCacheArgs a_;
  bool exists_ = false;
  std::string saved_;  // the line save() prints
  std::optional<OutputFile> out_;
};

}  // namespace kvq::cli
