// SPDX-License-Identifier: MIT
#include "engine/read_bandwidth.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/timer.h"

namespace kvq {

namespace {
// Integer addition is associative, so the compiler may vectorize this reduction without
// fast-math; kept free of intrinsics on purpose (the reference for "achievable" bandwidth).
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
}
}  // namespace

StatusOr<ReadBandwidth> measure_read_bandwidth(ThreadPool& pool, size_t bytes, int passes) {
  if (bytes < (size_t(1) << 20) || passes < 1) {
    return invalid_argument("read bandwidth needs a buffer of >= 1 MiB and >= 1 pass");
  }
  AlignedBuffer<uint64_t> buf;
  if (!buf.resize(bytes / sizeof(uint64_t))) {
    return out_of_memory("cannot allocate " + std::to_string(bytes >> 20) + " MiB for the bandwidth test");
  }
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = i;  // commit every page before timing
  // Many more chunks than threads so a descheduled thread does not hold up a pass.
  const int64_t n_chunks = int64_t(pool.n_threads()) * 32;
  const size_t chunk = (buf.size() + size_t(n_chunks) - 1) / size_t(n_chunks);
  std::vector<uint64_t> partial(static_cast<size_t>(n_chunks));
  double best = 0;
  volatile uint64_t sink = 0;  // keeps the sums observable
  for (int pass = 0; pass < passes; ++pass) {
    Timer t;
    pool.parallel_for(n_chunks, [&](int64_t c, int) {
      const size_t b = std::min(buf.size(), size_t(c) * chunk), e = std::min(buf.size(), b + chunk);
      partial[size_t(c)] = sum_words(buf.data() + b, e - b);
    });
    const double s = t.seconds();
    uint64_t total = 0;
    for (uint64_t x : partial) total += x;
    sink = sink + total;
    best = std::max(best, double(buf.bytes()) / s / 1e9);
  }
  ReadBandwidth r;
  r.gbps = best;
  r.method = "sum of 64-bit words (plain C++ loop vectorized by the compiler, no intrinsics) over a " +
             std::to_string(buf.bytes() >> 20) + " MiB buffer on " + std::to_string(pool.n_threads()) +
             " thread(s), best of " + std::to_string(passes) + " passes";
  return r;
}

}  // namespace kvq
