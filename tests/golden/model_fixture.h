// SPDX-License-Identifier: MIT
// A shared model with the validation text and a KVQuant calibration captured from the train
// text: what the engine tests over caches start from. Failures are reported, not fatal; the
// tests check the members they use.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/calibrate.h"
#include "shared_data.h"

namespace kvq::testing {

struct ModelFixture {
  std::unique_ptr<LlamaModel> model;
  std::vector<int32_t> text;            // the validation text, BOS first
  std::unique_ptr<KvActivations> acts;  // calibration for kvquant caches

  // An empty cache of spec_text for n_ctx tokens, calibrated when it needs it (null on error).
  std::unique_ptr<KvCache> new_cache(const char* spec_text, int n_ctx) const {
    const CacheSpec spec = parse_cache_spec(spec_text).value();
    auto cal = acts->for_spec(spec);
    EXPECT_TRUE(cal.ok()) << cal.status().to_string();
    if (!cal.ok()) return nullptr;
    auto cache = make_cache(spec, model->kv_shape(n_ctx), cal->calibration());
    EXPECT_TRUE(cache.ok()) << spec_text << ": " << cache.status().to_string();
    return cache.ok() ? std::move(*cache) : nullptr;
  }
};

// model_rel: under ../shared; calibration on the first calib_chars of the train text.
inline ModelFixture load_model_fixture(const std::string& model_rel, size_t calib_chars, int n_windows, int window) {
  ModelFixture x;
  auto m = LlamaModel::load(shared_path(model_rel));
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  if (!m.ok()) return x;
  x.model = std::move(*m);
  x.text = x.model->tokenizer().encode(read_text("text/tinystories/validation_head.txt"), true, true);
  const auto calib =
      x.model->tokenizer().encode(read_text("text/tinystories/train_head.txt").substr(0, calib_chars), true, true);
  ExecContext ctx(2);
  CalibrationArgs ca;
  ca.n_windows = n_windows;
  ca.window = window;
  auto a = KvActivations::capture(ctx, *x.model, calib, ca);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  if (a.ok()) x.acts = std::make_unique<KvActivations>(std::move(*a));
  return x;
}

}  // namespace kvq::testing
