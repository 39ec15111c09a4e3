// SPDX-License-Identifier: MIT
// kvq bench: prefill and decode throughput (median of repeats) with a chosen cache, as a
// markdown table row, llama-bench style; with a --cache list, every cache in each round, in
// alternating order, and each one's speed over the first's, round by round (ratios measured side
// by side are what a noisy machine can still compare). -d N first fills the cache with N tokens of replayed
// activations (engine/kv_replay.h), so both are measured at depth N without the quadratic
// prefill that reaching it would take.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "base/printable.h"
#include "base/rng.h"
#include "base/timer.h"
#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/kv_replay.h"
#include "engine/prefill.h"
#include "engine/read_bandwidth.h"
#include "engine/runtime.h"

namespace kvq::cli {

namespace {

// Bytes of --text tokenized to find the replayed window: enough for any window, and the
// whole of a long book would take seconds to tokenize for nothing.
constexpr size_t kDepthTextBytes = 256 * 1024;
// The replayed window: a real prefill of this many tokens (at most the model's context).
constexpr int kDepthWindow = 512;
constexpr double kProgressSeconds = 3.0;
// --read-bandwidth's buffer: 8x the largest last-level caches here, yet small enough not to push
// a multi-GB model's pages out of memory or to dominate the peak RSS of the run.
constexpr size_t kBandwidthBytes = size_t(256) << 20;
constexpr int kBandwidthPasses = 5;

// The keys and values of one window of text, prefilled for real (BOS first, at a seeded place
// in the text's first kDepthTextBytes), that -d replays.
StatusOr<KvActivations> capture_depth_window(ExecContext& ctx, const LlamaModel& model, const std::string& path,
                                             int batch) {
  KVQ_ASSIGN_OR_RETURN(std::string body, read_text_file(path, "depth text (--text)"));
  if (body.size() > kDepthTextBytes) {
    const size_t line_end = body.rfind('\n', kDepthTextBytes);
    body.resize(line_end == std::string::npos ? kDepthTextBytes : line_end + 1);
  }
  const std::vector<int32_t> tokens = model.tokenizer().encode(body, true, true);
  CalibrationArgs ca;
  ca.n_windows = 1;
  ca.window = std::min(kDepthWindow, model.config().n_ctx_train);
  ca.batch = batch;
  auto acts = KvActivations::capture(ctx, model, tokens, ca);
  if (!acts.ok()) return acts.status().with_context("--text " + printable(path));
  return acts;
}

// Fills cache from its length up to depth, with a progress line every few seconds.
Status fill_to_depth(const LlamaModel& model, const KvActivations& window, KvCache& cache, int depth, int batch,
                     bool verbose) {
  Timer timer;
  double last = 0;
  const int from = cache.n_tokens(0);
  KVQ_RETURN_IF_ERROR(replay_fill(model, window, cache, depth, batch, [&](int filled) {
    if (!verbose || timer.seconds() - last < kProgressSeconds) return;
    last = timer.seconds();
    std::fprintf(stderr, "kvq bench: filled %d/%d tokens, %.0f tok/s\n", filled, depth, (filled - from) / last);
  }));
  if (verbose) {
    std::fprintf(stderr, "kvq bench: -d %d: %d tokens of replayed activations (a %d-token window, not a prefill) "
                 "in %.1f s, %.0f tok/s\n", depth, depth - from, window.args().window, timer.seconds(),
                 (depth - from) / std::max(1e-9, timer.seconds()));
  }
  return ok_status();
}

// Decode reads every weight once per token, except the embedding table (one row; unless the
// output layer shares it): its bytes over the measured read bandwidth bound decode from above.
Status print_streaming_limit(ExecContext& ctx, const LlamaModel& model, const std::string& path, double decode_tps) {
  KVQ_ASSIGN_OR_RETURN(ReadBandwidth bw, measure_read_bandwidth(ctx.pool(), kBandwidthBytes, kBandwidthPasses));
  double streamed = 0;
  for (const auto& t : model.gguf().tensors()) {
    if (t.name != "token_embd.weight" || model.weights().output_tied) streamed += double(t.n_bytes);
  }
  const double file = double(std::filesystem::file_size(path)), bps = bw.gbps * 1e9;
  std::printf("weight streaming: read bandwidth %.2f GB/s (%s); file %s: limit %.3g tok/s, decode at %.0f%% of it; "
              "weights read per token %s: limit %.3g tok/s, decode at %.0f%% of it\n",
              bw.gbps, bw.method.c_str(), format_bytes(file).c_str(), bps / file, 100 * decode_tps * file / bps,
              format_bytes(streamed).c_str(), bps / streamed, 100 * decode_tps * streamed / bps);
  return ok_status();
}

// One cache type of a run: its calibration, its cache and the speeds of its repetitions.
struct CacheBench {
  CacheSpec spec;
  KvActivations::ForSpec cal;
  std::unique_ptr<KvCache> cache;
  std::vector<double> pp, tg;
};

// Brings b's cache back to the depth before a repetition: the replayed tokens are kept unless
// the cache cannot drop tokens there (KIVI keys inside a quantized block); then it is refilled.
// r: the repetition (0 warms up).
Status back_to_depth(const LlamaModel& model, const KvActivations* window, CacheBench& b, int depth, int batch,
                     int r) {
  const bool first = r == 0;
  if (!first && b.cache->truncate(depth).ok()) return ok_status();
  if (r == 1 && depth > 0) {
    std::fprintf(stderr, "kvq bench: note: %s cannot drop tokens back to -d %d; the depth is refilled "
                 "(untimed) before each repetition\n", b.cache->name().c_str(), depth);
  }
  b.cache->clear();
  if (depth > 0) KVQ_RETURN_IF_ERROR(fill_to_depth(model, *window, *b.cache, depth, batch, first));
  return ok_status();
}

// The ratio of each cache's speeds to the first cache's, round by round (both measured in the
// same round, next to each other): median and range.
void print_ratios(const std::vector<CacheBench>& benches, bool decode) {
  const CacheBench& base = benches[0];
  for (size_t i = 1; i < benches.size(); ++i) {
    const auto& x = decode ? benches[i].tg : benches[i].pp;
    const auto& y = decode ? base.tg : base.pp;
    std::vector<double> r;
    for (size_t k = 0; k < x.size(); ++k) r.push_back(x[k] / y[k]);
    std::printf("%s %s / %s: median %.3f of %zu rounds (%.3f-%.3f)\n", decode ? "tg" : "pp",
                benches[i].spec.text.c_str(), base.spec.text.c_str(), median(r), r.size(),
                *std::min_element(r.begin(), r.end()), *std::max_element(r.begin(), r.end()));
  }
}

Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  int n_prompt = 128, n_gen = 128, reps = 3, depth = 0, batch = kDefaultBatch;
  bool read_bandwidth = false;
  std::string depth_text;
  ArgParser p("bench");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, true,
                  "KV cache type (default f16; docs/CACHE_SPEC.md), or a comma-separated list measured in "
                  "alternating rounds, each against the first: median of the rounds' ratios");
  p.add_int("-p,--n-prompt", &n_prompt, 1, 1 << 20, "prompt tokens to prefill, after the -d tokens (default 128)");
  p.add_int("-n,--n-gen", &n_gen, 0, 1 << 20, "tokens to decode after the prompt (default 128)");
  p.add_int("-r,--repetitions", &reps, 1, 1000,
            "repetitions (rounds, with a --cache list); the median is reported (default 3)");
  p.add_int("-d,--depth", &depth, 0, 1 << 28,
            "first fill the cache with N tokens (default 0): activations of one prefilled window of --text "
            "replayed at new positions, not a prefill; speed and memory only");
  p.add_path("--text", &depth_text,
             "text whose window -d replays (default: ../text/long/war_and_peace.txt next to the model's folder)");
  add_batch_flag(p, &batch);
  p.add_flag("--read-bandwidth", &read_bandwidth,
             "after the run, measure the machine's read bandwidth and print decode against the weight-streaming "
             "limit (weight bytes read per token / bandwidth)");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  if (!depth_text.empty() && depth == 0) return invalid_argument("--text is used only with -d N (N > 0)");
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  if (depth > 0 && depth_text.empty()) {
    KVQ_ASSIGN_OR_RETURN(depth_text, find_shared_text(common.model, kLongText, "--text"));
  }
  KVQ_RETURN_IF_ERROR(files.add_input("depth text (--text)", depth_text));
  note_thread_count("bench", common);
  Timer load_timer;
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  const double map_s = load_timer.seconds();
  // Every page of the weights resident now: timed as part of the load (a mapped file costs its
  // page-in, not a conversion), and before the RSS base below (the depth window's capture does
  // not read the output matrix; the first decode would page it in and count it as cache).
  model->gguf().page_in();
  const double load_s = load_timer.seconds();
  const int n_ctx = depth + n_prompt + n_gen;  // at most 2^28 + 2^21
  const std::string tokens_what = (depth > 0 ? "-d " + std::to_string(depth) + " + " : std::string()) + "-p " +
                                  std::to_string(n_prompt) + " + -n " + std::to_string(n_gen);
  warn_beyond_training("bench", *model, n_ctx, tokens_what + " = " + std::to_string(n_ctx) + " tokens");
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model, "bench", batch);
  std::vector<CacheBench> benches;
  std::vector<const KvCache*> caches;
  for (const CacheSpec& spec : specs) {
    CacheBench b{spec, {}, nullptr, {}, {}};
    KVQ_ASSIGN_OR_RETURN(b.cal, calib.for_spec(ctx, *model, spec));
    KVQ_ASSIGN_OR_RETURN(b.cache, make_cache(spec, model->kv_shape(n_ctx), b.cal.calibration()));
    caches.push_back(b.cache.get());
    benches.push_back(std::move(b));
  }
  // Refused before the window is captured or any token stored: every cache is held at once.
  KVQ_RETURN_IF_ERROR(check_cache_fits(caches, n_ctx, tokens_what));
  std::unique_ptr<KvActivations> window;
  if (depth > 0) {
    KVQ_ASSIGN_OR_RETURN(KvActivations w, capture_depth_window(ctx, *model, depth_text, batch));
    window = std::make_unique<KvActivations>(std::move(w));
  }
  const int n_vocab = model->config().n_vocab;
  Rng rng(1234);
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  for (auto& t : prompt) t = int32_t(rng.below(uint64_t(n_vocab)));
  if (depth == 0) prompt[0] = model->tokenizer().bos_id();  // at depth the prompt continues a text
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  ForwardWorkspace ws;
  // The process before any token is stored (model and its pages, calibration, the depth
  // window), with freed memory handed back: what the run adds is the cache and a workspace
  // bounded by -b and by attention's scratch.
  const double rss_base = settled_rss_bytes();
  const bool one = benches.size() == 1;
  double rss_filled = 0;  // one cache only: after its depth is filled, before any step
  for (int r = 0; r <= reps; ++r) {  // repetition 0 warms up and is not counted
    // A list goes in alternating order (forward, then backward), so that no cache always runs
    // right after the same one.
    for (size_t k = 0; k < benches.size(); ++k) {
      CacheBench& b = benches[r % 2 == 0 ? k : benches.size() - 1 - k];
      KVQ_RETURN_IF_ERROR(back_to_depth(*model, window.get(), b, depth, batch, r));
      if (r == 0 && one) rss_filled = settled_rss_bytes();
      Timer t;
      KVQ_RETURN_IF_ERROR(prefill(ctx, *model, prompt, *b.cache, ws, logits.data(), false, batch));
      const double prefill_s = t.seconds();
      t.reset();
      for (int i = 0; i < n_gen; ++i) {
        const int32_t next[1] = {int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin())};
        KVQ_RETURN_IF_ERROR(model->forward(ctx, next, *b.cache, ws, logits.data(), false));
      }
      const double decode_s = t.seconds();
      if (r == 0) continue;
      b.pp.push_back(n_prompt / prefill_s);
      if (n_gen > 0) b.tg.push_back(n_gen / decode_s);
    }
  }
  std::printf("| model | cache | threads | kernels | depth | pp%d tok/s | tg%d tok/s | cache bytes/token | cache | peak RSS |\n",
              n_prompt, n_gen);
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const CacheBench& b : benches) {
    const size_t bytes = b.cache->bytes_used();
    // Three significant digits: decode at millions of tokens runs below one token per second.
    std::printf("| %s | %s | %d | %s (%s) | %d | %.3g | %.3g | %.1f | %s | %s |\n", printable(common.model).c_str(),
                b.spec.text.c_str(), common.n_threads, common.kernels.c_str(), simd_targets_label().c_str(), depth, median(b.pp),
                b.tg.empty() ? 0.0 : median(b.tg), double(bytes) / b.cache->n_tokens(0),
                format_bytes(double(bytes)).c_str(), format_bytes(peak_rss_bytes()).c_str());
  }
  if (!one) {
    print_ratios(benches, false);
    if (n_gen > 0) print_ratios(benches, true);
  }
  std::printf("load: %.2f s (%s file mapped in place in %.2f s, then paged in)\n", load_s,
              format_bytes(double(std::filesystem::file_size(common.model))).c_str(), map_s);
  // The prediction kvq info makes for this many tokens, against what the process really grew by.
  // Without -d the cache is filled by the timed steps: measured after them (their workspace is
  // freed by then, the cache holds the most it did). RSS moves in pages and by the workspace's
  // arenas and thread stacks (a few MiB): below kRssResolution the growth says nothing about
  // the cache, and a percentage of it would read as a wrong prediction.
  constexpr double kRssResolution = 64.0 * 1024 * 1024;
  for (const CacheBench& b : benches) {
    const size_t bytes = b.cache->bytes_used();
    const int held = b.cache->n_tokens(0);
    KVQ_ASSIGN_OR_RETURN(BitsReport predicted,
                         predict_cache_bits(b.spec, model->kv_shape(n_ctx), held, b.cal.calibration()));
    std::printf("memory: KV cache %s%s%.0f bytes allocated for %d tokens, %.0f predicted (kvq info -c %d)",
                one ? "" : "of ", one ? "" : (b.spec.text + ": ").c_str(), double(bytes), held,
                predicted.total_bytes(), held);
    if (!one) {
      std::printf("; RSS not compared: %zu caches held at once\n", benches.size());
      continue;
    }
    if (depth == 0) rss_filled = settled_rss_bytes();
    const double grew = rss_filled - rss_base;
    std::printf("; RSS grew %.0f bytes while it filled ", grew);
    if (predicted.total_bytes() >= kRssResolution) {
      std::printf("(%+.1f%% of the prediction)", 100.0 * (grew - predicted.total_bytes()) / predicted.total_bytes());
    } else {
      std::printf("(not compared: a cache under %s is below what RSS resolves next to the workspace; fill one "
                  "with -d to compare)", format_bytes(kRssResolution).c_str());
    }
    std::printf("; peak RSS grew %.0f bytes over the run (the cache, steps of -b %d tokens and attention's scratch; "
                "the weights were resident before)\n",
                peak_rss_bytes() - rss_base, batch);
  }
  // Last: its buffer would count in the peak RSS above.
  if (read_bandwidth) {
    const CacheBench& b = benches[0];
    if (!one) std::printf("weight streaming: against the decode of %s\n", b.spec.text.c_str());
    KVQ_RETURN_IF_ERROR(print_streaming_limit(ctx, *model, common.model, b.tg.empty() ? 0 : median(b.tg)));
  }
  return ok_status();
}
}  // namespace

int cmd_bench(const std::vector<std::string>& argv) {
  if (!argv.empty() && argv[0] == "attention") return cmd_bench_attention({argv.begin() + 1, argv.end()});
  if (!argv.empty() && argv[0] == "session") return cmd_bench_session({argv.begin() + 1, argv.end()});
  return report("bench", run(argv));
}

}  // namespace kvq::cli
