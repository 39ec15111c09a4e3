// SPDX-License-Identifier: MIT
// The backward pass against central finite differences of the loss in double precision on
// stories260K, at sampled elements of every layer's key- and value-projection outputs.
#include <gtest/gtest.h>

#include <cmath>

#include "base/rng.h"
#include "model/backward.h"
#include "shared_data.h"

namespace kvq {
namespace {

using testing::read_text;
using testing::shared_path;

TEST(Gradient, MatchesFiniteDifferencesInDouble) {
  auto m = LlamaModel::load(shared_path("models/stories260K.gguf"));
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const LlamaModel& model = **m;
  auto toks = model.tokenizer().encode(read_text("text/tinystories/train_head.txt").substr(0, 600), true, true);
  toks.resize(48);
  ExecContext ctx(2);
  LlamaGradient<double> grad(model);
  auto g = grad.compute(ctx, toks);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  const int kd = model.config().kv_dim();
  Rng rng(3);
  int checked = 0;
  double worst = 0;
  for (int il = 0; il < model.config().n_layers; ++il) {
    for (bool value : {false, true}) {
      for (int s = 0; s < 6; ++s) {
        ProjectionNudge nudge;
        nudge.layer = il;
        nudge.value = value;
        nudge.token = int(rng.below(toks.size() - 1));  // the last token influences no loss term
        nudge.channel = int(rng.below(uint64_t(kd)));
        const double analytic = (value ? g->v : g->k)[size_t(il)][size_t(nudge.token) * kd + nudge.channel];
        const double h = 1e-5;
        nudge.delta = h;
        const double up = grad.loss(ctx, toks, nudge).value();
        nudge.delta = -h;
        const double down = grad.loss(ctx, toks, nudge).value();
        const double numeric = (up - down) / (2 * h);
        // Relative error, with an absolute floor for elements whose gradient is ~0.
        const double err = std::fabs(analytic - numeric) / std::max(std::fabs(numeric), 1e-6);
        worst = std::max(worst, err);
        EXPECT_LE(err, 1e-2) << "layer " << il << (value ? " V" : " K") << " token " << nudge.token
                             << " channel " << nudge.channel << ": analytic " << analytic << " numeric " << numeric;
        ++checked;
      }
    }
  }
  std::printf("[ grad ] %d elements, worst relative error %.2e\n", checked, worst);
}

// The float path (SIMD matmuls over transposed weights) agrees with the double path.
TEST(Gradient, FloatAgreesWithDouble) {
  auto m = LlamaModel::load(shared_path("models/stories260K.gguf"));
  ASSERT_TRUE(m.ok());
  auto toks = (*m)->tokenizer().encode(read_text("text/tinystories/train_head.txt").substr(0, 2000), true, true);
  toks.resize(200);
  ExecContext ctx(2);
  auto gd = LlamaGradient<double>(**m).compute(ctx, toks).value();
  auto gf = LlamaGradient<float>(**m).compute(ctx, toks).value();
  EXPECT_NEAR(gf.loss, gd.loss, 1e-4);
  for (size_t il = 0; il < gd.k.size(); ++il) {
    double num = 0, den = 0;
    for (size_t i = 0; i < gd.k[il].size(); ++i) {
      num += std::pow(gf.k[il][i] - gd.k[il][i], 2) + std::pow(gf.v[il][i] - gd.v[il][i], 2);
      den += gd.k[il][i] * gd.k[il][i] + gd.v[il][i] * gd.v[il][i];
    }
    EXPECT_LT(std::sqrt(num / den), 1e-4) << "layer " << il;
  }
}

}  // namespace
}  // namespace kvq
