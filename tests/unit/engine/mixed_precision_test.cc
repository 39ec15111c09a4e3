// SPDX-License-Identifier: MIT
// The per-layer width chooser (engine/mixed_precision.h): exact against brute force on random
// instances, within its budget, deterministic, and clear when no choice fits.
#include <gtest/gtest.h>

#include <cmath>

#include "base/rng.h"
#include "engine/mixed_precision.h"

namespace kvq {
namespace {

// Every assignment of 3 widths to n items: the least error within the budget (fewest bytes
// among equal errors).
double brute_force(const std::vector<WidthOptions>& items, double budget, double* bytes_out) {
  const size_t n = items.size();
  size_t total = 1;
  for (size_t i = 0; i < n; ++i) total *= 3;
  double best = INFINITY, best_bytes = INFINITY;
  for (size_t code = 0; code < total; ++code) {
    double e = 0, b = 0;
    size_t c = code;
    for (size_t i = 0; i < n; ++i, c /= 3) {
      e += items[i].error[c % 3];
      b += items[i].bytes[c % 3];
    }
    if (b > budget) continue;
    if (e < best || (e == best && b < best_bytes)) {
      best = e;
      best_bytes = b;
    }
  }
  *bytes_out = best_bytes;
  return best;
}

std::vector<WidthOptions> random_items(Rng& rng, size_t n, bool same_bytes) {
  std::vector<WidthOptions> items(n);
  for (auto& it : items) {
    // Errors fall with width, not necessarily convexly; sizes grow with width.
    const double e2 = 1 + 10 * rng.uniform();
    const double e3 = e2 * (0.1 + 0.8 * rng.uniform());
    it.error = {e2, e3, e3 * (0.1 + 0.8 * rng.uniform())};
    it.bytes = same_bytes ? std::array<double, 3>{100, 150, 201}
                          : std::array<double, 3>{double(50 + rng.below(50)), double(150 + rng.below(50)),
                                                  double(250 + rng.below(50))};
  }
  return items;
}

TEST(MixedPrecision, ChoiceIsExactAgainstBruteForce) {
  Rng rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng.below(8);
    const auto items = random_items(rng, n, trial % 2 == 0);
    double lo = 0, hi = 0;
    for (const auto& it : items) {
      lo += it.bytes[0];
      hi += it.bytes[2];
    }
    const double budget = lo + (hi - lo) * rng.uniform();
    auto w = choose_widths(items, budget);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    ASSERT_EQ(w->size(), n);
    double e = 0, b = 0;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_GE((*w)[i], 2);
      ASSERT_LE((*w)[i], 4);
      e += items[i].error[size_t((*w)[i] - 2)];
      b += items[i].bytes[size_t((*w)[i] - 2)];
    }
    double bf_bytes = 0;
    const double bf = brute_force(items, budget, &bf_bytes);
    EXPECT_LE(b, budget) << trial;
    EXPECT_NEAR(e, bf, 1e-9 * bf) << trial;
    EXPECT_NEAR(b, bf_bytes, 1e-9) << trial;
  }
}

TEST(MixedPrecision, EdgesOfTheBudget) {
  Rng rng(4);
  const auto items = random_items(rng, 6, true);
  // Everything at 4 bits when it fits; everything at 2 bits at exactly that size.
  auto all4 = choose_widths(items, 6 * 201.0);
  ASSERT_TRUE(all4.ok());
  for (int b : *all4) EXPECT_EQ(b, 4);
  auto all2 = choose_widths(items, 6 * 100.0);
  ASSERT_TRUE(all2.ok());
  for (int b : *all2) EXPECT_EQ(b, 2);
  auto none = choose_widths(items, 6 * 100.0 - 1);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  std::vector<WidthOptions> bad = items;
  bad[2].error[1] = NAN;
  EXPECT_FALSE(choose_widths(bad, 1e9).ok());
}

