// SPDX-License-Identifier: MIT
// kvquant-mixed end to end on the head_dim-64 testbed (default suite): Fisher calibration of 2
// windows of 512 tokens without outliers, --bits-budget 3.0 accounted at 512 tokens, one 512-token chunk
// (256 scored tokens): the cache stays within its budget and its KL against f16 is bounded.
// The bound is about 1.5x what was measured when it was set (2026-11-29); the full sweep is
// mixed_sweep_test (label `quality`).
#include "mixed_kl.h"

namespace kvq {
namespace {

TEST(MixedQuality, KvquantMixedWithinBudgetAndBoundedKl) {
  testing::MixedKl runs(512, 1, 2, 512, {3.0}, 0.0);
  ASSERT_NE(runs.file(0).mixed(), nullptr);
  std::printf("%s", runs.file(0).describe_mixed().c_str());
  testing::expect_mixed(runs, "kvquant-mixed:outliers=0", 0, 3.0, 0.033);
}

}  // namespace
}  // namespace kvq
