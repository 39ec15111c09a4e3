// SPDX-License-Identifier: MIT
// libFuzzer target: the inputs of `kvq frontier` (llama.cpp KL summaries and `kvq ppl --json`
// files) parsed from arbitrary bytes: errors, never exceptions, crashes or NaN rows.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/frontier_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto peers = kvq::cli::parse_peers(text, "fuzz");
  if (peers.ok()) {
    for (const auto& e : *peers) {
      if (!std::isfinite(e.r.kl_mean) || !std::isfinite(e.bits)) std::abort();
    }
  }
  nlohmann::json header;
  std::vector<kvq::cli::Entry> rows;
  if (kvq::cli::parse_ppl_json(text, "fuzz", &header, &rows).ok()) {
    for (const auto& e : rows) {
      if (!std::isfinite(e.r.kl_mean) || !std::isfinite(e.bits)) std::abort();
    }
    (void)kvq::cli::dump_json(header);
    // A second file against the first one's identity.
    (void)kvq::cli::parse_ppl_json(text, "fuzz2", &header, &rows);
  }
  return 0;
}
