// SPDX-License-Identifier: MIT
#include "engine/mixed_precision.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "base/check.h"

namespace kvq {

StatusOr<std::vector<int>> choose_options(std::span<const std::vector<Choice>> items, double budget_bytes) {
  double min_bytes = 0;
  for (const auto& it : items) {
    if (it.empty()) return invalid_argument("mixed precision: a tensor without options");
    double least = INFINITY;
    for (const Choice& c : it) {
      if (!(c.error >= 0) || !std::isfinite(c.error) || !(c.bytes >= 0) || !std::isfinite(c.bytes)) {
        return invalid_argument("mixed precision: a width's error or size is negative or not finite");
      }
      least = std::min(least, c.bytes);
    }
    min_bytes += least;
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
    int parent, option;  // index into the previous frontier, into the item's options
  };
  std::vector<std::vector<State>> frontier(items.size() + 1);
  frontier[0] = {{0.0, 0.0, -1, -1}};
  std::vector<State> cand;
  for (size_t i = 0; i < items.size(); ++i) {
    cand.clear();
    const auto& prev = frontier[i];
    for (size_t j = 0; j < prev.size(); ++j) {
      for (size_t b = 0; b < items[i].size(); ++b) {
        const State s{prev[j].bytes + items[i][b].bytes, prev[j].error + items[i][b].error, int(j), int(b)};
        // Sizes only grow with more items, so a state past the budget never comes back.
        if (s.bytes <= limit) cand.push_back(s);
      }
    }
    std::sort(cand.begin(), cand.end(), [](const State& a, const State& b) {
      if (a.bytes != b.bytes) return a.bytes < b.bytes;
      if (a.error != b.error) return a.error < b.error;
      if (a.parent != b.parent) return a.parent < b.parent;
      return a.option < b.option;
    });
    // Keep the Pareto frontier: by bytes ascending, only states that lower the error.
    auto& next = frontier[i + 1];
    for (const State& s : cand) {
      if (next.empty() || s.error < next.back().error) next.push_back(s);
    }
  }
  // The last state has the least error (and, among equal errors, the fewest bytes).
  std::vector<int> chosen(items.size());
  int at = int(frontier.back().size()) - 1;
  for (size_t i = items.size(); i > 0; --i) {
    const State& s = frontier[i][size_t(at)];
    chosen[i - 1] = s.option;
    at = s.parent;
  }
  return chosen;
}

StatusOr<std::vector<int>> choose_widths(std::span<const WidthOptions> items, double budget_bytes) {
  std::vector<std::vector<Choice>> options;
  for (const WidthOptions& it : items) {
    options.push_back({{it.bytes[0], it.error[0]}, {it.bytes[1], it.error[1]}, {it.bytes[2], it.error[2]}});
  }
  KVQ_ASSIGN_OR_RETURN(std::vector<int> chosen, choose_options(options, budget_bytes));
  for (int& c : chosen) c += kMixedMinBits;
  return chosen;
}

namespace {

// One tensor (a layer's K or V) with a width per KV head: the least error for each count of
// heads at 3 and at 4 bits (a knapsack over its heads, exact since the codes' bytes depend only
// on those counts), with the widths that reach it. error[h] are head h's errors at 2..4 bits.
struct HeadAssignments {
  std::vector<std::pair<int, int>> counts;  // (heads at 3, heads at 4)
  std::vector<double> error;
  std::vector<std::vector<int>> widths;
};
HeadAssignments assign_heads(const std::array<double, 3>* error, int heads) {
  const int side = heads + 1;
  auto at = [&](int n3, int n4) { return size_t(n3 * side + n4); };
  std::vector<double> best(size_t(side * side), INFINITY), next;
  best[at(0, 0)] = 0;
  // pick[h][state]: head h's width index (0..2) on the best way to state after head h.
  std::vector<std::vector<int8_t>> pick(size_t(heads), std::vector<int8_t>(size_t(side * side), -1));
  for (int h = 0; h < heads; ++h) {
    next.assign(best.size(), INFINITY);
    for (int n3 = 0; n3 <= h; ++n3) {
      for (int n4 = 0; n3 + n4 <= h; ++n4) {
        if (!std::isfinite(best[at(n3, n4)])) continue;
        for (int w = 0; w < 3; ++w) {
          const size_t to = at(n3 + (w == 1), n4 + (w == 2));
          const double e = best[at(n3, n4)] + error[h][size_t(w)];
          if (e < next[to]) {
            next[to] = e;
            pick[size_t(h)][to] = int8_t(w);
          }
        }
      }
    }
    best.swap(next);
  }
  HeadAssignments a;
  for (int n3 = 0; n3 <= heads; ++n3) {
    for (int n4 = 0; n3 + n4 <= heads; ++n4) {
      a.counts.emplace_back(n3, n4);
      a.error.push_back(best[at(n3, n4)]);
      std::vector<int> w(static_cast<size_t>(heads));
      int c3 = n3, c4 = n4;
      for (int h = heads - 1; h >= 0; --h) {
        const int p = pick[size_t(h)][at(c3, c4)];
        w[size_t(h)] = kMixedMinBits + p;
        c3 -= p == 1;
        c4 -= p == 2;
      }
      a.widths.push_back(std::move(w));
    }
  }
  return a;
}

// A plan with a width per (layer, K|V, KV head): each tensor's options are its heads' best
// assignments per count (assign_heads) at their exact bytes (a one-layer cache with those
// widths: codes per head, a codebook per width in use), chosen by choose_options.
StatusOr<std::vector<std::vector<int>>> choose_head_widths(const CacheConfig& base, int64_t n_tokens,
                                                           double budget_bytes,
                                                           const std::vector<std::array<double, 3>>& k_error,
                                                           const std::vector<std::array<double, 3>>& v_error) {
  const int heads = base.n_kv_heads, n_layers = base.n_layers;
  // Bytes of a layer's keys and values by (heads at 3, heads at 4): the same in every layer.
  CacheConfig one = base;
  one.n_layers = 1;
  one.k.layer_bits.clear();
  one.v.layer_bits.clear();
  std::vector<std::array<double, 2>> bytes;
  const HeadAssignments shape = assign_heads(k_error.data(), heads);
  for (const auto& [n3, n4] : shape.counts) {
    std::vector<int> w(size_t(heads - n3 - n4), 2);
    w.insert(w.end(), size_t(n3), 3);
    w.insert(w.end(), size_t(n4), 4);
    one.k.head_bits = one.v.head_bits = w;
    KVQ_ASSIGN_OR_RETURN(BitsReport r, account_bits(one, n_tokens));
    bytes.push_back({r.k.total(), r.v.total()});
  }
  std::vector<HeadAssignments> tensors;  // layer order, keys before values
  std::vector<std::vector<Choice>> items;
  for (int il = 0; il < n_layers; ++il) {
    for (bool keys : {true, false}) {
      tensors.push_back(assign_heads(&(keys ? k_error : v_error)[size_t(il * heads)], heads));
      std::vector<Choice> c;
      for (size_t i = 0; i < tensors.back().counts.size(); ++i) c.push_back({bytes[i][keys ? 0 : 1], tensors.back().error[i]});
      items.push_back(std::move(c));
    }
  }
  KVQ_ASSIGN_OR_RETURN(std::vector<int> chosen, choose_options(items, budget_bytes));
  std::vector<std::vector<int>> out(2);  // keys, values: per (layer, head)
  for (size_t t = 0; t < tensors.size(); ++t) {
    const auto& w = tensors[t].widths[size_t(chosen[t])];
    auto& dst = out[t % 2];
    dst.insert(dst.end(), w.begin(), w.end());
  }
  return out;
}

}  // namespace

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
  const double n_values = 2.0 * double(n_tokens) * double(base.n_layers) * base.n_kv_heads * base.head_dim;
  auto infeasible = [&]() {
    char m[128];
    CacheConfig all2 = base;
    all2.k.bits = all2.v.bits = kMixedMinBits;
    auto r = account_bits(all2, n_tokens);
    std::snprintf(m, sizeof m, "--bits-budget %g is below %.3f bits per value, what every layer at 2 bits allocates",
                  budget_bits, r.ok() ? r->bits_per_value() : 0.0);
    return invalid_argument(m);
  };
  MixedPlan plan;
  plan.per_head = per_head;
  plan.n_kv_heads = int(heads);
  plan.n_tokens = n_tokens;
  plan.k_error = k_error;
  plan.v_error = v_error;
  if (per_head) {
    auto w = choose_head_widths(base, n_tokens, budget_bits * n_values / 8.0, k_error, v_error);
    if (!w.ok()) return infeasible();
    plan.k_bits = (*w)[0];
    plan.v_bits = (*w)[1];
  } else {
    // Each tensor's bytes at each width: a one-layer cache of that width (what account_bits
    // sums for a mixed config), so the plan's total is exactly the accounting's.
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
    }
    // Items in layer order, keys before values.
    std::vector<WidthOptions> items;
    for (size_t i = 0; i < n_items; ++i) {
      items.push_back({k_error[i], k_bytes});
      items.push_back({v_error[i], v_bytes});
    }
    auto widths = choose_widths(items, budget_bits * n_values / 8.0);
    if (!widths.ok()) return infeasible();
    for (size_t i = 0; i < n_items; ++i) {
      plan.k_bits.push_back((*widths)[2 * i]);
      plan.v_bits.push_back((*widths)[2 * i + 1]);
    }
  }
  // Both: the chosen widths' error, and bits per value as the accounting counts them.
  for (size_t i = 0; i < n_items; ++i) {
    plan.error += k_error[i][size_t(plan.k_bits[i] - kMixedMinBits)] + v_error[i][size_t(plan.v_bits[i] - kMixedMinBits)];
  }
  KVQ_ASSIGN_OR_RETURN(plan.bits_per_value, mixed_bits_per_value(base, plan));
  KVQ_CHECK(plan.bits_per_value <= budget_bits * (1 + 1e-9));
  return plan;
}

}  // namespace kvq
