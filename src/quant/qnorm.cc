// SPDX-License-Identifier: MIT
#include "quant/qnorm.h"

#include <cmath>

namespace kvq {

StatusOr<QNorm> fit_qnorm(const float* xhat, size_t n, const Codebook& cb) {
  if (n == 0) return invalid_argument("qnorm: no calibration values");
  if (cb.bits < 2 || cb.bits > 4) return invalid_argument("qnorm: bad codebook");
  KVQ_RETURN_IF_ERROR(check_finite(xhat, n, "qnorm calibration values"));
  double s1 = 0, s2 = 0, q1 = 0, q2 = 0;
  for (size_t i = 0; i < n; ++i) {
    const double a = xhat[i], b = cb.values[codebook_encode(xhat[i], cb)];
    s1 += a;
    q1 += a * a;
    s2 += b;
    q2 += b * b;
  }
  const double m1 = s1 / n, m2 = s2 / n;
  const double sd1 = std::sqrt(std::max(0.0, q1 / n - m1 * m1));
  const double sd2 = std::sqrt(std::max(0.0, q2 / n - m2 * m2));
  QNorm qn;
  if (sd2 > 0) {
    qn.scale = float(sd1 / sd2);
    qn.shift = float(m1 - m2 * sd1 / sd2);
  } else {
    qn.shift = float(m1 - m2);
  }
  return qn;
}

Codebook apply_qnorm(const Codebook& cb, const QNorm& qn) {
  Codebook out = cb;
  for (int j = 0; j < cb.size(); ++j) out.values[j] = cb.values[j] * qn.scale + qn.shift;
  return out;
}

}  // namespace kvq
