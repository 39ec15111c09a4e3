// SPDX-License-Identifier: MIT
// Rotated caches (`:rot=1`) in the engine on the head_dim-64 testbed: every option runs end to
// end with its KL against the f16 cache bounded, on one 512-token chunk (256 scored tokens).
// Bounds are about 1.5x what was measured when they were set (2026-11-29; docs/QUALITY.md has
// the 10-chunk figures); the full sweep is rotation_sweep_test (label `quality`).
#include "rotation_kl.h"

namespace kvq {
namespace {

TEST(RotationQuality, EveryRotatedOptionHasBoundedKl) {
  testing::RotationKl runs(512, 1, 2);
  testing::expect_kl_within(runs,
                            {{"int4:rot=1", "int4:rot=1", 0.012},
                             {"int3:rot=1", "int3:rot=1", 0.056},
                             {"q4_0:rot=1", "q4_0:rot=1", 0.012},
                             {"kivi-2", "kivi-2:rot=1", 0.0045},
                             {"kvquant-3", "kvquant-3:rot=1", 0.015},
                             {"kvquant-3:prerope=0:rot=1", "kvquant-3:rot=1", 0.026}},
                            1.0);
}

}  // namespace
}  // namespace kvq
