// SPDX-License-Identifier: MIT
#include "model/model_ops.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/cpu/ops.h"
#include "kernels/ref/ops_ref.h"

namespace kvq {

namespace {
// Below this many multiply-adds a matmul runs on the calling thread: waking workers costs
// more than the work (stories260K's 64x64 projections).
constexpr int64_t kMinParallelMacs = 1 << 15;
constexpr int kTokenBlock = 64;  // keeps a block of activations in L2 while rows stream by
// Rows of a packed weight are dequantized kTileRows at a time into the worker's scratch and
// multiplied there by the f32 kernel: the weights stay in their file format, and the f32 tile
// (16 x n_in floats, 256 KiB at n_in 4096) stays in L2 while a token block walks it.
constexpr int kTileRows = 16;
// Up to this many tokens F16 and BF16 rows are multiplied where they lie, converted in
// registers (cpu::matmul over 16-bit rows, bit-identical to the tile): each weight is used by
// few tokens, and the tile's store and reload of every weight took a quarter of a 7B-shaped F16
// decode step (docs/PERFORMANCE.md).
constexpr int kHalfDirectTokens = 16;
// Up to this many tokens, types with an integer path use it (a decode step: each weight byte is
// read once and multiplied as int8, 1.4x the tile path's speed on a 168M-parameter Q8_0 model);
// larger batches use the tile path, whose register-blocked f32 kernel reuses each dequantized
// row across 4 tokens (3x the integer path's prefill speed there).
constexpr int kVecDotMaxTokens = 3;
// From this many tokens a packed weight is multiplied panel by panel (cpu::matmul_panel): each
// group of kPanelRows rows is dequantized and transposed once per block of kPanelTokens tokens,
// which costs about what 16 tokens' multiply-adds cost, so smaller batches (a serving step of a
// few sequences) keep the tile path.
constexpr int kPanelMinTokens = 32;
// Tokens per panel pass: their activations (512 KiB at n_in 256, 8 MiB at 4096) stay in L2/L3
// while the panel (16 x n_in floats) is reused by every one of them.
constexpr int kPanelTokens = 512;

// A batch of n_tokens >= kPanelMinTokens against a packed weight, its activations xs already in
// the type's activation format: tasks take (token block, group of panels), and each panel is
// dequantized once per token block and multiplied by all of its tokens.
void matmul_panels(ExecContext& ctx, const Matrix& w, const float* xs, float* y, int n_tokens) {
  const int n_rows = w.rows, n_in = w.cols;
  const KernelPath path = ctx.path();
  const int n_panels = (n_rows + cpu::kPanelRows - 1) / cpu::kPanelRows;
  const int n_tblocks = (n_tokens + kPanelTokens - 1) / kPanelTokens;
  int n_pblocks = std::clamp((4 * ctx.n_threads() + n_tblocks - 1) / n_tblocks, 1, n_panels);
  const int panels_per = (n_panels + n_pblocks - 1) / n_pblocks;
  n_pblocks = (n_panels + panels_per - 1) / panels_per;
  ctx.pool().parallel_for(int64_t(n_tblocks) * n_pblocks, [&](int64_t task, int worker) {
    const int tb = int(task / n_pblocks), pb = int(task % n_pblocks);
    const int t0 = tb * kPanelTokens, t1 = std::min(n_tokens, t0 + kPanelTokens);
    float* rows = ctx.scratch(worker, size_t(2 * cpu::kPanelRows) * size_t(n_in));
    float* panel = rows + size_t(cpu::kPanelRows) * n_in;
    for (int p = pb * panels_per; p < std::min(n_panels, (pb + 1) * panels_per); ++p) {
      const int r0 = p * cpu::kPanelRows, nr = std::min(cpu::kPanelRows, n_rows - r0);
      for (int i = 0; i < nr; ++i) w.dequantize_row(r0 + i, rows + size_t(i) * n_in, path);
      cpu::pack_panel(rows, size_t(n_in), nr, n_in, panel);
      cpu::matmul_panel({xs + size_t(t0) * n_in, panel, y + size_t(t0) * n_rows + r0, size_t(n_in), size_t(n_rows),
                         t1 - t0, nr, n_in});
    }
  });
}
}  // namespace

void matmul(ExecContext& ctx, std::span<const MatmulOutput> outs, const float* x, int n_tokens) {
  KVQ_CHECK(!outs.empty(), "matmul without an output");
  const Matrix& w0 = *outs.front().w;
  const KernelPath path = ctx.path();
  const bool panels = path != KernelPath::kRef && w0.type() != GgmlType::kF32 && n_tokens >= kPanelMinTokens;
  bool one_pass = !panels;  // a prefill's panels are heavy enough to run one weight at a time
  for (const MatmulOutput& o : outs) one_pass = one_pass && o.w->format == w0.format && o.w->cols == w0.cols;
  if (outs.size() > 1 && !one_pass) {
    for (const MatmulOutput& o : outs) matmul(ctx, *o.w, x, o.y, n_tokens);
    return;
  }
  const int n_in = w0.cols;
  const WeightFormat& fmt = *w0.format;
  const RoundActivationsFn round = fmt.round_activations;
  int total_rows = 0;
  for (const MatmulOutput& o : outs) total_rows += o.w->rows;
  const int64_t macs = int64_t(n_tokens) * total_rows * n_in;
  const bool integer = fmt.vec_dot && n_tokens <= kVecDotMaxTokens;
  // The tile and panel paths multiply W round(x): the activations are rounded once per matmul,
  // before any task (each task rounding its own tokens again was a large part of a packed
  // prefill). The integer path quantizes them to blocks itself, below.
  if (round && !integer) {
    float* xr = ctx.shared_scratch(size_t(n_tokens) * size_t(n_in));
    auto round_tokens = [&](int t0, int t1) {
      for (int t = t0; t < t1; ++t) round(x + size_t(t) * n_in, xr + size_t(t) * n_in, n_in);
    };
    constexpr int kRoundTokens = 8;
    if (macs < kMinParallelMacs) {
      round_tokens(0, n_tokens);
    } else {
      ctx.pool().parallel_for((n_tokens + kRoundTokens - 1) / kRoundTokens, [&](int64_t task, int) {
        round_tokens(int(task) * kRoundTokens, std::min(n_tokens, int(task + 1) * kRoundTokens));
      });
    }
    x = xr;
  }
  if (panels && macs >= kMinParallelMacs) return matmul_panels(ctx, w0, x, outs.front().y, n_tokens);
  // Output rows [r0, r1) of tokens [t0, t1) of output o from activations xs (row t0 first) and
  // f32 rows w_rows (row r0 first), both of row stride n_in.
  auto block = [&](const MatmulOutput& o, const float* xs, const float* w_rows, int t0, int t1, int r0, int r1) {
    const int n_rows = o.w->rows;
    if (path == KernelPath::kRef) {
      for (int t = t0; t < t1; ++t)
        for (int r = r0; r < r1; ++r)
          o.y[size_t(t) * n_rows + r] = ref::dot_ref(xs + size_t(t - t0) * n_in, w_rows + size_t(r - r0) * n_in, n_in);
      return;
    }
    cpu::matmul({xs, w_rows, o.y + size_t(t0) * n_rows + r0, size_t(n_in), size_t(n_in), size_t(n_rows), t1 - t0,
                 r1 - r0, n_in});
  };
  // A decode step on a type with an integer path: its few tokens are quantized to activation
  // blocks once, here (quantizing them again in every task cost ~6% of a 7B Q4_K step), and each
  // task runs vec_dot_rows per (row chunk, token) over its rows, row chunks outermost so a weight
  // row is read from memory once.
  uint8_t* act = nullptr;
  size_t act_row = 0;
  uint64_t finite = 0;  // bit t: token t's row quantized (n_tokens <= kVecDotMaxTokens)
  if (integer) {
    act_row = size_t(n_in / fmt.activation_block) * size_t(fmt.activation_block_bytes);
    act = reinterpret_cast<uint8_t*>(ctx.shared_scratch((size_t(n_tokens) * act_row + 3) / 4));
    for (int t = 0; t < n_tokens; ++t) {
      if (fmt.quantize_activations(x + size_t(t) * n_in, act + size_t(t) * act_row, n_in)) finite |= 1ull << t;
    }
  }
  auto run = [&](const MatmulOutput& o, int t0, int t1, int r0, int r1, int worker) {
    const Matrix& w = *o.w;
    if (act) {
      // kTileRows rows (36 KiB of 4096-wide Q4_K) stay in L2 while the tokens walk them.
      for (int r = r0; r < r1; r += kTileRows) {
        const int nr = std::min(r1, r + kTileRows) - r;
        for (int t = t0; t < t1; ++t) {
          float* yt = o.y + size_t(t) * w.rows + r;
          if ((finite >> t) & 1) {
            fmt.vec_dot_rows(w.row(r), w.row_bytes, nr, act + size_t(t) * act_row, n_in, yt, path);
          } else {
            std::fill(yt, yt + nr, std::numeric_limits<float>::quiet_NaN());
          }
        }
      }
      return;
    }
    const float* xs = x + size_t(t0) * n_in;
    if (w.type() == GgmlType::kF32) return block(o, xs, w.f32() + size_t(r0) * n_in, t0, t1, r0, r1);
    const bool half = w.type() == GgmlType::kF16 || w.type() == GgmlType::kBF16;
    if (half && path == KernelPath::kSimd && t1 - t0 <= kHalfDirectTokens) {
      cpu::matmul(cpu::MatmulHalfParams{{xs, reinterpret_cast<const uint16_t*>(w.row(r0)), o.y + size_t(t0) * w.rows + r0,
                                         size_t(n_in), size_t(n_in), size_t(w.rows), t1 - t0, r1 - r0, n_in},
                                        w.type() == GgmlType::kF16 ? cpu::HalfType::kF16 : cpu::HalfType::kBF16});
      return;
    }
    float* tile = ctx.scratch(worker, size_t(kTileRows) * size_t(n_in));
    for (int r = r0; r < r1; r += kTileRows) {
      const int r_end = std::min(r1, r + kTileRows);
      for (int i = r; i < r_end; ++i) w.dequantize_row(i, tile + size_t(i - r) * n_in, path);
      block(o, xs, tile, t0, t1, r, r_end);
    }
  };
  const int n_threads = ctx.n_threads();
  if (n_threads == 1 || macs < kMinParallelMacs) {
    for (const MatmulOutput& o : outs) run(o, 0, n_tokens, 0, o.w->rows, 0);
    return;
  }
  const int n_tblocks = (n_tokens + kTokenBlock - 1) / kTokenBlock;
  // Enough row blocks for load balance: ~4 tasks per thread, rows a multiple of 4. The outputs'
  // rows are blocked as one range (a block may end one output and start the next), so the
  // tasks stay equal whatever the outputs' sizes (three 4096-row blocks per output would leave
  // 9 tasks to 2 threads).
  int n_rblocks = std::max(1, (4 * n_threads + n_tblocks - 1) / n_tblocks);
  int rows_per = (total_rows + n_rblocks - 1) / n_rblocks;
  rows_per = std::max(4, (rows_per + 3) / 4 * 4);
  n_rblocks = (total_rows + rows_per - 1) / rows_per;
  ctx.pool().parallel_for(int64_t(n_tblocks) * n_rblocks, [&](int64_t task, int worker) {
    const int tb = int(task / n_rblocks), rb = int(task % n_rblocks);
    const int t0 = tb * kTokenBlock, t1 = std::min(n_tokens, (tb + 1) * kTokenBlock);
    const int g0 = rb * rows_per, g1 = std::min(total_rows, g0 + rows_per);
    int first = 0;  // the first row of outs[i] in the one range
    for (const MatmulOutput& o : outs) {
      const int r0 = std::max(g0, first) - first, r1 = std::min(g1, first + o.w->rows) - first;
      if (r0 < r1) run(o, t0, t1, r0, r1, worker);
      first += o.w->rows;
    }
  });
}

void matmul(ExecContext& ctx, const Matrix& w, const float* x, float* y, int n_tokens) {
  const MatmulOutput out{&w, y};
  matmul(ctx, std::span<const MatmulOutput>(&out, 1), x, n_tokens);
}

void add_bias_rows(const Matrix& bias, float* y, int n_tokens) {
  if (!bias.present()) return;
  const float* b = bias.f32();
  const size_t n = size_t(bias.cols);
  for (size_t t = 0; t < size_t(n_tokens); ++t) {
    for (size_t i = 0; i < n; ++i) y[t * n + i] += b[i];
  }
}

void swiglu_rows(ExecContext& ctx, float* g, const float* u, int n_tokens, int n_ff) {
  const size_t row = size_t(n_ff);
  if (ctx.path() != KernelPath::kSimd) {
    for (size_t i = 0; i < size_t(n_tokens) * row; ++i) g[i] = ref::silu(g[i]) * u[i];
    return;
  }
  // Blocks of 16 rows: a task is worth a wake-up only when it has some thousands of values.
  constexpr int kRows = 16;
  ctx.pool().parallel_for((n_tokens + kRows - 1) / kRows, [&](int64_t task, int) {
    const size_t t0 = size_t(task) * kRows, t1 = std::min(size_t(n_tokens), t0 + kRows);
    cpu::swiglu(g + t0 * row, u + t0 * row, (t1 - t0) * row);
  });
}

void rmsnorm_rows(ExecContext& ctx, const float* x, const Matrix& weight, float* y, int n_tokens,
                  float eps) {
  const int n = weight.cols;
  for (int t = 0; t < n_tokens; ++t) {
    ref::rmsnorm_ref(x + size_t(t) * n, weight.f32(), y + size_t(t) * n, n, eps);
  }
}

}  // namespace kvq
