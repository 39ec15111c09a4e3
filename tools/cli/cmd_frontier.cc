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
#include "cli/plot.h"
#include "engine/perplexity.h"

namespace kvq::cli {

namespace {

struct Entry {
  std::string label;
  std::string source;  // the --json file's name, to tell equal labels apart
  bool peer = false;  // from the llama.cpp golden file: no per-token KL, no p99 of ours
  double bits = 0;
  PplResult r;        // has_kl, kl_mean, kl_stderr, kl_p99, delta_ppl(_stderr), base_ppl, top1, token_kl
  bool pareto = false;
};

// Bits per value of llama.cpp's cache types (ggml block sizes: 32 values plus their scales).
std::optional<double> ggml_cache_bits(const std::string& name) {
  static const std::pair<const char*, double> kBits[] = {{"f16", 16.0},   {"q8_0", 8.5},  {"q5_1", 6.0},
                                                         {"q5_0", 5.5},   {"q4_1", 5.0},  {"q4_0", 4.5},
                                                         {"iq4_nl", 4.5}};
  for (const auto& [n, b] : kBits) {
    if (name == n) return b;
  }
  return std::nullopt;
}

// "KEY X ± Y" in a llama-perplexity --kl-divergence summary line.
bool find_value(const std::string& line, const std::string& key, double* x, double* se) {
  const size_t at = line.find(key);
  if (at == std::string::npos) return false;
  const char* p = line.c_str() + at + key.size();
  char* end = nullptr;
  *x = std::strtod(p, &end);
  if (end == p || !std::isfinite(*x)) return false;
  *se = 0;
  const std::string rest(end);
  const size_t pm = rest.find("± ");
  if (pm != std::string::npos && pm < 3) *se = std::strtod(rest.c_str() + pm + 3, nullptr);
  return true;
}

// The golden file: one line per cache type, "name: <llama-perplexity KL summary>".
StatusOr<std::vector<Entry>> read_peers(const std::string& path) {
  KVQ_ASSIGN_OR_RETURN(std::string text, read_text_file(path, "--peers"));
  std::vector<Entry> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string name = line.substr(0, colon);
    double kl = 0, kl_se = 0, dppl = 0, dppl_se = 0, top1 = 0, top1_se = 0, ppl_q = 0, ppl_se = 0;
    if (!find_value(line, "Mean KLD:", &kl, &kl_se)) continue;  // the f16 base line has no KL
    const auto bits = ggml_cache_bits(name);
    if (!bits) return invalid_argument("--peers " + printable(path) + ": unknown llama.cpp cache type '" + printable(name) + "'");
    Entry e;
    e.label = "llama.cpp " + name;
    e.peer = true;
    e.bits = *bits;
    e.r.has_kl = true;
    e.r.kl_mean = kl;
    e.r.kl_stderr = kl_se;
    double p99_se = 0;
    if (!find_value(line, "99.0% KLD:", &e.r.kl_p99, &p99_se)) e.r.kl_p99 = NAN;
    if (find_value(line, "PPL(Q)-PPL(base) :", &dppl, &dppl_se)) {
      e.r.delta_ppl = dppl;
      e.r.delta_ppl_stderr = dppl_se;
    }
    if (find_value(line, "Mean PPL(base) :", &e.r.base_ppl, &ppl_se) && find_value(line, "Mean PPL(Q) :", &ppl_q, &ppl_se)) {
      e.r.ppl = ppl_q;
    }
    if (find_value(line, "Same top p:", &top1, &top1_se)) e.r.top1_agreement = top1 / 100.0;
    out.push_back(std::move(e));
  }
  if (out.empty()) return invalid_argument("--peers " + printable(path) + ": no 'name: ... Mean KLD: X' lines");
  return out;
}

// Typed lookups that never throw: a field of another type reads as absent.
double number_or(const nlohmann::json& j, const char* key, double fallback) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}
std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
std::string string_or(const nlohmann::json& j, const char* key, const std::string& fallback) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// Rows of one `kvq ppl --json` file that were compared with a base (f16 rows have no KL).
// header receives the run identity that every file must share.
Status read_json(const std::string& path, nlohmann::json* header, std::vector<Entry>* out) {
  KVQ_ASSIGN_OR_RETURN(std::string text, read_text_file(path, "--json"));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("results") || !j["results"].is_array()) {
    return invalid_argument("--json " + printable(path) + " is not the JSON of `kvq ppl --json`");
  }
  nlohmann::json id = nlohmann::json::object();
  for (const char* k : {"text", "protocol", "mode", "n_ctx", "chunks", "scored_tokens"}) {
    if (!j.contains(k)) return invalid_argument("--json " + printable(path) + " has no '" + k + "'");
    id[k] = j[k];
  }
  id["model"] = std::filesystem::path(string_or(j, "model", "")).filename().string();
  if (header->is_null()) {
    *header = id;
  } else if (*header != id) {
    return invalid_argument("--json " + printable(path) + " is another run (" + printable(dump(id)) + ", not " +
                            printable(dump(*header)) + "): rows are compared only on the same tokens");
  }
  const std::string calib = string_or(j, "calibration", "");
  for (const auto& row : j["results"]) {
    if (!row.is_object() || !row.contains("kl_mean") || !row["kl_mean"].is_number()) continue;
    Entry e;
    e.source = std::filesystem::path(path).stem().string();
    e.label = string_or(row, "cache", "?");
    if (!calib.empty() && e.label.find("kvquant") != std::string::npos) {
      e.label += " [" + std::filesystem::path(path).stem().string() + "]";
    }
    e.bits = number_or(row, "bits_per_value", NAN);
    e.r.has_kl = true;
    e.r.ppl = number_or(row, "ppl", NAN);
    e.r.kl_mean = number_or(row, "kl_mean", NAN);
    e.r.kl_stderr = number_or(row, "kl_stderr", NAN);
    e.r.kl_p99 = number_or(row, "kl_p99", NAN);
    e.r.delta_ppl = number_or(row, "delta_ppl", NAN);
    e.r.delta_ppl_stderr = number_or(row, "delta_ppl_stderr", NAN);
    e.r.top1_agreement = number_or(row, "top1_agreement", NAN);
    e.r.base_ppl = e.r.ppl - e.r.delta_ppl;
    if (row.contains("token_kl") && row["token_kl"].is_array()) {
      for (const auto& v : row["token_kl"]) {
        if (!v.is_number()) return invalid_argument("--json " + printable(path) + ": token_kl holds a non-number");
        e.r.token_kl.push_back(v.get<double>());
      }
    }
    if (!std::isfinite(e.bits) || !std::isfinite(e.r.kl_mean)) {
      return invalid_argument("--json " + printable(path) + ": row '" + printable(e.label) + "' lacks bits or KL");
    }
    out->push_back(std::move(e));
  }
  return ok_status();
}

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
  for (const auto& path : paths) KVQ_RETURN_IF_ERROR(read_json(path, &header, &entries));
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
    KVQ_ASSIGN_OR_RETURN(auto peer_rows, read_peers(peers));
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
  std::printf("run: %s\n", printable(dump(header)).c_str());
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
