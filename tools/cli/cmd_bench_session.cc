// SPDX-License-Identifier: MIT
// kvq bench session: per cache type, the time to prefill N tokens of a text against the time to
// save that cache to a session file and to restore it into a fresh cache (engine/session.h),
// with the file's size against bytes_used(); every restore is checked (tokens, bytes_used,
// every layer's read() bit for bit). Medians of -r repetitions, all measured in one run.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "base/printable.h"
#include "base/timer.h"
#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/prefill.h"
#include "engine/session.h"

namespace kvq::cli {

namespace {

constexpr const char* kDefaultCaches = "f16,q8_0,q4_0,int4,kivi-2,kivi-4,kvquant-2,kvquant-3";
constexpr size_t kTextBytes = 256 * 1024;

// Whether b holds what a holds: every layer and head read() bit for bit.
bool same_contents(const KvCache& a, const KvCache& b) {
  const std::vector<float> x = read_all(a), y = read_all(b);
  return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * 4) == 0);
}

struct Row {
  std::string cache;
  double bytes_used = 0, file_bytes = 0, prefill_ms = 0, save_ms = 0, restore_ms = 0;
};

Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  cache_args.cache = kDefaultCaches;
  int n_tokens = 1024, reps = 3, batch = kDefaultBatch;
  std::string text, file;
  ArgParser p("bench session");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, true,
                  std::string("KV cache types, comma-separated (default ") + kDefaultCaches + "; docs/CACHE_SPEC.md)");
  p.add_int("-p,--n-prompt", &n_tokens, 1, 1 << 20, "tokens to prefill, save and restore (default 1024)");
  p.add_int("-r,--repetitions", &reps, 1, 1000, "repetitions; medians are reported (default 3)");
  p.add_path("--text", &text, "text to prefill (default: ../text/long/war_and_peace.txt next to the model's folder)");
  p.add_path("-o,--output", &file, "the session file written and read (default: a temporary file, removed)");
  add_batch_flag(p, &batch);
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  for (const CacheSpec& spec : specs) {
    if (spec.needs_calibration() && cache_args.calib.empty()) {
      return invalid_argument("'" + spec.text + "' needs calibration: pass --calib auto or --calib FILE, or list "
                              "only other caches in --cache");
    }
  }
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  if (text.empty()) {
    KVQ_ASSIGN_OR_RETURN(text, find_shared_text(common.model, kLongText, "--text"));
  }
  KVQ_RETURN_IF_ERROR(files.add_input("text (--text)", text));
  const bool temporary = file.empty();
  if (temporary) {
    const char* tmp = std::getenv("TMPDIR");
    file = std::string(tmp && *tmp ? tmp : "/tmp") + "/kvq-bench-session-" + std::to_string(::getpid()) + ".kvqs";
  }
  KVQ_RETURN_IF_ERROR(files.add_output("session file (-o)", file).status());
  note_thread_count("bench session", common);
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  KVQ_ASSIGN_OR_RETURN(std::string body, read_text_file(text, "text (--text)"));
  body.resize(std::min(body.size(), kTextBytes));
  std::vector<int32_t> tokens = model->tokenizer().encode(body, true, true);
  if (tokens.size() < size_t(n_tokens)) {
    return invalid_argument("--text " + printable(text) + " has " + std::to_string(tokens.size()) +
                            " tokens in its first " + std::to_string(kTextBytes) + " bytes, fewer than -p " +
                            std::to_string(n_tokens));
  }
  tokens.resize(size_t(n_tokens));
  warn_beyond_training("bench session", *model, n_tokens, "-p " + std::to_string(n_tokens));
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model, "bench session", batch);
  const int nv = model->config().n_vocab;
  std::vector<Row> rows;
  for (const CacheSpec& spec : specs) {
    KVQ_ASSIGN_OR_RETURN(auto cal, calib.for_spec(ctx, *model, spec));
    auto fresh = [&]() { return make_cache(spec, model->kv_shape(n_tokens), cal.calibration()); };
    KVQ_ASSIGN_OR_RETURN(auto cache, fresh());
    KVQ_RETURN_IF_ERROR(check_cache_fits({cache.get()}, n_tokens, "-p " + std::to_string(n_tokens)));
    std::vector<double> prefill_ms, save_ms, restore_ms;
    std::vector<float> logits(static_cast<size_t>(nv));
    ForwardWorkspace ws;
    Row row;
    row.cache = cache->name();
    for (int r = 0; r < reps; ++r) {
      cache->clear();
      Timer t;
      KVQ_RETURN_IF_ERROR(prefill(ctx, *model, tokens, *cache, ws, logits.data(), false, batch));
      prefill_ms.push_back(1e3 * t.seconds());
      KVQ_ASSIGN_OR_RETURN(OutputFile out, OutputFile::prepare(file, "session file (-o)"));
      t.reset();
      KVQ_ASSIGN_OR_RETURN(const uint64_t bytes, save_session(out, *model, *cache, tokens));
      save_ms.push_back(1e3 * t.seconds());
      KVQ_ASSIGN_OR_RETURN(auto restored, fresh());
      t.reset();
      KVQ_ASSIGN_OR_RETURN(const std::vector<int32_t> back, load_session(file, *model, *restored));
      restore_ms.push_back(1e3 * t.seconds());
      if (back != tokens || restored->bytes_used() != cache->bytes_used() || !same_contents(*cache, *restored)) {
        return internal_error("the restored " + row.cache + " cache differs from the saved one");
      }
      row.bytes_used = double(cache->bytes_used());
      row.file_bytes = double(bytes);
    }
    row.prefill_ms = median(prefill_ms);
    row.save_ms = median(save_ms);
    row.restore_ms = median(restore_ms);
    rows.push_back(row);
    std::fprintf(stderr, "kvq bench session: %s done\n", row.cache.c_str());
  }
  if (temporary) ::unlink(file.c_str());
  std::printf("Session save/restore of %d tokens (%s), %d thread(s), median of %d; every restore checked bit for bit.\n",
              n_tokens, printable(text).c_str(), common.n_threads, reps);
  if (!calib.description().empty()) std::printf("Calibration: %s.\n", calib.description().c_str());
  std::printf("\n| cache | bytes_used | file bytes | file / bytes_used | prefill ms | save ms | restore ms | "
              "restore vs prefill |\n|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %.0f | %.0f | %.4f | %.1f | %.2f | %.2f | %.0fx |\n", r.cache.c_str(), r.bytes_used,
                r.file_bytes, r.file_bytes / std::max(1.0, r.bytes_used), r.prefill_ms, r.save_ms, r.restore_ms,
                r.prefill_ms / std::max(1e-6, r.restore_ms));
  }
  return ok_status();
}

}  // namespace

int cmd_bench_session(const std::vector<std::string>& argv) { return report("bench session", run(argv)); }

}  // namespace kvq::cli
