// SPDX-License-Identifier: MIT
// The inputs of `kvq frontier`, parsed from their text: llama.cpp's KL summaries (the golden
// file's "name: ... Mean KLD: X ± Y; ..." lines) and the JSON of `kvq ppl --json`. Separate from
// the command so the fuzzer can reach them: bad input is an error, never an exception or a crash.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/perplexity.h"
#include "kvq/status.h"

namespace kvq::cli {

// One row of the report: a kvq cache from a --json file, or a llama.cpp cache type.
struct Entry {
  std::string label;
  std::string source;  // the --json file's name, to tell equal labels apart
  bool peer = false;  // from the llama.cpp golden file: no per-token KL, no p99 of ours
  double bits = 0;
  PplResult r;        // has_kl, kl_mean, kl_stderr, kl_p99, delta_ppl(_stderr), base_ppl, top1, token_kl
  bool pareto = false;
};

// The golden file's rows (path names it in errors); its f16 line (no KL) is skipped. Errors: an
// unknown cache type, no KL line at all.
StatusOr<std::vector<Entry>> parse_peers(const std::string& text, const std::string& path);
// Rows of one `kvq ppl --json` file that were compared with a base (f16 rows have no KL);
// *header receives the run identity (text, protocol, mode, -c, chunks, scored tokens, model
// file name) on the first file and must equal it on the others. Fields of the wrong type read
// as absent.
Status parse_ppl_json(const std::string& text, const std::string& path, nlohmann::json* header,
                      std::vector<Entry>* out);
// j[key] when it is a string, else fallback (never throws).
std::string string_or(const nlohmann::json& j, const char* key, const std::string& fallback);
// j as JSON text, bytes that are not UTF-8 replaced.
std::string dump_json(const nlohmann::json& j);

}  // namespace kvq::cli
