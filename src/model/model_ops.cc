// SPDX-License-Identifier: MIT
#include "model/model_ops.h"

#include <algorithm>

#include "kernels/cpu/ops.h"
#include "kernels/ref/ops_ref.h"

namespace kvq {

namespace {
// Below this many multiply-adds a matmul runs on the calling thread: waking workers costs
// more than the work (stories260K's 64x64 projections).
constexpr int64_t kMinParallelMacs = 1 << 15;
constexpr int kTokenBlock = 64;  // keeps a block of activations in L2 while rows stream by
}  // namespace

void matmul(ExecContext& ctx, const Matrix& w, const float* x, float* y, int n_tokens) {
  const int n_rows = w.rows, n_in = w.cols;
  auto run = [&](int t0, int t1, int r0, int r1) {
    if (ctx.path() == KernelPath::kRef) {
      for (int t = t0; t < t1; ++t)
        for (int r = r0; r < r1; ++r)
          y[size_t(t) * n_rows + r] = ref::dot_ref(x + size_t(t) * n_in, w.data + size_t(r) * n_in, n_in);
      return;
    }
    cpu::matmul({x + size_t(t0) * n_in, w.data + size_t(r0) * n_in, y + size_t(t0) * n_rows + r0,
                 size_t(n_in), size_t(n_in), size_t(n_rows), t1 - t0, r1 - r0, n_in});
  };
  const int64_t macs = int64_t(n_tokens) * n_rows * n_in;
  const int n_threads = ctx.n_threads();
  if (n_threads == 1 || macs < kMinParallelMacs) return run(0, n_tokens, 0, n_rows);
  const int n_tblocks = (n_tokens + kTokenBlock - 1) / kTokenBlock;
  // Enough row blocks for load balance: ~4 tasks per thread, rows a multiple of 4.
  int n_rblocks = std::max(1, (4 * n_threads + n_tblocks - 1) / n_tblocks);
  int rows_per = (n_rows + n_rblocks - 1) / n_rblocks;
  rows_per = std::max(4, (rows_per + 3) / 4 * 4);
  n_rblocks = (n_rows + rows_per - 1) / rows_per;
  ctx.pool().parallel_for(int64_t(n_tblocks) * n_rblocks, [&](int64_t task, int) {
    const int tb = int(task / n_rblocks), rb = int(task % n_rblocks);
    run(tb * kTokenBlock, std::min(n_tokens, (tb + 1) * kTokenBlock), rb * rows_per,
        std::min(n_rows, (rb + 1) * rows_per));
  });
}

void rmsnorm_rows(ExecContext& ctx, const float* x, const Matrix& weight, float* y, int n_tokens,
                  float eps) {
  const int n = weight.cols;
  for (int t = 0; t < n_tokens; ++t) {
    ref::rmsnorm_ref(x + size_t(t) * n, weight.data, y + size_t(t) * n, n, eps);
  }
}

}  // namespace kvq
