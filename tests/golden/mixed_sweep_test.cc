// SPDX-License-Identifier: MIT
// The mixed-precision rows of docs/QUALITY.md (label `quality`; 7 minutes on the loaded 2
// cores): Fisher calibration as `kvq calibrate --outliers 0` (16 windows of 1,024 tokens of the
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

}  // namespace
}  // namespace kvq
