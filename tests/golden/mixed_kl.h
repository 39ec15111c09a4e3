// SPDX-License-Identifier: MIT
// kvquant-mixed (per-layer widths from `kvq calibrate --bits-budget`) against uniform kvquant on
// the head_dim-64 testbed: Fisher calibration on the TinyStories train text, KL against the
// f16 cache on an evaluation text (docs/QUALITY.md, Mixed precision).
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/calibration_file.h"
#include "engine/perplexity.h"
#include "shared_data.h"

namespace kvq::testing {

class MixedKl {
 public:
  // Fisher capture of calib_windows x calib_window tokens; one file per budget (the budget
  // accounted at n_ctx tokens, what the evaluation's cache holds).
  // outliers, norm_bits, sinks: the calibration's outlier fraction, value norm (kvq calibrate
  // --norm) and fp16 sinks (the cache spec must match them); per_head: widths per KV head
  // (kvq calibrate --width-per head); v_outliers: the values' fraction when it differs from
  // the keys' (kvq calibrate --outliers-v; < 0: as outliers); residual: the fp16 window the
  // widths are planned for (kvq calibrate --r).
  MixedKl(int n_ctx, int n_chunks, int calib_windows, int calib_window, const std::vector<double>& budgets,
          double outliers, const char* eval_text = "text/tinystories/validation_head.txt", int norm_bits = 16,
          int sinks = 1, bool per_head = false, double v_outliers = -1, int residual = 0)
      : ctx_(2) {
    auto m = LlamaModel::load(shared_path("models/tinystories-l6-d256-h64.gguf"));
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    text_ = model_->tokenizer().encode(read_text(eval_text), true, true);
    const auto calib = model_->tokenizer().encode(read_text("text/tinystories/train_head.txt"), true, true);
    CalibrationArgs ca;
    ca.n_windows = calib_windows;
    ca.window = calib_window;
    ca.fisher = true;
    auto a = KvActivations::capture(ctx_, *model_, calib, ca);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    for (double b : budgets) {
      CalibrationMeta meta;
      meta.text = "train_head.txt";
      meta.bits_budget = b;
      meta.outliers = outliers;
      meta.v_outliers = v_outliers;
      meta.budget_context = n_ctx;
      meta.norm_bits = norm_bits;
      meta.sinks = sinks;
      meta.per_head_widths = per_head;
      meta.residual = residual;
      auto f = CalibrationFile::build(*a, *model_, meta);
      EXPECT_TRUE(f.ok()) << f.status().to_string();
      files_.push_back(std::make_unique<CalibrationFile>(std::move(*f)));
    }
    args_.n_ctx = n_ctx;
    args_.n_chunks = n_chunks;
    PplArgs base_args = args_;
    base_args.rows_out = &base_;
    auto r = run_perplexity(ctx_, *model_, parse_cache_spec("f16").value(), text_, base_args);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
  }

  const CalibrationFile& file(size_t i) const { return *files_[i]; }

  // spec with the calibration of budget i, compared with f16.
  PplResult run(const CacheSpec& spec, size_t i) {
    const std::string& spec_text = spec.text;
    auto cal = files_[i]->for_spec(spec);
    EXPECT_TRUE(cal.ok()) << cal.status().to_string();
    PplArgs a = args_;
    a.calibration = cal->calibration();
    a.base = &base_;
    auto r = run_perplexity(ctx_, *model_, spec, text_, a);
    EXPECT_TRUE(r.ok()) << spec_text << ": " << r.status().to_string();
    return r.ok() ? *r : PplResult{};
  }

  // Bits per value the cache allocated at the end of the run.
  double bits(const PplResult& r) const {
    const auto& c = model_->config();
    return 8.0 * double(r.cache_bytes) / (2.0 * r.cache_tokens * c.n_layers * c.n_kv_heads * c.head_dim);
  }

 private:
  ExecContext ctx_;
  std::unique_ptr<LlamaModel> model_;
  std::vector<int32_t> text_;
  std::vector<std::unique_ptr<CalibrationFile>> files_;
  PplArgs args_;
  LogprobFile base_;
};

// One kvquant-mixed run (spec: kvquant-mixed with the calibration's outliers): its allocated
// bits within the budget (key outliers are data dependent: a small slack) and its KL at most kl.
inline void expect_mixed(MixedKl& runs, const CacheSpec& cache, size_t i, double budget, double kl) {
  const std::string& spec = cache.text;
  const PplResult r = runs.run(cache, i);
  ASSERT_TRUE(r.has_kl);
  const double bits = runs.bits(r);
  std::printf("%s, budget %.2f: %.3f bits/value allocated, KL %.5f (bound %.5f), dPPL %+.4f +- %.4f\n",
              spec.c_str(), budget, bits, r.kl_mean, kl, r.delta_ppl, r.delta_ppl_stderr);
  EXPECT_LE(bits, budget + 0.02);
  EXPECT_LE(r.kl_mean, kl);
}

inline void expect_mixed(MixedKl& runs, const std::string& spec, size_t i, double budget, double kl) {
  expect_mixed(runs, parse_cache_spec(spec).value(), i, budget, kl);
}

}  // namespace kvq::testing
