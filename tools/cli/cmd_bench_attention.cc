// SPDX-License-Identifier: MIT
// kvq bench attention: decode-attention time per token for one layer of a real attention shape,
// per cache type and depth, as a markdown table (and --json). The work is
// engine/attention_bench.h; this file parses flags and formats.
#include <cstdio>
#include <ctime>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/commands.h"
#include "engine/attention_bench.h"

namespace kvq::cli {

namespace {

constexpr const char* kDefaultCaches = "f16,q8_0,q4_0,int4,kivi-2,kivi-4,kvquant-2,kvquant-3,kvquant-4";

StatusOr<std::vector<int>> parse_depths(const std::string& list) {
  std::vector<int> out;
  for (const auto& item : split_spec_list(list)) {
    char* end = nullptr;
    const long d = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || d < 1 || d > (1 << 30)) {
      return invalid_argument("--depths expects a comma list of token counts, got '" + item + "'");
    }
    out.push_back(int(d));
  }
  return out;
}

void print_markdown(const AttentionBenchResult& r, int n_threads, const std::string& kernels) {
  std::printf("Decode attention, one layer, one query token; %d thread(s), kernels %s (%s).\n", n_threads,
              kernels.c_str(), r.simd_target.c_str());
  std::printf("Read bandwidth %.1f GB/s: %s.\n", r.read_gbps, r.bandwidth_method.c_str());
  if (!r.calibration_note.empty()) std::printf("Calibration: %s.\n", r.calibration_note.c_str());
  std::printf("Every cache of a shape is timed in each repetition, in alternating order; µs/token is the median "
              "of the repetitions, vs f16 the median of each repetition's ratio.\n");
  std::printf("\n| shape | depth | cache | µs/token | bytes read | GB/s | read BW GB/s | of BW | vs f16 |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& w : r.rows) {
    std::printf("| %s | %d | %s | %.0f | %s | %.2f | %.1f | %.0f%% | %.2fx |\n", w.shape.c_str(), w.depth,
                w.cache.c_str(), w.us_per_token, format_bytes(double(w.bytes_read)).c_str(), w.gbps, w.read_gbps,
                100.0 * w.bandwidth_fraction, w.speedup_vs_f16);
  }
}

Status write_json(OutputFile& out, const AttentionBenchResult& r, int n_threads, const std::string& kernels) {
  nlohmann::json j;
  j["threads"] = n_threads;
  j["kernels"] = kernels;
  j["simd_target"] = r.simd_target;
  j["read_gbps"] = r.read_gbps;
  j["bandwidth_method"] = r.bandwidth_method;
  j["calibration"] = r.calibration_note;
  j["date"] = std::time(nullptr);
  auto& rows = j["results"] = nlohmann::json::array();
  for (const auto& w : r.rows) {
    rows.push_back({{"shape", w.shape},
                    {"depth", w.depth},
                    {"cache", w.cache},
                    {"us_per_token", w.us_per_token},
                    {"bytes_read", w.bytes_read},
                    {"gbps", w.gbps},
                    {"read_gbps", w.read_gbps},
                    {"bandwidth_fraction", w.bandwidth_fraction},
                    {"speedup_vs_f16", w.speedup_vs_f16},
                    {"fill_seconds", w.fill_seconds}});
  }
  return out.write(j.dump(1) + "\n");
}

Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  std::string shapes = "llama7b,llama3-8b", depths = "4096,32768,131072", caches = kDefaultCaches, json;
  AttentionBenchOptions o;
  ArgParser p("bench attention");
  p.add_string("--shapes", &shapes, "attention shapes: llama7b, llama3-8b, testbed (default the first two)");
  p.add_string("--depths", &depths, "cache depths in tokens (default 4096,32768,131072)");
  p.add_string("--cache", &caches, std::string("cache types, comma list (default ") + kDefaultCaches +
                                       "); f16 is always measured as the speedup base");
  p.add_int("-t,--threads", &common.n_threads, 1, 512, "threads (default: all cores)");
  p.add_int("-r,--repetitions", &o.repetitions, 1, 1000, "repetitions, each timing every cache in turn; medians are reported (default 3)");
  p.add_string("--kernels", &common.kernels, "simd (default) or ref: scalar reference kernels");
  p.add_string("--json", &json, "also write the results as JSON to FILE");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  KVQ_ASSIGN_OR_RETURN(o.path, parse_kernel_path(common.kernels));
  // The output is checked before the (minutes-long) measurement.
  CommandFiles files;
  std::optional<OutputFile> json_out;
  if (!json.empty()) {
    KVQ_ASSIGN_OR_RETURN(json_out, files.add_output("--json", json));
  }
  for (const auto& name : split_spec_list(shapes)) {
    KVQ_ASSIGN_OR_RETURN(AttentionShape s, attention_shape(name));
    o.shapes.push_back(s);
  }
  KVQ_ASSIGN_OR_RETURN(o.depths, parse_depths(depths));
  for (const auto& item : split_spec_list(caches)) {
    if (item.empty()) return invalid_argument("--cache '" + caches + "' has an empty entry");
    KVQ_ASSIGN_OR_RETURN(CacheSpec s, parse_cache_spec(item));
    o.caches.push_back(std::move(s));
  }
  o.n_threads = common.n_threads;
  o.available_memory = available_memory();
  o.progress = [](const std::string& what, int64_t done, int64_t total, double elapsed) {
    show_progress(what.c_str(), int(done), int(total), elapsed);
  };
  o.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  KVQ_ASSIGN_OR_RETURN(AttentionBenchResult r, run_attention_bench(o));
  print_markdown(r, o.n_threads, common.kernels);
  if (json_out) KVQ_RETURN_IF_ERROR(write_json(*json_out, r, o.n_threads, common.kernels));
  return ok_status();
}

}  // namespace

int cmd_bench_attention(const std::vector<std::string>& argv) { return report("bench attention", run(argv)); }

}  // namespace kvq::cli
