// SPDX-License-Identifier: MIT
// Q-Norm (KVQuant spec §5.2): a per-layer shift and scale of the codebook levels so that the
// dequantized values have the mean and standard deviation of the originals (helps at 2 bits).
#pragma once

#include <cstddef>

#include "quant/codebook.h"
#include "quant/common.h"

namespace kvq {

struct QNorm {
  float scale = 1.0f;
  float shift = 0.0f;
};

// From a layer's normalized, non-outlier calibration values x̂[n] and the codebook:
// m1, s1 = mean and std of x̂; m2, s2 = mean and std of c[encode(x̂)];
// scale = s1 / s2, shift = m1 - m2 * s1 / s2 (when s2 = 0: scale 1, shift m1 - m2).
// invalid_argument for n = 0 or non-finite input. Statistics in double.
StatusOr<QNorm> fit_qnorm(const float* xhat, size_t n, const Codebook& cb);

// Decode levels c'_j = c_j * scale + shift; encode thresholds are kept, so encoding still
// picks the nearest original centroid (as the KVQuant DBRX quantizer does).
Codebook apply_qnorm(const Codebook& cb, const QNorm& qn);

}  // namespace kvq
