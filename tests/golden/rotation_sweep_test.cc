// SPDX-License-Identifier: MIT
// The rotation table of docs/QUALITY.md (label `quality`; 11 minutes on the loaded 2 cores): each
// rotated cache on 10 chunks of 1024 tokens, KL against f16 within 1.1x the recorded figure
// (calibration as `--calib auto`: 8 windows of 512 tokens of the train text).
#include "rotation_kl.h"

namespace kvq {
namespace {

TEST(RotationSweep, KlAsRecordedInQuality) {
  testing::RotationKl runs(1024, 10, 8);
  testing::expect_kl_within(runs,
                            {{"q4_0:rot=1", "q4_0:rot=1", 0.00658},
                             {"int4:rot=1", "int4:rot=1", 0.00921},
                             {"int3:rot=1", "int3:rot=1", 0.04293},
                             {"kivi-4:rot=1", "kivi-4:rot=1", 0.00011},
                             {"kivi-2", "kivi-2:rot=1", 0.00304},
                             {"kvquant-3", "kvquant-3:rot=1", 0.01122},
                             {"kvquant-2", "kvquant-2:rot=1", 0.06072},
                             {"kvquant-3:prerope=0:rot=1", "kvquant-3:rot=1", 0.02054},
                             {"kvquant-2:prerope=0:rot=1", "kvquant-2:rot=1", 0.10880}},
                            1.1);
}

}  // namespace
}  // namespace kvq
