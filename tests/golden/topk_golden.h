// SPDX-License-Identifier: MIT
// llama.cpp's per-position top-k goldens (KVQTOPK2, ../shared/fixtures/README.md "Formats") and
// their comparison with kvq's log-prob rows: shared by the weight-type goldens (k = 4) and the
// architecture goldens (k = 8).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/perplexity.h"
#include "kv/cache_spec.h"
#include "shared_data.h"

namespace kvq::testing {

struct TopKGolden {
  int32_t n_ctx = 0, n_vocab = 0, n_chunk = 0, first_scored = 0, scored_per_chunk = 0, k = 0;
  struct Record {
    int32_t next_id = 0;
    float next_logprob = 0, floor_logprob = 0;  // llama.cpp stores anything below the floor as it
    std::vector<int32_t> top_id;                // most probable first
    std::vector<float> top_logprob;
  };
  std::vector<Record> records;  // chunk-major, n_chunk * scored_per_chunk
};

// Reads a KVQTOPK2 file under ../shared; a malformed one fails the test and returns no records.
inline TopKGolden read_topk_golden(const std::string& rel) {
  TopKGolden g;
  const auto bytes = read_binary<uint8_t>(rel);
  if (bytes.size() < 32 || std::memcmp(bytes.data(), "KVQTOPK2", 8) != 0) {
    ADD_FAILURE() << rel << " is not a KVQTOPK2 file";
    return g;
  }
  int32_t h[6];
  std::memcpy(h, bytes.data() + 8, sizeof h);
  g.n_ctx = h[0], g.n_vocab = h[1], g.n_chunk = h[2], g.first_scored = h[3], g.scored_per_chunk = h[4], g.k = h[5];
  const size_t rec = 12 + 8 * size_t(g.k), n = size_t(g.n_chunk) * size_t(g.scored_per_chunk);
  if (g.k < 1 || bytes.size() != 32 + n * rec) {
    ADD_FAILURE() << rel << ": " << bytes.size() << " bytes do not hold " << n << " records of k = " << g.k;
    return g;
  }
  g.records.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = bytes.data() + 32 + i * rec;
    TopKGolden::Record& r = g.records[i];
    std::memcpy(&r.next_id, p, 4);
    std::memcpy(&r.next_logprob, p + 4, 4);
    std::memcpy(&r.floor_logprob, p + 8, 4);
    r.top_id.resize(size_t(g.k));
    r.top_logprob.resize(size_t(g.k));
    std::memcpy(r.top_id.data(), p + 12, 4 * size_t(g.k));
    std::memcpy(r.top_logprob.data(), p + 12 + 4 * size_t(g.k), 4 * size_t(g.k));
  }
  return g;
}

struct TopKComparison {
  double mean_next = 0, max_next = 0;  // |max(ours, floor) - llama.cpp| of the next token's log-prob
  double mean_topk = 0, max_topk = 0;  // the same over every golden top-k entry
  int n_checked = 0, n_flips = 0;      // top-1 checks where the golden's top-2 gap >= top1_gap
  double max_flip_gap = 0;             // the largest golden top-2 gap where top-1 differs
};

// rows: kvq's log-prob rows of the scored positions, [records.size(), n_vocab], in the
// golden's order (run_perplexity's rows_out for the llama.cpp protocol).
inline TopKComparison compare_topk(const TopKGolden& g, const float* rows, int n_vocab, double top1_gap) {
  TopKComparison c;
  size_t n_topk = 0;
  for (size_t i = 0; i < g.records.size(); ++i) {
    const TopKGolden::Record& r = g.records[i];
    const float* ours = rows + i * size_t(n_vocab);
    const int top = int(std::max_element(ours, ours + n_vocab) - ours);
    const double gap = double(r.top_logprob[0]) - (g.k > 1 ? double(r.top_logprob[1]) : -INFINITY);
    if (top != r.top_id[0]) c.max_flip_gap = std::max(c.max_flip_gap, gap);
    const double e = std::fabs(double(std::max(ours[r.next_id], r.floor_logprob)) - r.next_logprob);
    c.mean_next += e;
    c.max_next = std::max(c.max_next, e);
    for (int j = 0; j < g.k; ++j) {
      const float o = std::max(ours[r.top_id[size_t(j)]], r.floor_logprob);
      const double ej = std::fabs(double(o) - double(r.top_logprob[size_t(j)]));
      c.mean_topk += ej;
      c.max_topk = std::max(c.max_topk, ej);
      ++n_topk;
    }
    if (gap < top1_gap) continue;
    ++c.n_checked;
    c.n_flips += top != r.top_id[0];
  }
  if (!g.records.empty()) c.mean_next /= double(g.records.size());
  if (n_topk) c.mean_topk /= double(n_topk);
  return c;
}

// llama-perplexity's protocol on tokens with an f16 cache (the goldens' settings): the PPL,
// and in *rows the log-prob rows of the scored positions, in the records' order.
inline StatusOr<PplResult> llamacpp_ppl_rows(ExecContext& ctx, const LlamaModel& model, std::span<const int32_t> tokens,
                                             int n_ctx, int n_chunks, LogprobFile* rows) {
  PplArgs args;
  args.n_ctx = n_ctx;
  args.n_chunks = n_chunks;
  args.rows_out = rows;
  return run_perplexity(ctx, model, parse_cache_spec("f16").value(), tokens, args);
}

}  // namespace kvq::testing
