// SPDX-License-Identifier: MIT
// kvq frontier: the quality-versus-bits report of issue 13 from `kvq ppl --json` files of one
// text and protocol: one table per bit budget (rows binned to the nearest budget by the bits
// they actually allocated), KL with its standard error and the paired difference to the best
// row of the table, llama.cpp's cache types from a golden file beside them, the Pareto frontier
// (no other row has fewer or equal bits and lower KL), and optionally a KL-vs-bits plot.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/printable.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/frontier_input.h"
#include "cli/plot.h"
#include "engine/perplexity.h"

namespace kvq::cli {

namespace {

std::string pm(double x, double se, const char* fmt) {
  if (!std::isfinite(x)) return "-";
  char buf[96];
  std::snprintf(buf, sizeof buf, fmt, x, se);
  return buf;
}

void print_bin(const std::string& title, std::vector<const Entry*> rows) {
  if (rows.empty()) return;
  std::sort(rows.begin(), rows.end(), [](const Entry* a, const Entry* b) { return a->r.kl_mean < b->r.kl_mean; });
  const Entry* best = nullptr;  // the lowest-KL row with per-token KL: the paired reference
  for (const Entry* e : rows) {
    if (!e->r.token_kl.empty()) {
      best = e;
      break;
    }
  }
  std::printf("\n### %s\n\n| cache | bits/value | ΔPPL ± paired s.e. | ΔPPL %% | KL mean ± s.e. | ΔKL vs %s ± paired s.e. | KL p99 | top-1 | frontier |\n",
              title.c_str(), best ? printable(best->label).c_str() : "best");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const Entry* e : rows) {
    std::string dkl = e == best ? "(ref)" : "-";
    if (best && e != best) {
      const auto d = paired_kl_difference(e->r, best->r);
      if (d.ok()) dkl = pm(d->mean, d->std_error, "%+.5f ± %.5f");
    }
    const double pct = e->r.base_ppl > 0 ? 100.0 * e->r.delta_ppl / e->r.base_ppl : NAN;
    std::printf("| %s | %.3f | %s | %s | %s | %s | %s | %s | %s |\n", printable(e->label).c_str(), e->bits,
                pm(e->r.delta_ppl, e->r.delta_ppl_stderr, "%+.4f ± %.4f").c_str(), pm(pct, 0, "%+.2f%%").c_str(),
                pm(e->r.kl_mean, e->r.kl_stderr, "%.5f ± %.5f").c_str(), dkl.c_str(), pm(e->r.kl_p99, 0, "%.4f").c_str(),
                pm(100.0 * e->r.top1_agreement, 0, "%.2f%%").c_str(), e->pareto ? "yes" : "");
  }
}

StatusOr<std::vector<double>> parse_budgets(const std::string& text) {
  std::vector<double> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    const double b = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(b > 0 && b <= 32)) {
      return invalid_argument("--budgets: '" + printable(item) + "' is not a number of bits in (0, 32]");
    }
    out.push_back(b);
  }
  if (out.empty()) return invalid_argument("--budgets is empty");
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string bits_text(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", b);
  return buf;
}

