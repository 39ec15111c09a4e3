// SPDX-License-Identifier: MIT
// kvq bench-serve: the serving engine under load, per cache type, in process (no HTTP): N
// clients submit at once at a fixed KV budget; reports how many sequences the budget admits
// at once, total decode tokens/s, time to first token and time per output token (p50/p99).
// Sequences ignore EOS so every one generates exactly its tokens.
#include <algorithm>
#include <cstdio>

#include "base/timer.h"
#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/serve/scheduler.h"

namespace kvq::cli {

namespace {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p / 100.0 * double(v.size() - 1);
  const size_t i = size_t(pos);
  return i + 1 < v.size() ? v[i] + (pos - double(i)) * (v[i + 1] - v[i]) : v[i];
}

Status bench_serve(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  cache_args.cache = "f16,q8_0,kivi-2,kvquant-3";
  SchedulerOptions so;
  so.max_seqs = 4096;
  so.max_queue = 1 << 20;
  std::string kv_budget = "1GiB";
  int n_clients = 64, n_prompt = 32, n_seq = 1024;
  bool json_out = false;
  ArgParser p("bench-serve");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, true,
                  "KV cache type, or a comma-separated list run one after another (default f16; docs/CACHE_SPEC.md)");
  p.add_string("--kv-budget", &kv_budget, "KV bytes for all sequences (default 1GiB; 'unlimited')");
  p.add_int("--clients", &n_clients, 0, 1 << 20,
            "concurrent requests, all submitted at once (default 64; 0: only the capacity, nothing runs)");
  p.add_int("-p,--n-prompt", &n_prompt, 1, 1 << 20, "prompt tokens per sequence (default 32)");
  p.add_int("-c,--seq-len", &n_seq, 2, 1 << 24, "tokens per sequence, prompt + generated (default 1024)");
  p.add_int("-np,--parallel", &so.max_seqs, 1, 1 << 20, "sequences decoding at once at most (default 4096)");
  add_batch_flag(p, &so.prefill_chunk);
  p.add_flag("--json", &json_out, "one JSON object per cache type instead of the table");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  if (n_prompt >= n_seq) return invalid_argument("-p must be below -c");
  if (kv_budget != "unlimited") {
    KVQ_ASSIGN_OR_RETURN(so.kv_budget, parse_bytes(kv_budget, "--kv-budget"));
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model, "bench-serve", so.prefill_chunk);
  so.n_ctx = n_seq;
  // Distinct prompts: tokens of one text at different offsets (the testbed's vocabulary).
  const std::vector<int32_t> text = model->tokenizer().encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, "
      "she saw a big red ball in the park. She wanted to play with it, but a boy named Tom had it first. ",
      false, false);
  // The cache column is as wide as the longest spec, so that the figures stay in their columns.
  int name_width = 12;
  for (const CacheSpec& spec : specs) name_width = std::max(name_width, int(spec.text.size()));
  // The table's head goes out with its first row, so that a refusal (a budget too small for
  // one sequence) is not preceded by an empty table.
  bool head_printed = false;
  auto print_head = [&] {
    if (json_out || head_printed) return;
    head_printed = true;
    std::printf("kv budget %s, %d clients, %d+%d tokens each, %d threads\n", kv_budget.c_str(), n_clients, n_prompt,
                n_seq - n_prompt, common.n_threads);
    std::printf("%-*s %8s %9s %8s %11s %9s %9s %9s %9s %8s\n", name_width, "cache", "capacity", "admitted", "bits/v",
                "decode t/s", "ttft p50", "ttft p99", "tpot p50", "tpot p99", "wall s");
  };
  for (const CacheSpec& spec : specs) {
    so.spec = spec;
    KVQ_ASSIGN_OR_RETURN(auto cal, calib.for_spec(ctx, *model, spec));
    so.calib = cal.calibration();
    KVQ_ASSIGN_OR_RETURN(auto sched, Scheduler::create(*model, ctx, so));
    // Sequences of n_seq tokens the budget holds at once, by the scheduler's reservations.
    const size_t per_seq = sched->reservation_bytes(n_seq);
    const long capacity = so.kv_budget == PagePool::kUnlimited
                              ? -1
                              : long((so.kv_budget - sched->step_headroom()) / std::max<size_t>(1, per_seq));
    // Bits per value as allocated for one whole sequence (the live figure counts partly
    // filled pages).
    KVQ_ASSIGN_OR_RETURN(BitsReport br, predict_cache_bits(spec, model->kv_shape(n_seq), n_seq, so.calib));
    const double bits = br.bits_per_value();
    std::vector<std::shared_ptr<SeqChannel>> chs;
    Timer wall;
    for (int i = 0; i < n_clients; ++i) {
      SeqRequest r;
      if (model->tokenizer().add_bos()) r.prompt.push_back(model->tokenizer().bos_id());
      for (int t = int(r.prompt.size()); t < n_prompt; ++t) r.prompt.push_back(text[size_t(i + t) % text.size()]);
      r.max_tokens = n_seq - n_prompt;
      r.sampling.temp = 0;
      r.ignore_eos = true;
      SubmitResult res = sched->submit(std::move(r));
      if (!res.channel) return res.status.with_context(spec.text);
      chs.push_back(res.channel);
    }
    int peak_active = 0;
    while (sched->step()) peak_active = std::max(peak_active, sched->metrics().n_active);
    const double secs = wall.seconds();
    std::vector<double> ttft, tpot;
    int64_t generated = 0;
    for (const auto& ch : chs) {
      SeqUpdate u;
      while (ch->wait(&u, std::chrono::milliseconds(0))) {
        if (u.done && u.finish == FinishReason::kError) return u.error.with_context(spec.text);
      }
      const int n = ch->n_generated();
      generated += n;
      ttft.push_back(std::chrono::duration<double>(ch->t_first_token() - ch->t_submit()).count());
      if (n > 1) tpot.push_back(std::chrono::duration<double>(ch->t_last_token() - ch->t_first_token()).count() / (n - 1));
    }
    const double tps = double(generated) / secs;
    if (json_out) {
      std::printf("{\"cache\":\"%s\",\"kv_budget\":%zu,\"clients\":%d,\"capacity\":%ld,\"admitted\":%d,\"bits_per_value\":%.3f,"
                  "\"decode_tokens_per_s\":%.1f,\"ttft_p50_s\":%.4f,\"ttft_p99_s\":%.4f,\"tpot_p50_s\":%.5f,"
                  "\"tpot_p99_s\":%.5f,\"wall_s\":%.2f}\n",
                  spec.text.c_str(), so.kv_budget, n_clients, capacity, peak_active, bits, tps, percentile(ttft, 50),
                  percentile(ttft, 99), percentile(tpot, 50), percentile(tpot, 99), secs);
    } else {
      print_head();
      std::printf("%-*s %8ld %9d %8.2f %11.1f %8.3fs %8.3fs %7.2fms %7.2fms %8.1f\n", name_width, spec.text.c_str(),
                  capacity, peak_active, bits, tps, percentile(ttft, 50), percentile(ttft, 99), 1e3 * percentile(tpot, 50),
                  1e3 * percentile(tpot, 99), secs);
    }
    std::fflush(stdout);
    // The finished sequences' caches stay in their slots; without them the pool must be empty.
    sched->drop_idle_caches();
    if (sched->pool().bytes_in_use() != 0) return internal_error("pages left in the pool after the run");
  }
  return ok_status();
}

}  // namespace

int cmd_bench_serve(const std::vector<std::string>& argv) { return report("bench-serve", bench_serve(argv)); }

}  // namespace kvq::cli
