// SPDX-License-Identifier: MIT
// The machine's memory read bandwidth, measured the plain way a bandwidth-bound kernel would
// see it: a compiler-vectorized (no intrinsics) sum of 64-bit words over a buffer much larger
// than the last-level cache, split across the thread pool, best of several passes.
#pragma once

#include <cstddef>
#include <string>

#include "base/thread_pool.h"
#include "kvq/status.h"

namespace kvq {

struct ReadBandwidth {
  double gbps = 0;     // best pass, 1e9 bytes per second
  std::string method;  // one line saying how, for reports
};

// Errors: kOutOfMemory when the buffer cannot be allocated, kInvalidArgument for bytes < 1 MiB
// or passes < 1.
StatusOr<ReadBandwidth> measure_read_bandwidth(ThreadPool& pool, size_t bytes, int passes);

}  // namespace kvq
