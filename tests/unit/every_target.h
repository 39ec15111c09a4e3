// SPDX-License-Identifier: MIT
// The harness of the per-target kernel tests (each compiled once per Highway target through
// hwy/foreach_target.h): a check returns how many comparisons it ran and how many failed, and
// no target this CPU runs may fail one.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "hwy/targets.h"

namespace kvq::testing {

struct TargetChecks {
  int run = 0, failed = 0;
};

// check(seed) for seeds [0, n_seeds) on every Highway target this CPU runs (check is a
// HWY_DYNAMIC_DISPATCH, which follows SetSupportedTargetsForTest): expects no failed comparison
// on any target and returns each target's totals for the caller's own expectations.
template <class Check>
std::vector<std::pair<int64_t, TargetChecks>> expect_every_target_passes(uint32_t n_seeds, const Check& check) {
  std::vector<std::pair<int64_t, TargetChecks>> totals;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    TargetChecks total;
    for (uint32_t seed = 0; seed < n_seeds; ++seed) {
      const TargetChecks c = check(seed);
      total.run += c.run;
      total.failed += c.failed;
    }
    EXPECT_EQ(total.failed, 0) << "of " << total.run;
    totals.emplace_back(target, total);
  }
  hwy::SetSupportedTargetsForTest(0);
  return totals;
}

}  // namespace kvq::testing