Status run(const std::vector<std::string>& argv) {
  std::string jsons, peers, budgets_text = "2,2.5,3,3.5,4", plot, title;
  ArgParser p("frontier");
  p.add_string("--json", &jsons, "comma-separated `kvq ppl --json` files of one run setting (same text, -c, chunks); "
                                 "--token-kl in them adds paired KL differences");
  p.add_path("--peers", &peers, "llama.cpp cache-type KL summaries (../shared/golden/*.llamacpp-cache-types.txt)");
  p.add_string("--budgets", &budgets_text, "bit budgets of the tables (default 2,2.5,3,3.5,4); rows go to the nearest");
  p.add_path("--plot", &plot, "draw KL against bits per value, with the Pareto frontier, to FILE.png (gnuplot)");
  p.add_string("--title", &title, "plot title (default: model and text)");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  if (jsons.empty()) return invalid_argument("no results given: pass --json A.json[,B.json...] from kvq ppl --json");
  KVQ_ASSIGN_OR_RETURN(const std::vector<double> budgets, parse_budgets(budgets_text));
  CommandFiles files;
  std::vector<std::string> paths;
  std::stringstream list(jsons);
  for (std::string path; std::getline(list, path, ',');) {
    KVQ_RETURN_IF_ERROR(files.add_input("--json", path));
    paths.push_back(path);
  }
  KVQ_RETURN_IF_ERROR(files.add_input("--peers", peers));
  std::optional<OutputFile> plot_out;
  if (!plot.empty()) {
    KVQ_RETURN_IF_ERROR(check_gnuplot());
    KVQ_ASSIGN_OR_RETURN(plot_out, files.add_output("--plot", plot));
  }
  nlohmann::json header;
  std::vector<Entry> entries;
  for (const auto& path : paths) {
    KVQ_ASSIGN_OR_RETURN(std::string text, read_text_file(path, "--json"));
    KVQ_RETURN_IF_ERROR(parse_ppl_json(text, path, &header, &entries));
  }
  if (entries.empty()) return invalid_argument("--json: no row compared with a base (run kvq ppl with several caches or --kl-base)");
  // Labels must tell rows apart: the same cache from two files gets the file's name.
  std::vector<bool> repeated(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    for (size_t j = 0; j < entries.size(); ++j) repeated[i] = repeated[i] || (i != j && entries[i].label == entries[j].label);
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    if (repeated[i]) entries[i].label += " (" + entries[i].source + ")";
  }
  if (!peers.empty()) {
    KVQ_ASSIGN_OR_RETURN(std::string text, read_text_file(peers, "--peers"));
    KVQ_ASSIGN_OR_RETURN(auto peer_rows, parse_peers(text, peers));
    // Peers are comparable only when scored on the same tokens: their base PPL must be ours.
    const double base = entries.front().r.base_ppl;
    for (auto& e : peer_rows) {
      if (e.r.base_ppl > 0 && std::isfinite(base) && std::fabs(e.r.base_ppl / base - 1.0) > 1e-3) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "--peers %s: %s was scored on other tokens (base PPL %.4f, this run's %.4f)",
                      printable(peers).c_str(), printable(e.label).c_str(), e.r.base_ppl, base);
        return invalid_argument(buf);
      }
      entries.push_back(std::move(e));
    }
  }
  for (auto& e : entries) {
    e.pareto = std::none_of(entries.begin(), entries.end(), [&](const Entry& o) {
      return &o != &e && o.bits <= e.bits && o.r.kl_mean < e.r.kl_mean;
    });
  }
  std::printf("run: %s\n", printable(dump_json(header)).c_str());
  // Rows go to the nearest budget; those more than a quarter bit above the largest to a last table.
  std::vector<std::vector<const Entry*>> bins(budgets.size() + 1);
  for (const auto& e : entries) {
    size_t b = 0;
    for (size_t i = 1; i < budgets.size(); ++i) {
      if (std::fabs(e.bits - budgets[i]) < std::fabs(e.bits - budgets[b])) b = i;
    }
    if (e.bits > budgets.back() + 0.25) b = budgets.size();
    bins[b].push_back(&e);
  }
  for (size_t b = 0; b < budgets.size(); ++b) print_bin("≈ " + bits_text(budgets[b]) + " bits per value", bins[b]);
  print_bin("above " + bits_text(budgets.back() + 0.25) + " bits per value", bins.back());
  std::vector<const Entry*> front;
  for (const auto& e : entries) {
    if (e.pareto) front.push_back(&e);
  }
  std::sort(front.begin(), front.end(), [](const Entry* a, const Entry* b) { return a->bits < b->bits; });
  std::printf("\nPareto frontier (KL against bits, lowest bits first):");
  for (const Entry* e : front) std::printf(" %s (%.3f bits, KL %.5f);", printable(e->label).c_str(), e->bits, e->r.kl_mean);
  std::printf("\n");
  if (plot_out) {
    PlotSeries ours{"kvq", {}, false}, theirs{"llama.cpp", {}, false}, line{"Pareto frontier", {}, true};
    // Labels on llama.cpp's points and on the frontier only: the rest would overlap.
    for (const auto& e : entries) {
      (e.peer ? theirs : ours).points.push_back({e.bits, e.r.kl_mean, e.peer || e.pareto ? e.label : ""});
    }
    for (const Entry* e : front) line.points.push_back({e->bits, e->r.kl_mean, ""});
    if (title.empty()) {
      title = string_or(header, "model", "") + " on " +
              std::filesystem::path(string_or(header, "text", "")).filename().string() + ": KL vs bits/value";
    }
    KVQ_RETURN_IF_ERROR(draw_plot(*plot_out, {ours, theirs, line}, title,
                                  "bits per value (as allocated, incl. scales, outliers, windows, sinks)",
                                  "KL(f16 || cache), mean per token"));
  }
  return ok_status();
}

}  // namespace

int cmd_frontier(const std::vector<std::string>& argv) { return report("frontier", run(argv)); }

}  // namespace kvq::cli
