// SPDX-License-Identifier: MIT
// ggml's reference scale searches (quantize_search.h). Every accumulation keeps ggml's order:
// sums run over the group in index order and products associate left to right, so the chosen
// codes and scales are ggml's bit for bit.
#include "quant/weight/quantize_search.h"

#include <algorithm>
#include <cstring>

#include "base/fp16.h"
#include "quant/weight/block_common.h"

namespace kvq {

float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    min = x[i] < min ? x[i] : min;
    max = x[i] > max ? x[i] : max;
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  // The offset only ever lowers the grid: a group of positive values still starts at zero.
  if (min > 0) min = 0;
  if (max == min) {
    std::fill(L, L + n, uint8_t{0});
    *the_min = -min;
    return 0.0f;
  }
  auto error = [&](float d, float m, const uint8_t* q) {
    float e = 0;
    for (int i = 0; i < n; ++i) {
      float diff = d * float(q[i]) + m - x[i];
      diff = use_mad ? std::fabs(diff) : diff * diff;
      e += weights[i] * diff;
    }
    return e;
  };
  // Codes of x under inverse scale is.
  auto codes = [&](float is, uint8_t* q) {
    for (int i = 0; i < n; ++i) q[i] = uint8_t(std::clamp(nearest_int(is * (x[i] - min)), 0, nmax));
  };
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  codes(iscale, L);
  float best_error = error(scale, min, L);
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    codes(iscale, laux);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const float w = weights[i], l = float(laux[i]);
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      // Weighted least squares for (scale, min) given these codes; a positive offset would
      // mean min < 0 in ggml's convention, so it is pinned to zero instead.
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      const float cur_error = error(this_scale, this_min, laux);
      if (cur_error < best_error) {
        std::copy(laux, laux + n, L);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

void quantize_k_scale_min_block(const float* x, int nmax, float rmin, int nstep, uint8_t* L, uint8_t* scales,
                                f16_t* d, f16_t* dmin) {
  uint8_t laux[32];
  float weights[32], mins[8], sub_scales[8];
  float max_scale = 0, max_min = 0;  // scales are positive: the min carries the offset
  for (int j = 0; j < 8; ++j) {
    // Weights rms + |x|: large values matter more, but every value counts.
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    sub_scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], laux, rmin, 0.1f, nstep, false);
    max_scale = std::max(max_scale, sub_scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, uint8_t(nearest_int(inv_scale * sub_scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, uint8_t(nearest_int(inv_min * mins[j])));
    put_k_scale_min(j, ls, lm, scales);
  }
  *d = f32_to_f16(max_scale / 63.0f);
  *dmin = f32_to_f16(max_min / 63.0f);
  // Codes again under the scales as stored (a zero scale keeps the search's codes).
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    k_scale_min(j, scales, &sc, &m);
    const float dj = f16_to_f32(*d) * float(sc);
    if (dj == 0) continue;
    const float dm = f16_to_f32(*dmin) * float(m);
    for (int l = 0; l < 32; ++l) L[32 * j + l] = uint8_t(std::clamp(nearest_int((x[32 * j + l] + dm) / dj), 0, nmax));
  }
}

namespace {

// The largest-magnitude value of x[0, n), signed; its magnitude in *amax.
float signed_absmax(int n, const float* x, float* amax) {
  float max = 0;
  *amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > *amax) {
      *amax = ax;
      max = x[i];
    }
  }
  return max;
}

// The x²-weighted least-squares sums of the symmetric codes l = clamp(round(is * x), -nmax,
// nmax - 1): sumlx = Σ x² x l and suml2 = Σ x² l², in ggml's order; the codes go to L (unshifted)
// when it is given.
void fit_symmetric(int n, int nmax, const float* x, float is, int8_t* L, float* sumlx, float* suml2) {
  *sumlx = *suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(is * x[i]), -nmax, nmax - 1);
    if (L) L[i] = int8_t(l);
    const float w = x[i] * x[i];
    *sumlx += w * x[i] * float(l);
    *suml2 += w * float(l) * float(l);
  }
}

}  // namespace

