// SPDX-License-Identifier: MIT
// kvq synth: a LLaMA-architecture GGUF with seeded random weights at any shape, for speed work
// at real model sizes without real weights (docs/SYNTH.md).
#include <cstdio>

#include "base/timer.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/synth_model.h"
#include "engine/weight_types.h"

namespace kvq::cli {

namespace {

// Smaller files finish in moments; a progress bar would only flicker.
constexpr uint64_t kProgressMinBytes = uint64_t(256) << 20;

Status run(const std::vector<std::string>& argv) {
  SynthOptions o;
  o.n_threads = CommonArgs().n_threads;
  ArgParser p("synth");
  p.add_string("-o,--output", &o.output, "GGUF file to write (required)");
  p.add_string("--vocab-from", &o.vocab_from, "GGUF whose tokenizer is copied; sets the vocabulary size (required)");
  p.add_int("--dim", &o.dim, 1, 1 << 20, "embedding size (required)");
  p.add_int("--heads", &o.heads, 1, 1 << 20, "query heads (required)");
  p.add_int("--kv-heads", &o.kv_heads, 1, 1 << 20, "key/value heads (default: --heads)");
  p.add_int("--layers", &o.layers, 1, 4096, "transformer blocks (required)");
  p.add_int("--ffn", &o.ffn, 1, 1 << 20, "feed-forward size (required)");
  p.add_int("--head-dim", &o.head_dim, 0, 1 << 20, "size of each head (default: dim / heads)");
  p.add_int("--ctx", &o.ctx, 1, 1 << 30, "llama.context_length (default 4096)");
  p.add_float("--rope-base", &o.rope_base, 1.0, 1e12, "RoPE frequency base (default 10000)");
  p.add_string("--type", &o.type, "matrix weight type: " + weight_type_names() + " (default f16; norms are f32)");
  p.add_u64("--seed", &o.seed, "weight seed (default 0); the file depends only on it and the shape");
  p.add_int("-t,--threads", &o.n_threads, 1, 512, "threads (default: all cores); does not change the file");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  for (const char* flag : {"--dim", "--heads", "--layers", "--ffn"}) {
    if (!p.seen(flag)) return invalid_argument(std::string("missing ") + flag);
  }
  if (!p.seen("--kv-heads")) o.kv_heads = o.heads;
  Timer timer;
  KVQ_ASSIGN_OR_RETURN(SynthResult r, synth_model(o, [&](uint64_t done, uint64_t total) {
                         if (total >= kProgressMinBytes) {
                           show_progress("MiB written", int(done >> 20), int(total >> 20), timer.seconds());
                         }
                       }));
  std::printf("wrote %s: %llu params, vocab %d, %s, %s, %.1f s\n", o.output.c_str(),
              static_cast<unsigned long long>(r.n_params), r.n_vocab, o.type.c_str(),
              format_bytes(double(r.file_bytes)).c_str(), timer.seconds());
  return ok_status();
}

}  // namespace

int cmd_synth(const std::vector<std::string>& argv) { return report("synth", run(argv)); }

}  // namespace kvq::cli
