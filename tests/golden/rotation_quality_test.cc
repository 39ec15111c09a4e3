// SPDX-License-Identifier: MIT
// Rotated caches (`:rot=1`) in the engine on the head_dim-64 testbed: every option runs end to
// end with its KL against the f16 cache bounded, on one 512-token chunk (256 scored tokens).
// Bounds are about 1.5x what was measured when they were set (docs/QUALITY.md has the 10-chunk
// figures); the full sweep is rotation_sweep_test (label `quality`).
#include "rotation_kl.h"

namespace kvq {
namespace {

TEST(RotationQuality, EveryRotatedOptionHasBoundedKl) {
  testing::RotationKl kl(512, 1, 2);
  struct Case {
    const char *k, *v;
    double max_kl;
  };
  for (const Case& c : {Case{"int4:rot=1", "int4:rot=1", 0.012}, Case{"int3:rot=1", "int3:rot=1", 0.056},
                        Case{"q4_0:rot=1", "q4_0:rot=1", 0.012}, Case{"kivi-2", "kivi-2:rot=1", 0.0045},
                        Case{"kvquant-3", "kvquant-3:rot=1", 0.015},
                        Case{"kvquant-3:prerope=0:rot=1", "kvquant-3:rot=1", 0.026}}) {
    const PplResult r = kl.run(c.k, c.v);
    ASSERT_TRUE(r.has_kl) << c.k << " / " << c.v;
    std::printf("%-28s %-18s KL %.5f (bound %.5f)\n", c.k, c.v, r.kl_mean, c.max_kl);
    EXPECT_LE(r.kl_mean, c.max_kl) << c.k << " / " << c.v;
  }
}

}  // namespace
}  // namespace kvq
