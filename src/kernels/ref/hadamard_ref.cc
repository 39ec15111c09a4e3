// SPDX-License-Identifier: MIT
#include "kernels/ref/hadamard_ref.h"

#include <cmath>

#include "base/check.h"
#include "base/rng.h"

namespace kvq {

void hadamard_signs(int head_dim, float* signs) {
  KVQ_CHECK(hadamard_size_ok(head_dim));
  Rng rng(kHadamardSeed);
  for (int i = 0; i < head_dim; ++i) signs[i] = (rng.next_u64() >> 63) ? -1.0f : 1.0f;
}

namespace ref {

void hadamard_rows_ref(float* x, int n_rows, int head_dim, const float* signs, bool inverse) {
  KVQ_CHECK(hadamard_size_ok(head_dim));
  const float scale = 1.0f / std::sqrt(float(head_dim));
  for (int r = 0; r < n_rows; ++r) {
    float* v = x + size_t(r) * size_t(head_dim);
    if (!inverse) {
      for (int i = 0; i < head_dim; ++i) v[i] *= signs[i];
    }
    for (int h = 1; h < head_dim; h *= 2) {
      for (int j = 0; j < head_dim; j += 2 * h) {
        for (int i = j; i < j + h; ++i) {
          const float a = v[i], b = v[i + h];
          v[i] = a + b;
          v[i + h] = a - b;
        }
      }
    }
    for (int i = 0; i < head_dim; ++i) v[i] *= inverse ? scale * signs[i] : scale;
  }
}

}  // namespace ref
}  // namespace kvq
