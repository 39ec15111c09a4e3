// SPDX-License-Identifier: MIT
#pragma once

namespace kvq {

// Which implementation an op runs. kRef is the scalar reference (the specification); kSimd is
// the Highway version, dispatched at run time to the best target the CPU supports. Tests and
// users (--kernels ref) can force kRef.
enum class KernelPath { kRef, kSimd };

}  // namespace kvq
