// SPDX-License-Identifier: MIT
#include "engine/mixed_precision.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "base/check.h"

namespace kvq {

StatusOr<std::vector<int>> choose_widths(std::span<const WidthOptions> items, double budget_bytes) {
  double min_bytes = 0;
  for (const WidthOptions& it : items) {
    for (int b = 0; b < 3; ++b) {
      if (!(it.error[size_t(b)] >= 0) || !std::isfinite(it.error[size_t(b)]) || !(it.bytes[size_t(b)] >= 0)) {
        return invalid_argument("mixed precision: a width's error or size is negative or not finite");
      }
    }
    min_bytes += *std::min_element(it.bytes.begin(), it.bytes.end());
  }
  // The sums are of byte counts (some fractional: expected key outliers), so allow rounding.
  const double limit = budget_bytes * (1 + 1e-12);
  if (min_bytes > limit) {
    char m[160];
    std::snprintf(m, sizeof m, "the budget allows %.0f bytes, but every tensor at its smallest width takes %.0f",
                  budget_bytes, min_bytes);
    return invalid_argument(std::string("mixed precision: ") + m);
  }
  struct State {
    double bytes, error;
    int parent, width;  // index into the previous frontier, bits - 2
  };
  std::vector<std::vector<State>> frontier(items.size() + 1);
  frontier[0] = {{0.0, 0.0, -1, -1}};
  std::vector<State> cand;
  for (size_t i = 0; i < items.size(); ++i) {
    cand.clear();
    const auto& prev = frontier[i];
    for (size_t j = 0; j < prev.size(); ++j) {
      for (int b = 0; b < 3; ++b) {
        const State s{prev[j].bytes + items[i].bytes[size_t(b)], prev[j].error + items[i].error[size_t(b)], int(j), b};
        // Sizes only grow with more items, so a state past the budget never comes back.
        if (s.bytes <= limit) cand.push_back(s);
      }
    }
    std::sort(cand.begin(), cand.end(), [](const State& a, const State& b) {
      if (a.bytes != b.bytes) return a.bytes < b.bytes;
      if (a.error != b.error) return a.error < b.error;
      if (a.parent != b.parent) return a.parent < b.parent;
      return a.width < b.width;
    });
    // Keep the Pareto frontier: by bytes ascending, only states that lower the error.
    auto& next = frontier[i + 1];
    for (const State& s : cand) {
      if (next.empty() || s.error < next.back().error) next.push_back(s);
    }
  }
  // The last state has the least error (and, among equal errors, the fewest bytes).
  std::vector<int> widths(items.size());
  int at = int(frontier.back().size()) - 1;
  for (size_t i = items.size(); i > 0; --i) {
    const State& s = frontier[i][size_t(at)];
    widths[i - 1] = kMixedMinBits + s.width;
    at = s.parent;
  }
  return widths;
}

StatusOr<double> mixed_bits_per_value(const CacheConfig& base, const MixedPlan& plan) {
  CacheConfig mixed = base;
  mixed.k.layer_bits.clear();
  mixed.v.layer_bits.clear();
  (plan.per_head ? mixed.k.head_bits : mixed.k.layer_bits) = plan.k_bits;
  (plan.per_head ? mixed.v.head_bits : mixed.v.layer_bits) = plan.v_bits;
  KVQ_ASSIGN_OR_RETURN(BitsReport r, account_bits(mixed, plan.n_tokens));
  return r.bits_per_value();
}

StatusOr<MixedPlan> plan_mixed_precision(const CacheConfig& base, int64_t n_tokens, double budget_bits,
                                         const std::vector<std::array<double, 3>>& k_error,
                                         const std::vector<std::array<double, 3>>& v_error, bool per_head) {
  const size_t n_layers = size_t(base.n_layers);
  const size_t heads = per_head ? size_t(base.n_kv_heads) : 1, n_items = n_layers * heads;
  if (k_error.size() != n_items || v_error.size() != n_items) {
    return invalid_argument(per_head ? "mixed precision: errors for another number of layers or KV heads"
                                     : "mixed precision: errors for another number of layers");
  }
  if (!(budget_bits > 0) || !std::isfinite(budget_bits)) {
    return invalid_argument("mixed precision: the bits budget must be a positive number");
  }
  if (n_tokens <= 0) return invalid_argument("mixed precision: the budget needs a positive token count");
  // Each tensor's bytes at each width: a one-layer cache of that width (what account_bits sums
  // for a mixed config), so the plan's total is exactly the accounting's.
  CacheConfig one = base;
  one.n_layers = 1;
  one.k.layer_bits.clear();
  one.v.layer_bits.clear();
  std::array<double, 3> k_bytes{}, v_bytes{};
  for (int b = kMixedMinBits; b <= kMixedMaxBits; ++b) {
    one.k.bits = one.v.bits = b;
    KVQ_ASSIGN_OR_RETURN(BitsReport r, account_bits(one, n_tokens));
    k_bytes[size_t(b - kMixedMinBits)] = r.k.total();
    v_bytes[size_t(b - kMixedMinBits)] = r.v.total();
    if (per_head) {
      // A head's share of the layer, with the whole codebook of its width (the upper bound
      // above).
      const double cb = base.k.scheme == KvScheme::kNuq ? double(1 << b) * 4 : 0.0;
      k_bytes[size_t(b - kMixedMinBits)] = (r.k.total() - cb) / double(heads) + cb;
      v_bytes[size_t(b - kMixedMinBits)] = (r.v.total() - cb) / double(heads) + cb;
    }
  }
  // Items in layer order (then head order), keys before values.
  std::vector<WidthOptions> items;
  for (size_t i = 0; i < n_items; ++i) {
    items.push_back({k_error[i], k_bytes});
    items.push_back({v_error[i], v_bytes});
  }
  const double n_values = 2.0 * double(n_tokens) * double(base.n_layers) * base.n_kv_heads * base.head_dim;
  auto widths = choose_widths(items, budget_bits * n_values / 8.0);
  if (!widths.ok()) {
    char m[128];
    CacheConfig all2 = base;
    all2.k.bits = all2.v.bits = kMixedMinBits;
    auto r = account_bits(all2, n_tokens);
    std::snprintf(m, sizeof m, "--bits-budget %g is below %.3f bits per value, what every layer at 2 bits allocates",
                  budget_bits, r.ok() ? r->bits_per_value() : 0.0);
    return invalid_argument(m);
  }
  MixedPlan plan;
  plan.per_head = per_head;
  plan.n_kv_heads = int(heads);
  plan.n_tokens = n_tokens;
  plan.k_error = k_error;
  plan.v_error = v_error;
  for (size_t i = 0; i < n_items; ++i) {
    plan.k_bits.push_back((*widths)[2 * i]);
    plan.v_bits.push_back((*widths)[2 * i + 1]);
    plan.error += k_error[i][size_t(plan.k_bits.back() - kMixedMinBits)] +
                  v_error[i][size_t(plan.v_bits.back() - kMixedMinBits)];
  }
  KVQ_ASSIGN_OR_RETURN(plan.bits_per_value, mixed_bits_per_value(base, plan));
  // Exact accounting of a per-head plan can only be below what the items summed.
  KVQ_CHECK(plan.bits_per_value <= budget_bits * (1 + 1e-9));
  return plan;
}

}  // namespace kvq