TEST(MixedPrecision, PlanIsDeterministicAndWithinTheBudgetAsAccounted) {
  const int n_layers = 6;
  const CacheConfig base = kvquant_config(n_layers, 2, 64, 3, 0.01, 1);
  Rng rng(5);
  std::vector<std::array<double, 3>> ke(n_layers), ve(n_layers);
  for (int il = 0; il < n_layers; ++il) {
    const double s = std::exp(3 * rng.uniform());
    ke[size_t(il)] = {s, s / 4, s / 16};
    ve[size_t(il)] = {2 * s, s / 3, s / 10};
  }
  double last_error = INFINITY;
  for (double budget : {2.9, 3.0, 3.3, 3.5, 3.8, 4.0, 5.0}) {
    auto a = plan_mixed_precision(base, 1024, budget, ke, ve);
    auto b = plan_mixed_precision(base, 1024, budget, ke, ve);
    ASSERT_TRUE(a.ok()) << budget << ": " << a.status().to_string();
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(a->k_bits, b->k_bits);
    EXPECT_EQ(a->v_bits, b->v_bits);
    EXPECT_LE(a->bits_per_value, budget + 1e-9);
    // The accounting of the chosen config, independently.
    CacheConfig c = base;
    c.k.layer_bits = a->k_bits;
    c.v.layer_bits = a->v_bits;
    EXPECT_EQ(account_bits(c, 1024).value().bits_per_value(), a->bits_per_value);
    EXPECT_LE(a->error, last_error);  // a larger budget never does worse
    last_error = a->error;
  }
  // Below every layer at 2 bits: an error naming that floor.
  auto low = plan_mixed_precision(base, 1024, 2.0, ke, ve);
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.status().message().find("every layer at 2 bits"), std::string::npos) << low.status().message();
}

// Widths per KV head: the plan's bits are the accounting of its per-head config (computed
// independently here: each head's codes at its width, one codebook per width a layer uses), it
// stays within the budget, and where the heads' errors are the layer's split evenly it is never
// worse than the per-layer plan by more than the codebook bound, and uses its finer steps.
TEST(MixedPrecision, PerHeadPlanIsAccountedExactlyAndWithinTheBudget) {
  const int n_layers = 6, heads = 2, hd = 64;
  Rng rng(6);
  std::vector<std::array<double, 3>> ke(n_layers), ve(n_layers), keh, veh;
  for (int il = 0; il < n_layers; ++il) {
    const double s = std::exp(3 * rng.uniform());
    ke[size_t(il)] = {s, s / 4, s / 16};
    ve[size_t(il)] = {2 * s, s / 3, s / 10};
    for (int h = 0; h < heads; ++h) {
      // Heads of one layer differ in sensitivity.
      const double f = h == 0 ? 0.3 : 0.7;
      keh.push_back({f * s, f * s / 4, f * s / 16});
      veh.push_back({(1 - f) * 2 * s, (1 - f) * s / 3, (1 - f) * s / 10});
    }
  }
  for (const auto& [outliers, sinks] : {std::pair{0.0, 0}, std::pair{0.01, 1}}) {
    const CacheConfig base = kvquant_config(n_layers, heads, hd, 3, outliers, sinks);
    double last_error = INFINITY;
    for (double budget : {3.0, 3.3, 3.5, 3.8, 4.3}) {
      SCOPED_TRACE(budget);
      auto a = plan_mixed_precision(base, 1024, budget, keh, veh, true);
      ASSERT_TRUE(a.ok()) << a.status().to_string();
      ASSERT_TRUE(a->per_head);
      ASSERT_EQ(a->k_bits.size(), size_t(n_layers * heads));
      EXPECT_LE(a->bits_per_value, budget + 1e-9);
      CacheConfig c = base;
      c.k.head_bits = a->k_bits;
      c.v.head_bits = a->v_bits;
      const BitsReport r = account_bits(c, 1024).value();
      EXPECT_EQ(r.bits_per_value(), a->bits_per_value);
      // Independently: a uniform cache's bytes, minus its codes and codebook, plus per head.
      for (bool keys : {true, false}) {
        const auto& w = keys ? a->k_bits : a->v_bits;
        double bytes = 0;
        for (int il = 0; il < n_layers; ++il) {
          CacheConfig u = kvquant_config(1, heads, hd, 2, outliers, sinks);
          const BitsReport ur = account_bits(u, 1024).value();
          const TensorBytes& t = keys ? ur.k : ur.v;
          bytes += t.total() - t.codes - 16;  // the 2-bit codebook
          bool seen[5] = {};
          for (int h = 0; h < heads; ++h) {
            const int b = w[size_t(il * heads + h)];
            bytes += (1024 - sinks + 63) / 64 * 64 * hd * b / 8.0;
            if (!seen[b]) bytes += (1 << b) * 4;
            seen[b] = true;
          }
        }
        EXPECT_NEAR(keys ? r.k.total() : r.v.total(), bytes, 1e-6) << keys;
      }
      EXPECT_LE(a->error, last_error);
      last_error = a->error;
    }
  }
  // Heads at one width per layer are the per-layer plan's accounting.
  const CacheConfig base = kvquant_config(n_layers, heads, hd, 3, 0.0, 0);
  CacheConfig lay = base, per = base;
  lay.k.layer_bits = lay.v.layer_bits = {2, 3, 4, 4, 3, 2};
  for (int b : lay.k.layer_bits) per.k.head_bits.insert(per.k.head_bits.end(), heads, b);
  per.v.head_bits = per.k.head_bits;
  EXPECT_EQ(account_bits(lay, 1000).value().bits_per_value(), account_bits(per, 1000).value().bits_per_value());
  // Errors of the wrong shape, and per-head widths of the wrong count, are errors.
  EXPECT_FALSE(plan_mixed_precision(base, 1024, 3.5, ke, ve, true).ok());
  per.k.head_bits.pop_back();
  EXPECT_FALSE(account_bits(per, 1000).ok());
}