float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float amax;
  const float max = signed_absmax(n, x, &amax);
  if (amax < kGroupMaxEps) {
    std::fill(L, L + n, int8_t{0});
    return 0.0f;
  }
  float sumlx, suml2;
  fit_symmetric(n, nmax, x, float(-nmax) / max, L, &sumlx, &suml2);
  // Coordinate descent: move one code to its best value under the others' scale and keep the
  // move when it raises sumlx² / suml2 (lowers the error at the optimal scale).
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * float(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * float(L[i]) * float(L[i]);
        const int new_l = std::clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != L[i]) {
          slx += w * x[i] * float(new_l);
          sl2 += w * float(new_l) * float(new_l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = int8_t(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float amax;
  const float max = signed_absmax(n, x, &amax);
  if (amax < kGroupMaxEps) {
    std::fill(L, L + n, int8_t{0});
    return 0.0f;
  }
  auto codes = [&](float is) {
    for (int i = 0; i < n; ++i) L[i] = int8_t(nmax + std::clamp(nearest_int(is * x[i]), -nmax, nmax - 1));
  };
  float iscale = float(-nmax) / max;
  float sumlx, suml2;
  fit_symmetric(n, nmax, x, iscale, nullptr, &sumlx, &suml2);
  codes(iscale);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    fit_symmetric(n, nmax, x, iscale, nullptr, &sumlx, &suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      codes(iscale);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

int best_index_int8(int n, const int8_t* val, float x) {
  if (x <= float(val[0])) return 0;
  if (x >= float(val[n - 1])) return n - 1;
  int ml = 0, mu = n - 1;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < float(val[mav])) {
      mu = mav;
    } else {
      ml = mav;
    }
  }
  return x - float(val[mu - 1]) < float(val[mu]) - x ? mu - 1 : mu;
}

void quantize_iq4_super_block(int super_block, const float* x, uint16_t* dh, uint8_t* q4, uint16_t* scales_h,
                              uint8_t* scales_l) {
  constexpr int kBlock = 32, kNtry = 7;
  const int8_t* values = kIq4nlValues;
  uint8_t L[kQK_K];
  float scales[kQK_K / kBlock];
  const int nb = super_block / kBlock;
  std::memset(q4, 0, size_t(super_block / 2));
  *dh = f32_to_f16(0.0f);
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < nb; ++ib) {
    const float* xb = x + ib * kBlock;
    uint8_t* lb = L + ib * kBlock;
    float weight[kBlock];
    for (int j = 0; j < kBlock; ++j) weight[j] = xb[j] * xb[j];
    float amax;
    const float max = signed_absmax(kBlock, xb, &amax);
    if (amax < kGroupMaxEps) {
      scales[ib] = 0;
      continue;
    }
    // Codes and x²-weighted sums at inverse scale id.
    auto fit = [&](float id, float* sumqx, float* sumq2, uint8_t* codes) {
      *sumqx = *sumq2 = 0;
      for (int j = 0; j < kBlock; ++j) {
        const int l = best_index_int8(16, values, id * xb[j]);
        if (codes) codes[j] = uint8_t(l);
        const float q = float(values[l]), w = weight[j];
        *sumqx += w * q * xb[j];
        *sumq2 += w * q * q;
      }
    };
    float d = -max / float(values[0]);
    float sumqx, sumq2;
    fit(1 / d, &sumqx, &sumq2, lb);
    d = sumqx / sumq2;
    float best = d * sumqx;
    // The levels are asymmetric (-127..113), so the trials run over both signs of the scale:
    // id = (itry - 127) / max maps the extreme value onto the far end of the table.
    for (int itry = -kNtry; itry <= kNtry; ++itry) {
      fit(float(itry + values[0]) / max, &sumqx, &sumq2, nullptr);
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
    scales[ib] = d;
    if (std::fabs(d) > amax_scale) {
      amax_scale = std::fabs(d);
      max_scale = d;
    }
  }
  if (nb > 1) {
    *scales_h = 0;
    const float d = -max_scale / 32;
    *dh = f32_to_f16(d);
    const float id = d != 0 ? 1 / d : 0.0f;
    for (int ib = 0; ib < nb; ++ib) {
      int l = std::clamp(nearest_int(id * scales[ib]), -32, 31);
      const float dl = d * float(l);
      const float idl = dl != 0 ? 1 / dl : 0.0f;
      for (int j = 0; j < kBlock; ++j) L[ib * kBlock + j] = uint8_t(best_index_int8(16, values, idl * x[ib * kBlock + j]));
      l += 32;
      const uint8_t l_l = uint8_t(l & 0xF), l_h = uint8_t(l >> 4);
      scales_l[ib / 2] = ib % 2 == 0 ? l_l : uint8_t(scales_l[ib / 2] | (l_l << 4));
      *scales_h = uint16_t(*scales_h | (l_h << (2 * ib)));
    }
  } else {
    *dh = f32_to_f16(scales[0]);
    const float id = scales[0] != 0 ? 1 / scales[0] : 0.0f;
    for (int j = 0; j < super_block; ++j) L[j] = uint8_t(best_index_int8(16, values, id * x[j]));
  }
  for (int i = 0; i < super_block / 32; ++i) {
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = uint8_t(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
  }
}

}  // namespace kvq
