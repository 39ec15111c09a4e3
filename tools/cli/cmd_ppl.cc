// SPDX-License-Identifier: MIT
// kvq ppl: perplexity of a text file, optionally saving log-probs or comparing against saved ones.
#include <cstdio>

#include "base/timer.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/perplexity.h"

namespace kvq::cli {

namespace {
Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  PplArgs args;
  std::string text_file, protocol = "llamacpp";
  ArgParser p("ppl");
  add_common_flags(p, &common);
  p.add_string("-f,--file", &text_file, "text file to score (required)");
  p.add_int("-c,--ctx-size", &args.n_ctx, 4, 1 << 24, "tokens per chunk (default 512)");
  p.add_int("--chunks", &args.n_chunks, -1, 1 << 30, "number of chunks (default: all)");
  p.add_string("--protocol", &protocol, "llamacpp (default; = llama-perplexity) or full (KVQuant paper)");
  p.add_string("--save-logits", &args.save_logits, "save scored log-prob rows to FILE");
  p.add_string("--kl-base", &args.kl_base, "report KL divergence, top-1 agreement and dPPL against FILE");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  if (text_file.empty()) return invalid_argument("no text given: pass -f FILE");
  if (protocol == "llamacpp") {
    args.protocol = PplProtocol::kLlamaCpp;
  } else if (protocol == "full") {
    args.protocol = PplProtocol::kFull;
  } else {
    return invalid_argument("--protocol must be 'llamacpp' or 'full', got '" + protocol + "'");
  }
  if (!args.save_logits.empty() && args.save_logits == args.kl_base) {
    return invalid_argument("--save-logits and --kl-base name the same file");
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(CacheSpec spec, parse_cache_spec(common.cache));
  KVQ_ASSIGN_OR_RETURN(std::string text, read_text_file(text_file));
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  {
    KVQ_ASSIGN_OR_RETURN(auto probe, make_cache(spec, model->kv_shape(args.n_ctx)));
    KVQ_RETURN_IF_ERROR(check_cache_fits(*probe, args.n_ctx));
  }
  const auto& tok = model->tokenizer();
  const std::vector<int32_t> tokens = tok.encode(text, tok.add_bos(), true);
  if (int64_t(tokens.size()) < args.n_ctx) {
    return invalid_argument(text_file + " has " + std::to_string(tokens.size()) +
                            " tokens, fewer than one chunk of -c " + std::to_string(args.n_ctx));
  }
  ExecContext ctx(common.n_threads, path);
  Timer timer;
  args.progress = [&](int done, int total) {
    if (done == 0) {
      std::fprintf(stderr, "kvq ppl: %zu tokens, %d chunks of -c %d, protocol %s, cache %s\n",
                   tokens.size(), total, args.n_ctx, protocol_name(args.protocol), spec.text.c_str());
      return;
    }
    show_progress("chunks", done, total, timer.seconds());
  };
  KVQ_ASSIGN_OR_RETURN(PplResult r, run_perplexity(ctx, *model, spec, tokens, args));
  std::printf("model: %s\ntext: %s\nprotocol: %s, -c %d, %d chunks, %lld scored tokens, cache %s\n",
              common.model.c_str(), text_file.c_str(), protocol_name(args.protocol), args.n_ctx,
              r.n_chunks, (long long)r.n_scored, spec.text.c_str());
  std::printf("PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
  if (r.has_kl) {
    std::printf("vs %s: base PPL %.4f, dPPL %+.4f, KL mean %.6f, KL p99 %.6f, top-1 agreement %.2f%%\n",
                args.kl_base.c_str(), r.base_ppl, r.delta_ppl, r.kl_mean, r.kl_p99,
                100.0 * r.top1_agreement);
  }
  std::fprintf(stderr, "kvq ppl: %.2f s, %.1f tokens/s\n", r.seconds,
               double(r.n_chunks) * args.n_ctx / std::max(1e-9, r.seconds));
  return ok_status();
}
}  // namespace

int cmd_ppl(const std::vector<std::string>& argv) { return report("ppl", run(argv)); }

}  // namespace kvq::cli