// Per head the plan is exact: against every assignment of widths to the 8 (layer, K|V, head)
// items of a 2-layer, 2-head cache, accounted exactly (a codebook per width a layer uses), it
// finds the least error within the budget.
TEST(MixedPrecision, PerHeadPlanIsExactAgainstBruteForce) {
  const int n_layers = 2, heads = 2, n = n_layers * heads;
  Rng rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::array<double, 3>> ke(n), ve(n);
    for (auto* e : {&ke, &ve}) {
      for (auto& x : *e) {
        const double e2 = 1 + 10 * rng.uniform(), e3 = e2 * (0.1 + 0.8 * rng.uniform());
        x = {e2, e3, e3 * (0.1 + 0.8 * rng.uniform())};
      }
    }
    const CacheConfig base = kvquant_config(n_layers, heads, 64, 3, 0.0, 0);
    // A short context, so that the codebooks weigh against the codes.
    const int64_t tokens = 8 + int64_t(rng.below(64));
    const double budget = 2.3 + 1.8 * rng.uniform();
    double best = INFINITY;
    for (int code = 0; code < 6561; ++code) {
      CacheConfig c = base;
      double e = 0;
      int x = code;
      for (int i = 0; i < 2 * n; ++i, x /= 3) {
        const bool k = i < n;
        (k ? c.k.head_bits : c.v.head_bits).push_back(2 + x % 3);
        e += (k ? ke : ve)[size_t(k ? i : i - n)][size_t(x % 3)];
      }
      if (account_bits(c, tokens).value().bits_per_value() <= budget * (1 + 1e-12)) best = std::min(best, e);
    }
    auto plan = plan_mixed_precision(base, tokens, budget, ke, ve, true);
    if (!std::isfinite(best)) {
      EXPECT_FALSE(plan.ok()) << trial;
      continue;
    }
    ASSERT_TRUE(plan.ok()) << trial << ": " << plan.status().to_string();
    EXPECT_NEAR(plan->error, best, 1e-9 * best) << trial;
    EXPECT_LE(plan->bits_per_value, budget * (1 + 1e-12)) << trial;
  }
}

}  // namespace
}  // namespace kvq
