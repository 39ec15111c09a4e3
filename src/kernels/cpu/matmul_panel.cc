// SPDX-License-Identifier: MIT
// Highway matmul of many tokens against a panel of kPanelRows weight rows stored k-major
// ([n_in][kPanelRows]), the layout of a packed weight's rows after dequantization. Outer
// products: per k, the panel's 16 weights are kV vector loads and each token's x[t][k] one
// broadcast, so a 6-token x 16-row block (AVX2) keeps 12 accumulators in registers, needs no
// horizontal sums and is bound by FMA throughput rather than by loads (cpu::matmul's dot
// products over rows need a reduction per output and 4 x 4 accumulators that spill on AVX2).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/matmul_panel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/ops.h"

HWY_BEFORE_NAMESPACE();
namespace kvq::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Tokens [t0, t0 + kT) against the whole panel, kV vectors of N lanes per k (kV * N = 16).
// Each accumulator lane sums x[t][k] * panel[k][r] in increasing k with one MulAdd per k,
// whatever kT is: the blocking never changes a result.
template <size_t kV, size_t kT, class D>
HWY_INLINE void PanelBlock(D d, const PanelMatmulParams& p, int t0) {
  using V = hn::Vec<D>;
  const size_t N = hn::Lanes(d);
  V acc[kT][kV];
  for (size_t t = 0; t < kT; ++t)
    for (size_t v = 0; v < kV; ++v) acc[t][v] = hn::Zero(d);
  const float* xr[kT];
  for (size_t t = 0; t < kT; ++t) xr[t] = p.x + size_t(t0 + int(t)) * p.ldx;
  const float* w = p.panel;
  // One k: kV loads, kT broadcasts, kT * kV MulAdds. Unrolled by 4 so that the loop's pointer
  // and counter updates are paid once per 4 k (the order of the MulAdds is unchanged).
  const auto step = [&](int k, const float* wk) HWY_ATTR {
    V wv[kV];
    for (size_t v = 0; v < kV; ++v) wv[v] = hn::LoadU(d, wk + v * N);
    for (size_t t = 0; t < kT; ++t) {
      const V xb = hn::Set(d, xr[t][k]);
      for (size_t v = 0; v < kV; ++v) acc[t][v] = hn::MulAdd(xb, wv[v], acc[t][v]);
    }
  };
  int k = 0;
  for (; k + 4 <= p.n_in; k += 4, w += 4 * kPanelRows) {
    step(k, w);
    step(k + 1, w + kPanelRows);
    step(k + 2, w + 2 * kPanelRows);
    step(k + 3, w + 3 * kPanelRows);
  }
  for (; k < p.n_in; ++k, w += kPanelRows) step(k, w);
  for (size_t t = 0; t < kT; ++t) {
    float* y = p.y + size_t(t0 + int(t)) * p.ldy;
    if (p.n_rows == kPanelRows) {
      for (size_t v = 0; v < kV; ++v) hn::StoreU(acc[t][v], d, y + v * N);
    } else {
      HWY_ALIGN float row[kPanelRows];
      for (size_t v = 0; v < kV; ++v) hn::Store(acc[t][v], d, row + v * N);
      for (int r = 0; r < p.n_rows; ++r) y[r] = row[r];
    }
  }
}

template <size_t kV, class D>
HWY_INLINE void PanelTokens(D d, const PanelMatmulParams& p) {
  // 12 accumulators: fits AVX2's 16 and SSE4's 16 registers with the kV weight vectors and the
  // broadcast, and leaves AVX-512 room to spare.
  constexpr size_t kT = 12 / kV;
  int t = 0;
  for (; t + int(kT) <= p.n_tokens; t += int(kT)) PanelBlock<kV, kT>(d, p, t);
  for (; t < p.n_tokens; ++t) PanelBlock<kV, 1>(d, p, t);
}

void MatmulPanel(const PanelMatmulParams& p) {
  const hn::CappedTag<float, kPanelRows> d;
  const size_t n = hn::Lanes(d);
  if (n == 16) return PanelTokens<1>(d, p);
  if (n == 8) return PanelTokens<2>(d, p);
  if (n == 4) return PanelTokens<4>(d, p);
  // Narrower targets (scalar emulation): one lane at a time, the same order of MulAdds.
  const hn::CappedTag<float, 1> d1;
  for (int t = 0; t < p.n_tokens; ++t) {
    for (int r = 0; r < p.n_rows; ++r) {
      auto acc = hn::Zero(d1);
      for (int k = 0; k < p.n_in; ++k) {
        acc = hn::MulAdd(hn::Set(d1, p.x[size_t(t) * p.ldx + size_t(k)]),
                         hn::Set(d1, p.panel[size_t(k) * kPanelRows + size_t(r)]), acc);
      }
      p.y[size_t(t) * p.ldy + size_t(r)] = hn::GetLane(acc);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(MatmulPanel);
void matmul_panel(const PanelMatmulParams& p) { HWY_DYNAMIC_DISPATCH(MatmulPanel)(p); }

void pack_panel(const float* rows, size_t ldw, int n_rows, int n_in, float* panel) {
  for (int k = 0; k < n_in; ++k) {
    float* dst = panel + size_t(k) * kPanelRows;
    int r = 0;
    for (; r < n_rows; ++r) dst[r] = rows[size_t(r) * ldw + size_t(k)];
    for (; r < kPanelRows; ++r) dst[r] = 0.0f;
  }
}
}  // namespace kvq::cpu
#endif
