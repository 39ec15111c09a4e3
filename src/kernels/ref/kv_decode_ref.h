// SPDX-License-Identifier: MIT
// Scalar decoders of every KvFormat: the specification of the fused attention kernels.
#pragma once

#include "kernels/kv_run.h"
#include "quant/normalize.h"

namespace kvq::ref {

// out: [run.n, head_dim] f32, the exact values the cache holds (outliers applied).
void decode_run_ref(const KvRun& run, float* out);

// Zero point and half-range of token t of a kCodebookRow run (KvRun::norm_off, norm8).
NormF run_norm_ref(const KvRun& run, int t);

// KIVI keys (KvFormat::kUniformCols) are scored in integers, as llama.cpp scores q4_0 / q8_0 keys
// against a query rounded to q8_0: each block's weighted query w = q * s (s the block's channel
// scales) is rounded to int8, w8_c = nearbyint(w_c * 127 / amax), amax = max_c |w_c|, and
//   q . x'_t = d * sum_c w8_c code_tc + q . z,   d = amax / 127,
// the inner sum exact. Returns d and sets w8 [n]; d is NaN (w8 zero) when a w_c is not finite,
// 0 (w8 zero) when amax is below kRoundedMaxFloor (kernels/kv_run.h). The rounding moves a
// score by at most d / 2 * sum_c code_tc.
float round_weighted_query_ref(const float* w, int n, int8_t* w8);

// scores[i * ld + t] = scale * (d_i * sum_c w8_ic code_tc + q_i . z) for t < run.n (kUniformCols
// runs), q: [n_q][head_dim]: the specification of the fused KIVI key kernel.
void uniform_cols_scores_ref(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld);

// scores[i * ld + t] = scale * fma(d_i * sum_c w8_ic code_tc, s_t, z_t * sum_c q_ic) for t <
// run.n, for kUniformRow key runs of one group per head at 2 and 4 bits (key_query_in_integers,
// kernels/kv_run.h: int2, int4): each query rounded to int8 once (w8_i, d_i:
// round_weighted_query_ref of q_i itself), s_t and z_t token t's scale and zero point. The
// specification of the fused int-b key kernel.
void uniform_row_scores_ref(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld);

// 2- and 4-bit per-token groups (KvFormat::kUniformRow at bits 2 and 4: KIVI's values, int2,
// int4; value_weights_in_integers, kernels/kv_run.h) accumulate in integers: each run's weights w_tg = p_t * s_tg (0 where p_t is 0) are rounded to uint8 with one
// scale per run and query, w8 = clamp(nearbyint(w * 255 / wmax), 0, 255), wmax = max w, and
//   out_c += d * sum_t w8_t,g(c) code_tc + sum_t p_t z_t,g(c),   d = wmax / 255,
// the inner sum exact. Returns d and sets w8 [n]; NaN (w8 zero) when a w is not finite, 0 (w8
// zero) when wmax is below kRoundedMaxFloor (a run of vanishing probabilities).
float round_weights_u8_ref(const float* w, int n, uint8_t* w8);

// out[i * head_dim + c] += sum_t p[i * ld + t] * x'_tc for a kUniformRow run, 2- and 4-bit runs
// as above: the specification of the fused value kernel.
void uniform_row_accumulate_ref(const KvRun& run, const float* p, int n_q, size_t ld, float* out);

// 2-bit KVQuant values (KvFormat::kCodebookRow at bits 2) accumulate in integers: the run's
// levels L_j are rounded to int8 steps, Lq_j = nearbyint(L_j * s / lmax), lmax = max_j |L_j|,
// s the step count in [kLevelSteps / 2, kLevelSteps] with the least sum of squared rounding
// errors (lmax / s)^2 sum_j (L_j s / lmax - Lq_j)^2 (the largest s on a tie): a codebook's four
// levels are a per-layer constant, and a rounding that fits them shifts every token's value the
// same way, which attention's sum does not average away (with s fixed at 63 the testbed's 2.5-bit
// cache lost 1.7% in KL, with the best fit none; docs/PERFORMANCE.md). The weights
// a_t = p_t half_t (0 where p_t is 0) are rounded to uint8 as above (round_weights_u8_ref), and
//   out_c += (d lambda) * sum_t w8_t Lq[code_tc],   then   out_c = fma(p_t, corr, out_c)
// for each sparse outlier (token order), then out_c += sum_t p_t zero_t,
// the inner sum exact. Returns lambda = lmax / s and sets lq [n]; NaN (lq zero) when a level is
// not finite, 0 (lq zero) when lmax is below kRoundedMaxFloor. A level moves by at most
// lambda / 2, a weight by d / 2. The stores compute it once per codebook (KvRun::levels_q).
float round_levels_ref(const float* levels, int n, int8_t* lq);

// out[i * head_dim + c] += sum_t p[i * ld + t] * x'_t for a kCodebookRow run, 2-bit runs as
// above (others: decode_run_ref, then an axpy per token): the specification of the fused value
// kernel.
void codebook_row_accumulate_ref(const KvRun& run, const float* p, int n_q, size_t ld, float* out);

}  // namespace kvq::ref
