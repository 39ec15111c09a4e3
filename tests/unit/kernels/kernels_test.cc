// SPDX-License-Identifier: MIT
// Highway kernels against their scalar references on random inputs of odd sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "base/fp16.h"
#include "base/rng.h"
#include "hwy/targets.h"
#include "kernels/cpu/ops.h"
#include "kernels/ref/ops_ref.h"
#include "kernels/rope.h"

namespace kvq {
namespace {

// SIMD sums in a different order than the scalar loop: allow float rounding growth ~ sqrt(n) ulp
// of the sum of |terms|.
constexpr float kRelTol = 2e-6f;

std::vector<float> random_vec(Rng& rng, size_t n) {
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal());
  return v;
}

float abs_dot(const float* a, const float* b, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += std::fabs(a[i] * b[i]);
  return s;
}

// y[t, r] (ldy apart) against ref::matmul_ref of x [n_tokens, n_in] and w [n_rows, n_in], within
// kRelTol * sqrt(n_in) of the sum of |terms|.
void expect_near_reference(const std::vector<float>& x, const std::vector<float>& w, const float* y, size_t ldy,
                           int n_tokens, int n_rows, int n_in) {
  std::vector<float> y_ref(size_t(n_tokens) * n_rows);
  ref::matmul_ref(x.data(), w.data(), y_ref.data(), n_tokens, n_rows, n_in);
  for (int t = 0; t < n_tokens; ++t) {
    for (int r = 0; r < n_rows; ++r) {
      const float bound = kRelTol * std::sqrt(float(n_in)) * abs_dot(&x[size_t(t) * n_in], &w[size_t(r) * n_in], n_in);
      ASSERT_NEAR(y[size_t(t) * ldy + r], y_ref[size_t(t) * n_rows + r], bound + 1e-30f)
          << n_tokens << "x" << n_rows << "x" << n_in << " at token " << t << ", row " << r;
    }
  }
}

// Runs fn on every Highway target this CPU runs (SSE4, AVX2, AVX-512, ...), not just the best:
// each target has its own tails (Highway 1.0.3's MaskedLoad is an aligned whole load on SSE4).
template <class Fn>
void on_every_target(const Fn& fn) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(Kernels, MatmulMatchesReferenceOnOddSizes) {
  on_every_target([&] {
    Rng rng(1);
    // Up to 16 tokens rows go outermost with the next 4 prefetched (12 rows: two blocks that
    // prefetch, one that does not); from 17 the tokens go outermost.
    for (int n_tokens : {1, 2, 3, 5, 7, 16, 17, 22}) {
      for (int n_rows : {1, 3, 4, 7, 12, 33}) {
        for (int n_in : {1, 7, 8, 31, 33, 127, 172}) {
          auto x = random_vec(rng, size_t(n_tokens) * n_in);
          auto w = random_vec(rng, size_t(n_rows) * n_in);
          std::vector<float> y(size_t(n_tokens) * n_rows);
          cpu::matmul({x.data(), w.data(), y.data(), size_t(n_in), size_t(n_in), size_t(n_rows),
                       n_tokens, n_rows, n_in});
          expect_near_reference(x, w, y.data(), size_t(n_rows), n_tokens, n_rows, n_in);
        }
      }
    }
  });
}

// Over f16 or bf16 rows (a GGUF's F16/BF16 weights at decode) the kernel converts each weight in registers:
// bit for bit the f32 kernel over the converted rows, on every target, for odd sizes (the last
// partial vector goes through a padded buffer), a row stride wider than n_in, and the row
// blocks that prefetch.
TEST(Kernels, MatmulOverHalfRowsEqualsTheConvertedRows) {
  Rng rng(3);
  on_every_target([&] {
    for (int n_tokens : {1, 3, 4, 5, 16, 17}) {
      for (int n_rows : {1, 4, 7, 12}) {
        for (int n_in : {1, 7, 16, 33, 172}) {
          const size_t ldw = size_t(n_in) + 3;
          auto x = random_vec(rng, size_t(n_tokens) * n_in);
          for (cpu::HalfType type : {cpu::HalfType::kF16, cpu::HalfType::kBF16}) {
            const bool f16 = type == cpu::HalfType::kF16;
            std::vector<uint16_t> w16(size_t(n_rows) * ldw);
            std::vector<float> w(w16.size());
            for (size_t i = 0; i < w16.size(); ++i) {
              const float v = float(rng.normal());
              w16[i] = f16 ? f32_to_f16(v) : f32_to_bf16(v);
              w[i] = f16 ? f16_to_f32(w16[i]) : bf16_to_f32(w16[i]);
            }
            std::vector<float> y(size_t(n_tokens) * n_rows), y16(y.size(), -1.0f);
            cpu::matmul({x.data(), w.data(), y.data(), size_t(n_in), ldw, size_t(n_rows), n_tokens, n_rows, n_in});
            cpu::matmul(cpu::MatmulHalfParams{
                {x.data(), w16.data(), y16.data(), size_t(n_in), ldw, size_t(n_rows), n_tokens, n_rows, n_in}, type});
            for (size_t i = 0; i < y.size(); ++i) {
              uint32_t a, b;
              std::memcpy(&a, &y[i], 4);
              std::memcpy(&b, &y16[i], 4);
              ASSERT_EQ(a, b) << (f16 ? "f16 " : "bf16 ") << n_tokens << "x" << n_rows << "x" << n_in << " at " << i;
            }
          }
        }
      }
    }
  });
}

// Any split of tokens and rows gives bit-identical outputs: the property that makes results
// independent of the thread count and of prefill batching.
TEST(Kernels, MatmulIsTilingInvariant) {
  Rng rng(2);
  const int n_rows = 13, n_in = 67;
  for (int n_tokens : {9, 21}) {  // rows outermost, tokens outermost
    auto x = random_vec(rng, size_t(n_tokens) * n_in);
    auto w = random_vec(rng, size_t(n_rows) * n_in);
    std::vector<float> whole(size_t(n_tokens) * n_rows), parts(whole.size());
    cpu::matmul({x.data(), w.data(), whole.data(), size_t(n_in), size_t(n_in), size_t(n_rows),
                 n_tokens, n_rows, n_in});
    for (int t = 0; t < n_tokens; ++t) {
      for (int r = 0; r < n_rows; ++r) {
        cpu::matmul({x.data() + size_t(t) * n_in, w.data() + size_t(r) * n_in,
                     parts.data() + size_t(t) * n_rows + r, size_t(n_in), size_t(n_in),
                     size_t(n_rows), 1, 1, n_in});
      }
    }
    EXPECT_EQ(whole, parts) << n_tokens << " tokens";
  }
}

// The panel kernel (batched matmuls over packed weights) against the reference on odd sizes,
// through pack_panel; and any token split gives bit-identical outputs.
TEST(Kernels, MatmulPanelMatchesReferenceOnOddSizes) {
  on_every_target([&] {
    Rng rng(4);
    for (int n_tokens : {1, 5, 6, 7, 13, 37}) {
      for (int n_rows : {1, 3, 8, 15, 16}) {
        for (int n_in : {1, 7, 33, 172}) {
          auto x = random_vec(rng, size_t(n_tokens) * n_in);
          auto w = random_vec(rng, size_t(n_rows) * n_in);
          std::vector<float> panel(size_t(cpu::kPanelRows) * n_in, -1.0f);
          cpu::pack_panel(w.data(), size_t(n_in), n_rows, n_in, panel.data());
          const size_t ldy = size_t(n_rows) + 2;  // a wider output stride: only n_rows are written
          std::vector<float> y(size_t(n_tokens) * ldy, 7.0f);
          cpu::matmul_panel({x.data(), panel.data(), y.data(), size_t(n_in), ldy, n_tokens, n_rows, n_in});
          expect_near_reference(x, w, y.data(), ldy, n_tokens, n_rows, n_in);
          for (int t = 0; t < n_tokens; ++t) {
            ASSERT_EQ(y[size_t(t) * ldy + n_rows], 7.0f);
            ASSERT_EQ(y[size_t(t) * ldy + n_rows + 1], 7.0f);
          }
          std::vector<float> parts(y.size(), 7.0f);
          for (int t = 0; t < n_tokens; ++t) {
            cpu::matmul_panel({x.data() + size_t(t) * n_in, panel.data(), parts.data() + size_t(t) * ldy, size_t(n_in),
                               ldy, 1, n_rows, n_in});
          }
          ASSERT_EQ(parts, y) << n_tokens << "x" << n_rows << "x" << n_in;
        }
      }
    }
  });
}

TEST(Kernels, AttentionOpsMatchReference) {
  on_every_target([&] {
    Rng rng(3);
    for (int head_dim : {1, 7, 8, 9, 16, 31, 64, 65, 128}) {
      for (int n_rows : {1, 2, 17, 97}) {
        auto q = random_vec(rng, size_t(head_dim));
        auto k = random_vec(rng, size_t(n_rows) * head_dim);
        std::vector<f16_t> k16(k.size());
        for (size_t i = 0; i < k.size(); ++i) k16[i] = f32_to_f16(k[i]);
        std::vector<float> s(static_cast<size_t>(n_rows)), s16(static_cast<size_t>(n_rows));
        const size_t hd = size_t(head_dim);
        cpu::attn_scores(q.data(), hd, 1, k.data(), hd, n_rows, head_dim, 0.5f, s.data(), size_t(n_rows));
        cpu::attn_scores(q.data(), hd, 1, k16.data(), hd, n_rows, head_dim, 0.5f, s16.data(), size_t(n_rows));
        for (int j = 0; j < n_rows; ++j) {
          const float bound = 1e-5f * abs_dot(q.data(), &k[size_t(j) * head_dim], head_dim) + 1e-30f;
          ASSERT_NEAR(s[j], 0.5f * ref::dot_ref(q.data(), &k[size_t(j) * head_dim], head_dim), bound);
          ASSERT_NEAR(s16[j], 0.5f * ref::dot_f16_ref(q.data(), &k16[size_t(j) * head_dim], head_dim),
                      bound);
        }
        std::vector<float> out(static_cast<size_t>(head_dim), 0.25f), out16(out), out_ref(out), out16_ref(out);
        cpu::attn_accumulate(s.data(), size_t(n_rows), 1, k.data(), hd, n_rows, head_dim, out.data(), hd);
        cpu::attn_accumulate(s.data(), size_t(n_rows), 1, k16.data(), hd, n_rows, head_dim, out16.data(), hd);
        for (int j = 0; j < n_rows; ++j) {
          ref::axpy_ref(s[j], &k[size_t(j) * head_dim], out_ref.data(), head_dim);
          ref::axpy_f16_ref(s[j], &k16[size_t(j) * head_dim], out16_ref.data(), head_dim);
        }
        for (int i = 0; i < head_dim; ++i) {
          ASSERT_NEAR(out[i], out_ref[i], 1e-4f * (1 + std::fabs(out_ref[i])));
          ASSERT_NEAR(out16[i], out16_ref[i], 1e-4f * (1 + std::fabs(out16_ref[i])));
        }
      }
    }
  });
}

// Queries go through the kernels in passes that share row loads; a query's scores and output
// must not depend on which pass it was in (prefill and decode agree bit for bit).
TEST(Kernels, AttentionOpsQueryPassesAreBitIdentical) {
  Rng rng(4);
  for (int head_dim : {7, 8, 9, 24, 64, 65}) {
    for (int n_q : {1, 3, 4, 6, 9}) {
      const int n_rows = 2 * n_q + 1;
      const size_t hd = size_t(head_dim), ld = hd + 3;  // padded rows
      auto q = random_vec(rng, size_t(n_q) * ld);
      auto k = random_vec(rng, size_t(n_rows) * ld);
      std::vector<f16_t> k16(k.size());
      for (size_t i = 0; i < k.size(); ++i) k16[i] = f32_to_f16(k[i]);
      for (bool half : {false, true}) {
        const size_t lds = size_t(n_rows) + 2;
        std::vector<float> s(size_t(n_q) * lds, 9.0f), s1(s);
        std::vector<float> out(size_t(n_q) * ld, 0.5f), out1(out);
        const auto scores = [&](const float* qq, int nq, float* ss) {
          if (half) return cpu::attn_scores(qq, ld, nq, k16.data(), ld, n_rows, head_dim, 0.3f, ss, lds);
          cpu::attn_scores(qq, ld, nq, k.data(), ld, n_rows, head_dim, 0.3f, ss, lds);
        };
        const auto accumulate = [&](const float* pp, int nq, float* oo) {
          if (half) return cpu::attn_accumulate(pp, lds, nq, k16.data(), ld, n_rows, head_dim, oo, ld);
          cpu::attn_accumulate(pp, lds, nq, k.data(), ld, n_rows, head_dim, oo, ld);
        };
        scores(q.data(), n_q, s.data());
        for (int i = 0; i < n_q; ++i) scores(q.data() + size_t(i) * ld, 1, s1.data() + size_t(i) * lds);
        ASSERT_EQ(0, std::memcmp(s.data(), s1.data(), s.size() * sizeof(float))) << head_dim << " " << n_q;
        accumulate(s.data(), n_q, out.data());
        for (int i = 0; i < n_q; ++i) accumulate(s.data() + size_t(i) * lds, 1, out1.data() + size_t(i) * ld);
        ASSERT_EQ(0, std::memcmp(out.data(), out1.data(), out.size() * sizeof(float))) << head_dim << " " << n_q;
      }
    }
  }
}

// attn_accumulate sums each output lane over the rows in order, one MulAdd per row, however it
// blocks the rows internally: one call over n rows equals consecutive calls over a split of them,
// bit for bit (the blocks of 64 rows, and a run split into pages, cannot change a result).
TEST(Kernels, AttentionAccumulateIsBlockingInvariant) {
  Rng rng(7);
  for (int head_dim : {8, 9, 64, 128}) {
    for (int n_q : {1, 4}) {
      const int n_rows = 150;
      const size_t hd = size_t(head_dim), lds = size_t(n_rows) + 1;
      auto p = random_vec(rng, size_t(n_q) * lds);
      auto v = random_vec(rng, size_t(n_rows) * hd);
      std::vector<f16_t> v16(v.size());
      for (size_t i = 0; i < v.size(); ++i) v16[i] = f32_to_f16(v[i]);
      for (bool half : {false, true}) {
        const auto accumulate = [&](int j0, int n, float* o) {
          if (half) return cpu::attn_accumulate(p.data() + j0, lds, n_q, v16.data() + size_t(j0) * hd, hd, n, head_dim, o, hd);
          cpu::attn_accumulate(p.data() + j0, lds, n_q, v.data() + size_t(j0) * hd, hd, n, head_dim, o, hd);
        };
        std::vector<float> whole(size_t(n_q) * hd, 0.5f);
        accumulate(0, n_rows, whole.data());
        for (int split : {1, 63, 64, 65, 100}) {
          std::vector<float> parts(size_t(n_q) * hd, 0.5f);
          accumulate(0, split, parts.data());
          accumulate(split, n_rows - split, parts.data());
          ASSERT_EQ(0, std::memcmp(whole.data(), parts.data(), whole.size() * sizeof(float)))
              << head_dim << " " << n_q << " " << split << " " << half;
        }
      }
    }
  }
}

TEST(Kernels, SwiGluMatchesReference) {
  on_every_target([&] {
    Rng rng(6);
    for (size_t n : {1, 7, 8, 9, 31, 100, 1029}) {
      auto g = random_vec(rng, n), u = random_vec(rng, n);
      for (auto& x : g) x *= 8.0f;
      if (n > 9) g[3] = -200.0f, g[4] = 200.0f, g[5] = -90.0f, g[6] = 0.0f;  // the clamp, both tails
      auto got = g;
      cpu::swiglu(got.data(), u.data(), n);
      for (size_t i = 0; i < n; ++i) {
        const float want = ref::silu(g[i]) * u[i];
        ASSERT_NEAR(got[i], want, 4e-7f * std::fabs(want) + 1e-30f) << "n " << n << " x " << g[i];
      }
    }
  });
}

TEST(Kernels, SoftmaxMatchesReference) {
  on_every_target([&] {
    Rng rng(5);
    for (int n : {1, 2, 7, 8, 15, 16, 17, 33, 127, 1000}) {
      for (bool round : {false, true}) {
        auto x = random_vec(rng, size_t(n));
        for (auto& v : x) v *= 4.0f;
        auto ref = x;
        ref::softmax_ref(ref.data(), n);
        cpu::softmax(x.data(), n, round);
        for (int i = 0; i < n; ++i) {
          const float want = round ? round_to_f16(ref[i]) : ref[i];
          // Highway Exp is within a few ulp of expf; an f16 rounding may then flip by one f16 ulp.
          ASSERT_NEAR(x[i], want, (round ? 1e-3f : 1e-5f) * want + 1e-7f) << n << " " << i;
        }
      }
    }
  });
}

// The queries' rotation by one angle set (attention, pre-RoPE keys) against Rope::rotate, its
// spec: every head size the models use, partial rotary, both directions, positions far apart.
// Within a rounding: the kernel fuses one product into an FMA.
TEST(Kernels, RopeRotateRowsMatchesRopeRotate) {
  Rng rng(21);
  for (auto [hd, rope_dim] : {std::pair{8, 8}, {64, 64}, {128, 128}, {128, 64}, {96, 32}, {12, 4}, {20, 12}}) {
    const Rope rope(hd, rope_dim, 10000.0f);
    for (int64_t pos : {int64_t(0), int64_t(1), int64_t(777), int64_t(1) << 20}) {
      for (bool transpose : {false, true}) {
        std::vector<float> cs(static_cast<size_t>(rope_dim));
        rope.angles(pos, cs.data());
        const int n_rows = 3;
        auto x = random_vec(rng, size_t(n_rows * hd));
        auto want = x;
        for (int r = 0; r < n_rows; ++r) rope.rotate(want.data() + size_t(r) * hd, cs.data(), transpose);
        ASSERT_TRUE(cpu::rope_rotate_rows(x.data(), n_rows, hd, rope_dim, cs.data(), transpose))
            << hd << " " << rope_dim << " (the SIMD targets take every multiple of 4)";
        for (size_t i = 0; i < x.size(); ++i) {
          if (int(i % size_t(hd)) >= rope_dim) {
            ASSERT_EQ(x[i], want[i]) << "past rope_dim: untouched";
          } else {
            ASSERT_NEAR(x[i], want[i], 2e-6f * (std::fabs(want[i]) + 1.0f)) << hd << " " << rope_dim << " " << i;
          }
        }
      }
    }
  }
  float y[6] = {1, 2, 3, 4, 5, 6};
  const float cs6[6] = {1, 0, 1, 0, 1, 0};
  EXPECT_FALSE(cpu::rope_rotate_rows(y, 1, 6, 6, cs6, false)) << "rope_dim 6: the caller rotates by Rope::rotate";
  for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], float(i + 1)) << "nothing done when refused";
}

