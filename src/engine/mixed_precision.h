// SPDX-License-Identifier: MIT
// Per-layer mixed precision for a KVQuant cache (issue 13): each layer's keys and each layer's
// values take 2, 3 or 4 bits, chosen to minimize the total Fisher-weighted quantization error
// (KvActivations::fisher_error) subject to the average bits per value the cache would
// allocate (quant/bits_accounting.h, metadata included) staying within a budget.
//
// The choice is exact: a multiple-choice knapsack over the 2 * n_layers tensors, solved by
// dynamic programming over the Pareto frontier of (bytes, error) after each tensor. Every
// tensor's three options cost the same bytes whatever the layer (the widths change only the
// codes and the codebook), so the frontier holds at most one state per (tensors at 3 bits,
// tensors at 4 bits) pair, (n + 1)(n + 2) / 2 for n tensors: 91 for 6 layers, 2,145 for 32.
// A greedy by marginal error per bit can miss the optimum where one tensor's 2 -> 4 step pays
// but its 2 -> 3 step alone does not (error curves need not be convex); the exact answer
// costs microseconds, so there is no reason to approximate.
//
// Widths per KV head (kvq calibrate --width-per head): a width per (layer, K|V, KV head), each
// head with its share of the error (the channels of that head). A tensor's bytes are not a sum
// over its heads (a layer stores one codebook per width its heads use), so each tensor becomes
// one item whose options are, for every count of its heads at 3 and at 4 bits, the least-error
// assignment of widths to its heads (itself a small exact knapsack) at that assignment's exact
// bytes; the same frontier DP then chooses among them. Exact, and the plan's bytes are the
// accounting's. The steps are n_kv_heads times finer than per layer.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "kvq/status.h"
#include "quant/bits_accounting.h"

namespace kvq {

inline constexpr int kMixedMinBits = 2, kMixedMaxBits = 4;

// One tensor's options, index b - 2 for b bits.
struct WidthOptions {
  std::array<double, 3> error{};  // Fisher-weighted error at that width (>= 0)
  std::array<double, 3> bytes{};  // what the tensor allocates at that width
};

// One option of an item: what it costs and its error.
struct Choice {
  double bytes = 0, error = 0;
};
// The option of every item minimizing the summed error with summed bytes <= budget_bytes (same
// rules and errors as choose_widths, which is this with the three widths as options).
StatusOr<std::vector<int>> choose_options(std::span<const std::vector<Choice>> items, double budget_bytes);

// The width (2..4) of every item minimizing the summed error with summed bytes <= budget_bytes;
// among equal errors the fewest bytes, then the first in a fixed order (deterministic).
// invalid_argument when even every item at 2 bits exceeds the budget (the message gives the
// minimum), or for a negative or non-finite error.
StatusOr<std::vector<int>> choose_widths(std::span<const WidthOptions> items, double budget_bytes);

struct MixedPlan {
  // Per layer, or with per_head per (layer, KV head), layer major: item il * n_kv_heads + h.
  bool per_head = false;
  int n_kv_heads = 1;
  std::vector<int> k_bits, v_bits;                       // per item
  std::vector<std::array<double, 3>> k_error, v_error;   // per item, widths 2..4
  double error = 0;           // total of the chosen widths
  double bits_per_value = 0;  // allocated at n_tokens, from account_bits of the mixed config
  int64_t n_tokens = 0;
  // The width of KV head h of layer il.
  int k_width(int il, int h) const { return k_bits[size_t(per_head ? il * n_kv_heads + h : il)]; }
  int v_width(int il, int h) const { return v_bits[size_t(per_head ? il * n_kv_heads + h : il)]; }
};

// The widths for a kvquant cache shaped like `base` (kvquant_config: its k/v bits are replaced
// per layer, or per KV head) holding n_tokens, within budget_bits bits per value as allocated.
// The errors are per layer, or with per_head per (layer, KV head), layer major.
StatusOr<MixedPlan> plan_mixed_precision(const CacheConfig& base, int64_t n_tokens, double budget_bits,
                                         const std::vector<std::array<double, 3>>& k_error,
                                         const std::vector<std::array<double, 3>>& v_error, bool per_head = false);

// What a cache shaped like `base` with plan's widths allocates at plan.n_tokens, in bits per
// value (quant/bits_accounting.h).
StatusOr<double> mixed_bits_per_value(const CacheConfig& base, const MixedPlan& plan);

}  // namespace kvq
