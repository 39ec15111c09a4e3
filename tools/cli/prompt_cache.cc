// SPDX-License-Identifier: MIT
#include "cli/prompt_cache.h"

#include <sys/stat.h>

#include <cstdio>

#include "base/printable.h"
#include "base/timer.h"
#include "engine/session.h"
#include "io/input_file.h"

namespace kvq::cli {

namespace {
constexpr char kFlag[] = "prompt cache (--prompt-cache)";
double mib(double bytes) { return bytes / (1024.0 * 1024.0); }
}  // namespace

void add_prompt_cache_flags(ArgParser& p, PromptCacheArgs* a) {
  p.add_path("--prompt-cache", &a->path,
             "KV cache session file: restored when it exists (the prefix it shares with the prompt is reused), "
             "saved after the prompt");
  p.add_flag("--prompt-cache-all", &a->all, "with --prompt-cache: save after generation instead (prompt and output)");
  p.add_flag("--prompt-cache-ro", &a->ro, "with --prompt-cache: restore only, never save");
}

StatusOr<PromptCache> PromptCache::prepare(const PromptCacheArgs& a, CommandFiles* files) {
  PromptCache pc;
  pc.a_ = a;
  if (a.path.empty()) {
    if (a.all || a.ro) return invalid_argument("--prompt-cache-all and --prompt-cache-ro need --prompt-cache FILE");
    return pc;
  }
  if (a.all && a.ro) return invalid_argument("--prompt-cache-all saves and --prompt-cache-ro never does: give one");
  struct stat st;
  pc.exists_ = ::lstat(a.path.c_str(), &st) == 0;
  if (pc.exists_) {
    if (a.ro) {
      KVQ_RETURN_IF_ERROR(files->add_input(kFlag, a.path));
    } else {
      KVQ_RETURN_IF_ERROR(check_input_file(a.path, kFlag));
    }
  }
  if (!a.ro) {
    KVQ_ASSIGN_OR_RETURN(OutputFile out, files->add_output(kFlag, a.path));
    pc.out_.emplace(std::move(out));
  }
  return pc;
}

Status PromptCache::restore(const LlamaModel& model, KvCache& cache, std::span<const int32_t> prompt,
                            GenerateArgs* gen) {
  if (!enabled()) return ok_status();
  struct stat st;
  const std::string name = printable(a_.path);
  if (!exists_ || ::stat(a_.path.c_str(), &st) != 0 || st.st_size == 0) {
    std::fprintf(stderr, "kvq run: --prompt-cache %s %s: a new session%s\n", name.c_str(),
                 exists_ ? "is empty" : "does not exist", a_.ro ? " (not saved: --prompt-cache-ro)" : " is saved there");
  } else {
    Timer timer;
    auto tokens = load_session(a_.path, model, cache);
    if (!tokens.ok()) return tokens.status().with_context("--prompt-cache");
    std::fprintf(stderr, "kvq run: restored %zu tokens from %s (%.2f MiB) in %.1f ms\n", tokens->size(), name.c_str(),
                 mib(double(st.st_size)), 1e3 * timer.seconds());
    std::string note;
    gen->n_cached = keep_session_prefix(cache, *tokens, prompt, &note);
    std::fprintf(stderr, "kvq run: --prompt-cache: %s\n", note.c_str());
  }
  if (out_ && !a_.all) {
    gen->after_prompt = [this, &model, &cache](std::span<const int32_t> p) { return save(model, cache, p); };
  }
  return ok_status();
}

Status PromptCache::finish(const LlamaModel& model, const KvCache& cache, const std::vector<int32_t>& tokens,
                           const GenerateStats& st) {
  if (out_ && a_.all) {
    KVQ_RETURN_IF_ERROR(save(model, cache, held_tokens(tokens, st, cache.n_tokens(0))));
  }
  if (!saved_.empty()) std::fputs(saved_.c_str(), stderr);
  return ok_status();
}

std::vector<int32_t> PromptCache::held_tokens(const std::vector<int32_t>& tokens, const GenerateStats& st, int n_held) {
  std::vector<int32_t> held = tokens;
  if (st.n_dropped > 0 && size_t(st.n_keep + st.n_dropped) <= held.size()) {
    held.erase(held.begin() + st.n_keep, held.begin() + st.n_keep + st.n_dropped);
  }
  held.resize(std::min(held.size(), size_t(n_held)));
  return held;
}

Status PromptCache::save(const LlamaModel& model, const KvCache& cache, std::span<const int32_t> tokens) {
  Timer timer;
  auto bytes = save_session(*out_, model, cache, tokens);
  if (!bytes.ok()) return bytes.status().with_context("--prompt-cache");
  char size_time[64];
  std::snprintf(size_time, sizeof size_time, "(%.2f MiB) in %.1f ms\n", mib(double(*bytes)), 1e3 * timer.seconds());
  saved_ = "kvq run: saved " + std::to_string(tokens.size()) + " tokens to " + printable(a_.path) + " " + size_time;
  return ok_status();
}

}  // namespace kvq::cli