TEST(Kernels, F16AndBf16ConversionsAreExact) {
  Rng rng(4);
  for (size_t n : {1, 7, 31, 33, 127}) {
    auto x = random_vec(rng, n);
    std::vector<f16_t> h(n);
    std::vector<float> back(n);
    cpu::convert_f32_to_f16(x.data(), h.data(), n);
    cpu::convert_f16_to_f32(h.data(), back.data(), n);
    // With the weights' prefetching, whose addresses pass the source's end (nothing is read
    // there: ASan builds run this too).
    std::vector<float> streamed(n);
    cpu::convert_f16_to_f32(h.data(), streamed.data(), n, 8192);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(h[i], f32_to_f16(x[i]));
      ASSERT_EQ(back[i], f16_to_f32(h[i]));
      ASSERT_EQ(streamed[i], back[i]);
    }
    // bf16: the float's upper half, exactly as bf16_to_f32 (NaN and infinity too), with and
    // without prefetching.
    std::vector<bf16_t> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = f32_to_bf16(x[i]);
    if (n > 3) b[1] = 0x7fc1, b[2] = 0xff80, b[3] = 0x0001;  // a NaN, -infinity, a subnormal
    std::vector<float> bf(n), bf_streamed(n);
    cpu::convert_bf16_to_f32(b.data(), bf.data(), n);
    cpu::convert_bf16_to_f32(b.data(), bf_streamed.data(), n, 8192);
    for (size_t i = 0; i < n; ++i) {
      const float want = bf16_to_f32(b[i]);
      ASSERT_EQ(std::memcmp(&bf[i], &want, 4), 0) << i;
      ASSERT_EQ(std::memcmp(&bf_streamed[i], &want, 4), 0) << i;
    }
  }
}

}  // namespace
}  // namespace kvq
