// SPDX-License-Identifier: MIT
// kvq calibrate: Fisher information by backpropagation over calibration windows, then
// per-channel key thresholds and sensitivity-weighted nuq codebooks (KVQuant §2-§5), written to
// a calibration file for --calib FILE. Several --weighting / --outliers values write one file
// per combination from a single Fisher pass.
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <set>

#include "base/printable.h"
#include "base/timer.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/calibration_file.h"
#include "engine/runtime.h"

namespace kvq::cli {

namespace {

std::string variant_path(const std::string& out, const std::string& weighting, const std::string& outliers,
                         const std::string& budget, const std::string& per) {
  const std::filesystem::path p(out);
  const std::string b = budget.empty() ? "" : ".b" + budget;
  const std::string w = per.empty() ? "" : "." + per;
  return (p.parent_path() / (p.stem().string() + "." + weighting + ".o" + outliers + b + w + p.extension().string())).string();
}

Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  std::string text, out, weightings = "fisher-s2", outliers = "0.01", v_outliers_text;
  int windows = 16, window = 0, sinks = 1, prerope = 1, rot = 0, norm = 16, residual = 0, batch = kDefaultBatch;
  uint64_t seed = 0;
  std::string budgets_text, width_per;  // empty: head
  int budget_ctx = 0;
  ArgParser p("calibrate");
  add_common_flags(p, &common);
  add_batch_flag(p, &batch);
  p.add_path("-f,--file", &text, "calibration text (default: shared TinyStories train text); not the evaluation text");
  p.add_path("-o,--output", &out, "calibration file to write (required)");
  p.add_int("--windows", &windows, 1, 100000, "windows of text (default 16)");
  p.add_int("--window", &window, 0, 1 << 20, "tokens per window (default: the model's context)");
  p.add_u64("--seed", &seed, "window placement and k-means seed (default 0)");
  p.add_string("--weighting", &weightings, "k-means weights: fisher-s2 (default), fisher, none; a comma list writes one file each");
  p.add_string("--outliers", &outliers, "outlier fraction the thresholds are set for (default 0.01); a comma list writes one file each");
  p.add_string("--outliers-v", &v_outliers_text,
               "the values' outlier fraction when it differs from the keys' (--outliers), e.g. 0 for key "
               "outliers only; the value spec then takes outliers= this fraction (default: as --outliers)");
  p.add_int("--sinks", &sinks, 0, 1 << 20, "first tokens kept fp16 and excluded from statistics (default 1)");
  p.add_int("--prerope", &prerope, 0, 1, "calibrate keys before RoPE (default 1)");
  p.add_int("--rot", &rot, 0, 1, "fit on Hadamard-rotated rows, for caches with rot=1: values, and keys with --prerope 0 (default 0)");
  p.add_int("--norm", &norm, 8, 16,
            "bits of the values' per-token norm the cache runs with (its norm=16|8, default 16): --bits-budget "
            "accounts and weighs the widths for it, and kvquant-mixed then needs that norm");
  p.add_int("--r", &residual, 0, 1 << 20,
            "fp16 window of the newest tokens the cache runs with (its r=N, default 0): --bits-budget accounts "
            "its bytes, and kvquant-mixed then needs that r");
  p.add_string("--bits-budget", &budgets_text,
               "also choose each layer's K and V width (2/3/4) for --cache kvquant-mixed: least Fisher-weighted "
               "error within this many bits per value as allocated, e.g. 2.5; a comma list writes one file each");
  p.add_int("--budget-ctx", &budget_ctx, 0, 1 << 30,
            "tokens at which --bits-budget is accounted (default: the model's context)");
  p.add_string("--width-per", &width_per,
               "what --bits-budget gives a width: head (each KV head of each layer's K and V, default: steps "
               "n_kv_heads times finer) or layer (each layer's K and V); a comma list writes one file each");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  if (out.empty()) return invalid_argument("no output given: pass -o FILE");
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  std::vector<CodebookWeighting> ws;
  for (const auto& w : split_spec_list(weightings)) {
    KVQ_ASSIGN_OR_RETURN(CodebookWeighting x, parse_weighting(w));
    ws.push_back(x);
  }
  auto fraction = [](const std::string& o, const char* flag) -> StatusOr<double> {
    char* end = nullptr;
    const double x = std::strtod(o.c_str(), &end);
    if (o.empty() || *end != '\0' || !(x >= 0.0 && x <= 0.5)) {
      return invalid_argument(std::string(flag) + " must be fractions in [0, 0.5], got '" + printable(o) + "'");
    }
    return x;
  };
  std::vector<std::pair<std::string, double>> os;
  for (const auto& o : split_spec_list(outliers)) {
    KVQ_ASSIGN_OR_RETURN(double x, fraction(o, "--outliers"));
    os.emplace_back(o, x);
  }
  // The values' fraction: one for every file (-1: each file's --outliers).
  double v_outliers = -1;
  if (!v_outliers_text.empty()) {
    KVQ_ASSIGN_OR_RETURN(v_outliers, fraction(v_outliers_text, "--outliers-v"));
  }
  auto values_fraction = [&](double keys) { return v_outliers >= 0 ? v_outliers : keys; };
  std::vector<std::pair<std::string, double>> bs;  // empty: no per-layer widths
  if (!budgets_text.empty()) {
    for (const auto& b : split_spec_list(budgets_text)) {
      char* end = nullptr;
      const double x = std::strtod(b.c_str(), &end);
      if (b.empty() || *end != '\0' || !(x > 0.0 && x <= 32.0)) {
        return invalid_argument("--bits-budget must be bits per value in (0, 32], got '" + printable(b) + "'");
      }
      bs.emplace_back(b, x);
    }
  }
  if (!bs.empty() && ws.size() == 1 && ws[0] == CodebookWeighting::kNone) {
    return invalid_argument("--bits-budget weighs each layer's error by its Fisher information: drop --weighting none");
  }
  if (budget_ctx > 0 && bs.empty()) return invalid_argument("--budget-ctx is used only with --bits-budget");
  std::vector<std::string> pers;  // "layer" / "head"
  for (const auto& w : split_spec_list(width_per.empty() ? "head" : width_per)) {
    if (w != "layer" && w != "head") {
      return invalid_argument("--width-per must be layer or head (or a comma list of them), got '" + printable(w) + "'");
    }
    if (std::find(pers.begin(), pers.end(), w) == pers.end()) pers.push_back(w);
  }
  if (pers.empty()) return invalid_argument("--width-per must be layer or head, got ''");
  if (!width_per.empty() && bs.empty()) return invalid_argument("--width-per is used only with --bits-budget");
  if (bs.empty()) pers = {"layer"};
  if (norm != 16 && norm != 8) return invalid_argument("--norm must be 16 or 8, got " + std::to_string(norm));
  if (residual > 0 && bs.empty()) return invalid_argument("--r is used only with --bits-budget");
  const std::vector<std::pair<std::string, double>> budgets = bs.empty() ? decltype(bs){{"", 0.0}} : bs;
  // Every file is checked before any work (the outputs against the inputs and each other).
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  if (text.empty()) {
    KVQ_ASSIGN_OR_RETURN(text, find_shared_text(common.model, kCalibrationText, "-f"));
  }
  KVQ_RETURN_IF_ERROR(files.add_input("text file (-f)", text));
  std::vector<std::pair<std::string, OutputFile>> outputs;
  for (auto w : ws) {
    for (const auto& o : os) {
      for (const auto& b : budgets) {
        for (const auto& per : pers) {
          const std::string path_out =
              ws.size() * os.size() * budgets.size() * pers.size() == 1
                  ? out
                  : variant_path(out, weighting_name(w), o.first + (v_outliers >= 0 ? "v" + v_outliers_text : ""),
                                 budgets.size() > 1 ? b.first : "",
                                 pers.size() > 1 ? per : "");
          KVQ_ASSIGN_OR_RETURN(OutputFile f, files.add_output("-o", path_out));
          outputs.emplace_back(path_out, std::move(f));
        }
      }
    }
  }
  note_thread_count("calibrate", common);
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  // A budget below every layer at 2 bits is refused before the (long) Fisher pass; in a list
  // of outlier fractions and budgets such combinations are skipped with a note instead.
  const ModelConfig& mc = model->config();
  // A file's settings for key outlier fraction o, one description for the check below and for
  // the files written after the Fisher pass (CalibrationFile::build keeps the model's shape).
  auto meta_for = [&](double o) {
    CalibrationMeta m;
    m.n_layers = uint32_t(mc.n_layers);
    m.n_kv_heads = uint32_t(mc.n_kv_heads);
    m.head_dim = uint32_t(mc.head_dim);
    m.text = text;
    m.outliers = o;
    m.v_outliers = values_fraction(o);
    m.sinks = sinks;
    m.pre_rope = prerope != 0;
    m.rot = rot != 0;
    m.norm_bits = norm;
    m.residual = residual;
    return m;
  };
  std::set<std::pair<std::string, std::string>> skipped;  // (outliers, budget)
  for (const auto& [b_text, bits_budget] : bs) {
    for (const auto& o : os) {
      KVQ_ASSIGN_OR_RETURN(BitsReport r, account_bits(planned_cache_config(meta_for(o.second), 2),
                                                      budget_ctx > 0 ? budget_ctx : mc.n_ctx_train));
      if (r.bits_per_value() > bits_budget) {
        char m[200];
        std::snprintf(m, sizeof m, "--bits-budget %g is below %.3f bits per value, what every layer at 2 bits "
                      "allocates at %d tokens (outliers %s)", bits_budget, r.bits_per_value(),
                      budget_ctx > 0 ? budget_ctx : mc.n_ctx_train,
                      (o.first + (v_outliers >= 0 ? ", values " + v_outliers_text : "")).c_str());
        if (os.size() * bs.size() == 1) return invalid_argument(m);
        std::fprintf(stderr, "kvq calibrate: note: %s: no file for it\n", m);
        skipped.emplace(o.first, b_text);
      }
    }
  }
  if (!bs.empty() && skipped.size() == os.size() * bs.size()) {
    return invalid_argument("every --bits-budget is below what every layer at 2 bits allocates");
  }
  KVQ_ASSIGN_OR_RETURN(std::string body, read_text_file(text, "text file (-f)"));
  const auto tokens = model->tokenizer().encode(body, true, true);
  CalibrationArgs ca;
  ca.n_windows = windows;
  ca.window = window > 0 ? window : model->config().n_ctx_train;
  KVQ_RETURN_IF_ERROR(check_calibration_sinks(sinks, ca.window));
  warn_beyond_training("calibrate", *model, ca.window, "--window " + std::to_string(ca.window));
  ca.seed = seed;
  ca.batch = batch;  // used by the plain capture only: a Fisher pass backpropagates the whole window
  ca.fisher = false;
  for (auto w : ws) ca.fisher |= w != CodebookWeighting::kNone;
  ExecContext ctx(common.n_threads, path);
  Timer timer;
  std::fprintf(stderr, "kvq calibrate: %s, %d windows of %d tokens%s\n", printable(text).c_str(), ca.n_windows, ca.window,
               ca.fisher ? ", Fisher by backpropagation" : "");
  KVQ_ASSIGN_OR_RETURN(KvActivations acts, KvActivations::capture(ctx, *model, tokens, ca, [&](int d, int t) {
                         show_progress("windows (forward + backward)", d, t, timer.seconds());
                       }));
  const double capture_s = timer.seconds();
  size_t next_out = 0;
  for (auto w : ws) {
    for (const auto& [o_text, o] : os) {
      CalibrationMeta meta = meta_for(o);
      meta.weighting = w;
      Timer fit;
      KVQ_ASSIGN_OR_RETURN(CalibrationFile f, CalibrationFile::build(acts, *model, meta, [&](int d, int t) {
                             show_progress("codebooks (layer x K/V x bits)", d, t, fit.seconds());
                           }));
      // One codebook fit serves every budget: only the per-layer widths differ.
      for (const auto& [b_text, bits_budget] : budgets) {
        for (const auto& per : pers) {
          if (skipped.count({o_text, b_text})) {
            ++next_out;
            continue;
          }
          if (bits_budget > 0) {
            KVQ_RETURN_IF_ERROR(f.choose_widths(acts, bits_budget, budget_ctx > 0 ? budget_ctx : model->config().n_ctx_train,
                                                per == "head"));
          }
          auto& [path_out, file_out] = outputs[next_out++];
          KVQ_RETURN_IF_ERROR(f.save(file_out));
          std::printf("wrote %s: %s\n", printable(path_out).c_str(), f.describe().c_str());
          if (f.mixed()) std::printf("%s", f.describe_mixed().c_str());
        }
      }
    }
  }
  std::fprintf(stderr, "kvq calibrate: %.1f s (windows %.1f s)\n", timer.seconds(), capture_s);
  return ok_status();
}
}  // namespace

int cmd_calibrate(const std::vector<std::string>& argv) { return report("calibrate", run(argv)); }

}  // namespace kvq::cli
