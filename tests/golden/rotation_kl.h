// SPDX-License-Identifier: MIT
// KL of rotated caches (`:rot=1`, kv/rotated_store.h) against the f16 cache on the head_dim-64
// testbed, for the default-suite check and the `quality` sweep. Calibration (kvquant) on the
// TinyStories train text, evaluation on the validation text, as docs/QUALITY.md.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/calibrate.h"
#include "engine/perplexity.h"
#include "shared_data.h"

namespace kvq::testing {

class RotationKl {
 public:
  // n_ctx and n_chunks of the llama.cpp protocol; the f16 base run is made here.
  RotationKl(int n_ctx, int n_chunks, int calib_windows) : ctx_(2) {
    auto m = LlamaModel::load(shared_path("models/tinystories-l6-d256-h64.gguf"));
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    text_ = model_->tokenizer().encode(read_text("text/tinystories/validation_head.txt"), true, true);
    const auto calib = model_->tokenizer().encode(read_text("text/tinystories/train_head.txt"), true, true);
    CalibrationArgs ca;
    ca.n_windows = calib_windows;
    ca.window = 512;
    auto a = KvActivations::capture(ctx_, *model_, calib, ca);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    acts_ = std::make_unique<KvActivations>(std::move(*a));
    args_.n_ctx = n_ctx;
    args_.n_chunks = n_chunks;
    PplArgs base_args = args_;
    base_args.rows_out = &base_;
    auto r = run_perplexity(ctx_, *model_, parse_cache_spec("f16").value(), text_, base_args);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
  }

  // The run of cache (K and V spec), compared with f16.
  PplResult run(const std::string& k_spec, const std::string& v_spec) {
    const CacheSpec spec = parse_cache_spec(k_spec, v_spec).value();
    auto cal = acts_->for_spec(spec);
    EXPECT_TRUE(cal.ok()) << cal.status().to_string();
    PplArgs a = args_;
    a.calibration = cal->calibration();
    a.base = &base_;
    auto r = run_perplexity(ctx_, *model_, spec, text_, a);
    EXPECT_TRUE(r.ok()) << k_spec << " / " << v_spec << ": " << r.status().to_string();
    return r.ok() ? *r : PplResult{};
  }

 private:
  ExecContext ctx_;
  std::unique_ptr<LlamaModel> model_;
  std::vector<int32_t> text_;
  std::unique_ptr<KvActivations> acts_;
  PplArgs args_;
  LogprobFile base_;
};

// A cache (K and V spec) and the KL against f16 it is held to.
struct KlCase {
  const char *k, *v;
  double kl;
};

// Runs every case; each KL must be at most factor * its case's kl.
inline void expect_kl_within(RotationKl& runs, std::initializer_list<KlCase> cases, double factor) {
  for (const KlCase& c : cases) {
    const PplResult r = runs.run(c.k, c.v);
    ASSERT_TRUE(r.has_kl) << c.k << " / " << c.v;
    std::printf("%-40s %-28s KL %.5f (bound %.5f)\n", c.k, c.v, r.kl_mean, factor * c.kl);
    EXPECT_LE(r.kl_mean, factor * c.kl) << c.k << " / " << c.v;
  }
}

}  // namespace kvq::testing
