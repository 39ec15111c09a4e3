// SPDX-License-Identifier: MIT
#include "cli/frontier_input.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>

#include "base/printable.h"

namespace kvq::cli {

namespace {

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

// Typed lookups that never throw: a field of another type reads as absent.
double number_or(const nlohmann::json& j, const char* key, double fallback) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}
}  // namespace

std::string string_or(const nlohmann::json& j, const char* key, const std::string& fallback) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}


// The golden file: one line per cache type, "name: <llama-perplexity KL summary>".
StatusOr<std::vector<Entry>> parse_peers(const std::string& text, const std::string& path) {
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

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Rows of one `kvq ppl --json` file that were compared with a base (f16 rows have no KL).
// header receives the run identity that every file must share.
Status parse_ppl_json(const std::string& text, const std::string& path, nlohmann::json* header,
                      std::vector<Entry>* out) {
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
    return invalid_argument("--json " + printable(path) + " is another run (" + printable(dump_json(id)) + ", not " +
                            printable(dump_json(*header)) + "): rows are compared only on the same tokens");
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

}  // namespace kvq::cli
