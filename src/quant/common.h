// SPDX-License-Identifier: MIT
// Shared vocabulary of the quantizer library: kernel path selection and input validation.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"
#include "kvq/status.h"

namespace kvq {

// KernelPath (base/kernel_path.h) selects the scalar reference or the Highway version of each
// entry point; kSimd falls back to kRef only for shapes it does not vectorise, and those are
// listed next to each function.

// Largest finite binary16 value. Formats that store fp16 scales/zero points reject inputs
// beyond it (the zero point would overflow to Inf).
inline constexpr float kF16Max = 65504.0f;

// True for the code widths the packed formats support.
inline constexpr bool is_packable_bits(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

// invalid_argument if any of x[0], x[stride], ... x[(n-1)*stride] is NaN or Inf, or (when
// f16_range) has magnitude above kF16Max. `what` names the input in the message.
Status check_finite(const float* x, size_t n, const char* what, bool f16_range = false,
                    size_t stride = 1);
// Same over an [n_rows, n_cols] block with leading dimension ld.
Status check_finite_block(const float* x, size_t n_rows, size_t n_cols, size_t ld,
                          const char* what, bool f16_range = false);

// Name of the Highway target kSimd dispatches to on this machine (for benchmark reports).
const char* simd_target_name();

}  // namespace kvq
