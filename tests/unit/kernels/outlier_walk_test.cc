// SPDX-License-Identifier: MIT
// The sparse-outlier walk of kernels/kv_run.h in every width of quant/outlier_layout.h (uint8 /
// uint16 indices, uint16 / uint32 page-local pointers), against a plain scan of the same
// entries, and the run decoders (SIMD against their scalar references) over such pages, on
// random odd sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/rng.h"
#include "kernels/cpu/kv_decode.h"
#include "kernels/cpu/kv_fused.h"
#include "kernels/kv_run.h"
#include "kernels/ref/kv_decode_ref.h"
#include "quant/normalize.h"

namespace kvq {
namespace {

// One page block of `layout` for n rows of row_values values, each with random ascending
// indices (more where a row is dense); entries[t] keeps them as a plain list.
struct Page {
  std::vector<uint8_t> block;
  std::vector<std::vector<std::pair<uint32_t, float>>> entries;
};

Page make_page(const OutlierLayout& lay, int page_tokens, int n, size_t row_values, Rng& rng) {
  Page pg;
  std::vector<uint32_t> ptr{0};
  std::vector<uint32_t> idx;
  std::vector<f16_t> val;
  for (int t = 0; t < n; ++t) {
    std::vector<std::pair<uint32_t, float>> row;
    const uint32_t every = 1 + uint32_t(rng.below(t % 5 == 0 ? 3 : 40));
    for (uint32_t i = uint32_t(rng.below(every)); i < row_values; i += 1 + uint32_t(rng.below(every))) {
      const f16_t v = f32_to_f16(float(rng.normal()) * 8.0f);
      row.push_back({i, f16_to_f32(v)});
      idx.push_back(i);
      val.push_back(v);
    }
    ptr.push_back(uint32_t(idx.size()));
    pg.entries.push_back(row);
  }
  const size_t cap = idx.size() + 3;  // spare room, as a growing page has
  pg.block.assign(lay.block_bytes(page_tokens, cap), 0xee);
  const auto c32 = uint32_t(cap);
  std::memcpy(pg.block.data(), &c32, 4);
  for (size_t s = 0; s < ptr.size(); ++s) lay.set_ptr(pg.block.data(), s, ptr[s]);
  std::memcpy(pg.block.data() + lay.val_offset(page_tokens), val.data(), val.size() * 2);
  uint8_t* ip = pg.block.data() + lay.idx_offset(page_tokens, cap);
  for (size_t k = 0; k < idx.size(); ++k) {
    if (lay.idx_bytes == 1) {
      ip[k] = uint8_t(idx[k]);
    } else {
      const auto i16 = uint16_t(idx[k]);
      std::memcpy(ip + 2 * k, &i16, 2);
    }
  }
  return pg;
}

void point_run_at(KvRun& r, const OutlierLayout& lay, const uint8_t* block, int page_tokens) {
  r.out_layout = lay;
  r.out_ptr = block + lay.ptr_offset();
  r.out_val = reinterpret_cast<const f16_t*>(block + lay.val_offset(page_tokens));
  r.out_idx = block + lay.idx_offset(page_tokens, OutlierLayout::cap_of(block));
}

TEST(OutlierWalk, EveryLayoutMatchesAPlainScan) {
  Rng rng(13);
  for (const uint8_t ptr_bytes : {uint8_t(2), uint8_t(4)}) {
    for (const uint8_t idx_bytes : {uint8_t(1), uint8_t(2)}) {
      const OutlierLayout lay{ptr_bytes, idx_bytes};
      const int head_dim = idx_bytes == 1 ? 37 : 61;
      const int n_heads = idx_bytes == 1 ? 5 : 11;  // 185 / 671 values: a uint8 index holds 185
      const size_t row_values = size_t(head_dim) * size_t(n_heads);
      const int page_tokens = 53, n = 47;
      SCOPED_TRACE("ptr " + std::to_string(ptr_bytes) + " idx " + std::to_string(idx_bytes));
      const Page pg = make_page(lay, page_tokens, n, row_values, rng);
      KvRun r;
      r.n = n;
      r.head_dim = head_dim;
      point_run_at(r, lay, pg.block.data(), page_tokens);
      for (int j : {0, 1, 17}) {
        const KvRun s = sub_run(r, j, n - j);
        for (int h = 0; h < n_heads; ++h) {
          KvRun sh = s;
          sh.out_ch0 = h * head_dim;
          for (int t = 0; t < s.n; ++t) {
            std::vector<std::pair<uint32_t, float>> got, want;
            for_each_run_outlier(sh, t, [&](size_t c, float v) { got.push_back({uint32_t(c), v}); });
            for (const auto& [i, v] : pg.entries[size_t(j + t)]) {
              if (i >= uint32_t(sh.out_ch0) && i < uint32_t(sh.out_ch0 + head_dim)) want.push_back({i - uint32_t(sh.out_ch0), v});
            }
            ASSERT_EQ(got, want) << "from " << j << " head " << h << " token " << t;
          }
        }
      }
    }
  }
}

// The fused kernels' lookup of a head's entries (counted N at a time from the token's end)
// against the walk, in every layout, for heads whose range ends below, at and past the largest
// uint8 index (256 values), on pages whose first tokens' windows would start before the
// page's values (a handful of entries: the lookup walks those).
TEST(OutlierWalk, SimdRangeMatchesTheWalk) {
  Rng rng(31);
  struct Geometry {
    int head_dim, n_heads, n;
  };
  for (const uint8_t ptr_bytes : {uint8_t(2), uint8_t(4)}) {
    for (const uint8_t idx_bytes : {uint8_t(1), uint8_t(2)}) {
      const OutlierLayout lay{ptr_bytes, idx_bytes};
      for (const Geometry g : {Geometry{64, 4, 47}, Geometry{37, 5, 3}, Geometry{8, 31, 64}, Geometry{128, 32, 19},
                               Geometry{61, 11, 1}}) {
        const size_t row_values = size_t(g.head_dim) * size_t(g.n_heads);
        if (idx_bytes == 1 && row_values > OutlierLayout::kMaxNarrowIdx) continue;
        const int page_tokens = 64;
        SCOPED_TRACE("ptr " + std::to_string(ptr_bytes) + " idx " + std::to_string(idx_bytes) + " values " +
                     std::to_string(row_values));
        const Page pg = make_page(lay, page_tokens, g.n, row_values, rng);
        KvRun r;
        r.n = g.n;
        r.head_dim = g.head_dim;
        point_run_at(r, lay, pg.block.data(), page_tokens);
        for (int j : {0, g.n / 2}) {
          const KvRun s = sub_run(r, j, g.n - j);
          for (int h = 0; h < g.n_heads; ++h) {
            KvRun sh = s;
            sh.out_ch0 = h * g.head_dim;
            for (int t = 0; t < s.n; ++t) {
              std::vector<uint32_t> want;
              for_each_run_outlier(sh, t, [&](size_t c, float) { want.push_back(uint32_t(c)); });
              uint32_t b = 0, u = 0;
              cpu::run_outlier_range(sh, t, &b, &u);
              ASSERT_LE(b, u);
              std::vector<uint32_t> got;
              for (uint32_t k = b; k < u; ++k) {
                const uint32_t i = idx_bytes == 1 ? sh.out_idx[k] : uint32_t(sh.out_idx[2 * k] | sh.out_idx[2 * k + 1] << 8);
                got.push_back(i - uint32_t(sh.out_ch0));
              }
              ASSERT_EQ(got, want) << "from " << j << " head " << h << " token " << t;
            }
          }
        }
      }
    }
  }
}

// kCodebookRow / kCodebookPc runs with outliers in every layout: the SIMD decoder bit for bit
// against its reference.
TEST(OutlierWalk, RunDecodersMatchTheirReferencesInEveryLayout) {
  Rng rng(29);
  const int head_dim = 64, bits = 3, n = 41, page_tokens = 64;
  const float levels[8] = {-1.0f, -0.6f, -0.3f, -0.1f, 0.1f, 0.3f, 0.6f, 1.0f};
  for (const uint8_t ptr_bytes : {uint8_t(2), uint8_t(4)}) {
    for (const uint8_t idx_bytes : {uint8_t(1), uint8_t(2)}) {
      const OutlierLayout lay{ptr_bytes, idx_bytes};
      const int n_heads = idx_bytes == 1 ? 3 : 9;
      const size_t row_values = size_t(head_dim) * size_t(n_heads);
      const Page pg = make_page(lay, page_tokens, n, row_values, rng);
      // Token-major records: codes of the head, then its NormParams.
      const size_t code_bytes = size_t(head_dim) * bits / 8, stride = code_bytes + sizeof(NormParams);
      std::vector<uint8_t> rows(size_t(n) * stride);
      for (int t = 0; t < n; ++t) {
        for (size_t b = 0; b < code_bytes; ++b) rows[size_t(t) * stride + b] = uint8_t(rng.below(256));
        const NormParams np{f32_to_f16(float(rng.normal())), f32_to_f16(0.5f + float(rng.below(100)) / 50.0f)};
        std::memcpy(&rows[size_t(t) * stride + code_bytes], &np, sizeof np);
      }
      std::vector<float> half(static_cast<size_t>(head_dim)), zero(half.size());
      for (int c = 0; c < head_dim; ++c) half[size_t(c)] = 0.5f + float(c % 7), zero[size_t(c)] = float(c % 5) - 2.0f;
      for (const KvFormat f : {KvFormat::kCodebookRow, KvFormat::kCodebookPc}) {
        for (int h : {0, n_heads - 1}) {
          SCOPED_TRACE(std::string(kv_format_name(f)) + " ptr " + std::to_string(ptr_bytes) + " idx " +
                       std::to_string(idx_bytes) + " head " + std::to_string(h));
          KvRun r;
          r.format = f;
          r.n = n;
          r.head_dim = head_dim;
          r.bits = bits;
          r.rows = rows.data();
          r.stride = stride;
          r.meta_stride = stride;
          r.norm_off = ptrdiff_t(code_bytes);
          r.levels = levels;
          r.ch_half = half.data();
          r.ch_zero = zero.data();
          point_run_at(r, lay, pg.block.data(), page_tokens);
          r.out_ch0 = h * head_dim;
          for (int j : {0, 7}) {
            const KvRun s = sub_run(r, j, n - j);
            std::vector<float> a(size_t(s.n) * head_dim), b(a.size());
            cpu::decode_run(s, a.data());
            ref::decode_run_ref(s, b.data());
            ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << "from " << j;
            // Every outlier of the head is exact in the decoded rows.
            for (int t = 0; t < s.n; ++t) {
              for (const auto& [i, v] : pg.entries[size_t(j + t)]) {
                if (i >= uint32_t(r.out_ch0) && i < uint32_t(r.out_ch0 + head_dim)) {
                  ASSERT_EQ(b[size_t(t) * head_dim + (i - uint32_t(r.out_ch0))], v);
                }
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvq
