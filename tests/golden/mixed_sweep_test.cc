// SPDX-License-Identifier: MIT
// The mixed-precision rows of docs/QUALITY.md (label `quality`; 7 minutes on the loaded 2
// cores, and about 6 more for the window rows): Fisher calibration as `kvq calibrate --outliers 0` (16 windows of 1,024 tokens of the
// train text), --bits-budget 2.5, 3.0 and 3.5, 10 chunks of 1,024 tokens of the validation
// text; each within its budget and its KL within 1.1x the recorded figure (it reproduces the
// command-line figures exactly).
#include "mixed_kl.h"

namespace kvq {
namespace {

TEST(MixedSweep, KlAsRecordedInQuality) {
  const std::vector<double> budgets = {2.5, 3.0, 3.5};
  testing::MixedKl runs(1024, 10, 16, 1024, budgets, 0.0);
  const double recorded[] = {0.043921, 0.019676, 0.008185};
  for (size_t i = 0; i < budgets.size(); ++i) {
    std::printf("%s", runs.file(i).describe_mixed().c_str());
    testing::expect_mixed(runs, "kvquant-mixed:outliers=0", i, budgets[i], 1.1 * recorded[i]);
  }
}

// The rows of docs/QUALITY.md, "A window of recent tokens" (issue 13's three budgets):
// `kvq calibrate --norm 8 --sinks 0 --windows 32` with the outlier fractions and --r of each
// row, per-head widths, 10 chunks of 1,024 tokens of the validation text, run token by token
// (a window cache is not batch-invariant); each within its budget and its KL within 1.1x the
// recorded figure.
TEST(MixedSweep, WindowRowsAsRecordedInQuality) {
  struct Row {
    double budget, k_outliers, v_outliers;
    int r;
    const char *k_spec, *v_spec;
    double kl;
  };
  const Row rows[] = {
      {2.5, 0.01, 0.0, 8, "kvquant-mixed:outliers=0.01:sinks=0:r=8", "kvquant-mixed:outliers=0:norm=8:sinks=0:r=8:qnorm=1",
       0.01201},
      {3.5, 0.002, 0.0, 16, "kvquant-mixed:outliers=0.002:sinks=0:r=16", "kvquant-mixed:outliers=0:norm=8:sinks=0:r=16",
       0.00205},
      {4.25, 0.002, 0.005, 16, "kvquant-mixed:outliers=0.002:sinks=0:r=16",
       "kvquant-mixed:outliers=0.005:norm=8:sinks=0:r=16:qnorm=1", 0.00082},
  };
  for (const Row& row : rows) {
    testing::MixedKl runs(1024, 10, 32, 1024, {row.budget}, row.k_outliers, "text/tinystories/validation_head.txt", 8, 0,
                          true, row.v_outliers, row.r);
    std::printf("%s", runs.file(0).describe_mixed().c_str());
    testing::expect_mixed(runs, parse_cache_spec(row.k_spec, row.v_spec).value(), 0, row.budget, 1.1 * row.kl);
  }
}

}  // namespace
}  // namespace kvq
