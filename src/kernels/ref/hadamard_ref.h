// SPDX-License-Identifier: MIT
// The randomized Hadamard transform of a head vector (issue 13; QuaRot, QuIP#): the scalar
// specification of cpu::hadamard_rows. With n = head_dim a power of two, H_n the Walsh-Hadamard
// matrix (Sylvester order, entries ±1) and D a fixed ±1 diagonal,
//   forward  y = H_n D x / sqrt(n)      inverse  x = D H_n y / sqrt(n)
// The matrix R = H_n D / sqrt(n) is orthogonal (H_n H_n = n I, D D = I), so q . k = (R q) . (R k)
// and R^T sum_t p_t (R v_t) = sum_t p_t v_t: a cache may hold R k and R v and attention only
// rotates the query once and the output back once. Spreading each vector's energy over all
// its channels flattens outliers, which is what makes per-token grids fit better.
#pragma once

#include <cstdint>

namespace kvq {

// The seed of D: fixed, so a rotation stores no bits (quant/bits_accounting.h).
inline constexpr uint64_t kHadamardSeed = 0x6b76712d726f74ull;  // "kvq-rot"

// Whether the transform is defined for head_dim (a power of two, at least 2).
inline bool hadamard_size_ok(int head_dim) { return head_dim >= 2 && (head_dim & (head_dim - 1)) == 0; }

// D's diagonal for head_dim values (±1.0f), the same for every head, layer, K and V.
void hadamard_signs(int head_dim, float* signs);

namespace ref {

// Transforms the n_rows rows of x: [n_rows, head_dim] in place (forward or inverse as above).
// Butterflies (a + b, a - b) stage by stage with strides 1, 2, 4, ..., then the scale; the SIMD
// kernel does the same operations per element, so the two agree exactly.
void hadamard_rows_ref(float* x, int n_rows, int head_dim, const float* signs, bool inverse);

}  // namespace ref
}  // namespace kvq
