// SPDX-License-Identifier: MIT
// The sparse-outlier walk of kernels/kv_run.h over both forms of a page of
// quant/outlier_layout.h in every width (growing: uint8 / uint16 indices and uint16 / uint32
// page-local row pointers; sealed: uint16 / uint32 head pointers), against a plain scan of the
// same entries, and the run decoders (SIMD against their scalar references) over such pages,
// on random odd sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "base/rng.h"
#include "kernels/cpu/kv_decode.h"
#include "kernels/kv_run.h"
#include "kernels/ref/kv_decode_ref.h"
#include "quant/normalize.h"

namespace kvq {
namespace {

// One page block of `layout` for n rows of n_heads * head_dim values, each with random
// ascending indices (more where a row is dense), growing or sealed; entries[t] keeps them as
// a plain list.
struct Page {
  std::vector<uint8_t> block;
  std::vector<std::vector<std::pair<uint32_t, float>>> entries;
};

Page make_page(const OutlierLayout& lay, int page_tokens, int n, int n_heads, int head_dim, bool sealed, Rng& rng) {
  Page pg;
  const size_t row_values = size_t(n_heads) * size_t(head_dim);
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
  if (sealed) {
    pg.block.assign(lay.sealed_block_bytes(cap), 0xee);
    const uint32_t word = uint32_t(cap) | OutlierLayout::kSealed;
    std::memcpy(pg.block.data(), &word, 4);
    size_t k = 0;
    uint8_t* vp = pg.block.data() + lay.sealed_val_offset();
    uint8_t* cp = pg.block.data() + lay.sealed_cell_offset(cap);
    for (int h = 0; h < n_heads; ++h) {
      lay.set_ptr(pg.block.data(), size_t(h), uint32_t(k));
      for (int t = 0; t < n; ++t) {
        for (const auto& [i, v] : pg.entries[size_t(t)]) {
          if (int(i) / head_dim != h) continue;
          const f16_t hv = f32_to_f16(v);
          const auto c = uint16_t(uint32_t(t) << lay.ch_bits | (i - uint32_t(h * head_dim)));
          std::memcpy(vp + 2 * k, &hv, 2);
          std::memcpy(cp + 2 * k, &c, 2);
          ++k;
        }
      }
    }
    lay.set_ptr(pg.block.data(), size_t(n_heads), uint32_t(k));
    return pg;
  }
  pg.block.assign(lay.block_bytes(page_tokens, cap), 0xee);
  const auto c32 = uint32_t(cap);
  std::memcpy(pg.block.data(), &c32, 4);
  for (size_t s = 0; s < ptr.size(); ++s) lay.set_ptr(pg.block.data(), s, ptr[s]);
  std::memcpy(pg.block.data() + lay.val_offset(page_tokens), val.data(), val.size() * 2);
  for (size_t k = 0; k < idx.size(); ++k) lay.set_idx(pg.block.data(), page_tokens, cap, k, idx[k]);
  return pg;
}

// Run r of head h over the page at `block`, as KvSegment::run() points it.
void point_run_at(KvRun& r, const OutlierLayout& lay, const uint8_t* block, int page_tokens, int h) {
  r.out_layout = lay;
  r.out_ch0 = h * r.head_dim;
  if (OutlierLayout::sealed_of(block)) {
    r.out_sealed = true;
    r.out_slot0 = 0;
    r.out_ptr = block + lay.ptr_offset() + size_t(h) * lay.ptr_bytes;
    r.out_val = reinterpret_cast<const f16_t*>(block + lay.sealed_val_offset());
    r.out_idx = block + lay.sealed_cell_offset(OutlierLayout::cap_of(block));
    return;
  }
  r.out_ptr = block + lay.ptr_offset();
  r.out_val = reinterpret_cast<const f16_t*>(block + lay.val_offset(page_tokens));
  r.out_idx = block + lay.idx_offset(page_tokens, OutlierLayout::cap_of(block));
}

// Every width of both forms: {ptr_bytes, idx_bytes, sealed}, with a head size and count whose
// row fits the index width (a uint8 index holds 185, not 671).
struct Form {
  uint8_t ptr_bytes, idx_bytes;
  bool sealed;
};
constexpr Form kForms[] = {{2, 1, false}, {2, 2, false}, {4, 1, false}, {4, 2, false}, {2, 2, true}, {4, 2, true}};

OutlierLayout layout_of(const Form& f, int n_heads, int head_dim) {
  OutlierLayout lay = OutlierLayout::for_rows(n_heads, head_dim, 64);
  lay.ptr_bytes = f.ptr_bytes;
  lay.idx_bytes = f.idx_bytes;
  return lay;
}

std::string form_name(const Form& f) {
  return std::string(f.sealed ? "sealed" : "growing") + " ptr " + std::to_string(f.ptr_bytes) + " idx " +
         std::to_string(f.idx_bytes);
}

TEST(OutlierWalk, EveryLayoutMatchesAPlainScan) {
  Rng rng(13);
  for (const Form& f : kForms) {
    const int head_dim = f.idx_bytes == 1 ? 37 : 61;
    const int n_heads = f.idx_bytes == 1 ? 5 : 11;
    const int page_tokens = 64;
    SCOPED_TRACE(form_name(f));
    const OutlierLayout lay = layout_of(f, n_heads, head_dim);
    for (const int n : {1, 47, 64}) {
      const Page pg = make_page(lay, page_tokens, n, n_heads, head_dim, f.sealed, rng);
      for (int h = 0; h < n_heads; ++h) {
        KvRun r;
        r.n = n;
        r.head_dim = head_dim;
        point_run_at(r, lay, pg.block.data(), page_tokens, h);
        // Whole runs and sub-runs that start and stop inside the page.
        for (const auto& [j, m] : {std::pair{0, n}, std::pair{n / 3, n - n / 3}, std::pair{n / 2, (n + 3) / 4}}) {
          if (m <= 0) continue;
          const KvRun s = sub_run(r, j, m);
          std::vector<std::tuple<int, uint32_t, float>> got, want;
          for_each_run_outlier(s, [&](int t, size_t c, float v) { got.push_back({t, uint32_t(c), v}); });
          for (int t = 0; t < m; ++t) {
            for (const auto& [i, v] : pg.entries[size_t(j + t)]) {
              if (i >= uint32_t(r.out_ch0) && i < uint32_t(r.out_ch0 + head_dim)) {
                want.push_back({t, i - uint32_t(r.out_ch0), v});
              }
            }
          }
          ASSERT_EQ(got, want) << "n " << n << " from " << j << " count " << m << " head " << h;
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
  // A codebook's 16-entry table (Codebook::values), 2^bits of them used: the SIMD lookup loads
  // the whole table (16 lanes on AVX-512).
  const float levels[16] = {-1.0f, -0.6f, -0.3f, -0.1f, 0.1f, 0.3f, 0.6f, 1.0f};
  for (const Form& fm : kForms) {
    const int n_heads = fm.idx_bytes == 1 ? 3 : 9;
    const OutlierLayout lay = layout_of(fm, n_heads, head_dim);
    const Page pg = make_page(lay, page_tokens, n, n_heads, head_dim, fm.sealed, rng);
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
        SCOPED_TRACE(std::string(kv_format_name(f)) + " " + form_name(fm) + " head " + std::to_string(h));
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
        point_run_at(r, lay, pg.block.data(), page_tokens, h);
        for (int j : {0, 7}) {
          const KvRun s = sub_run(r, j, n - j);
          std::vector<float> a(size_t(s.n) * head_dim), b(a.size());
          cpu::decode_run(s, a.data());
          ref::decode_run_ref(s, b.data());
          ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << "from " << j;
          // Every outlier of the head, a stored correction, is added to its dense decode (the
          // run without outliers); every other value is the dense decode.
          KvRun dense_run = s;
          dense_run.out_ptr = nullptr;
          std::vector<float> dense(a.size());
          ref::decode_run_ref(dense_run, dense.data());
          for (int t = 0; t < s.n; ++t) {
            for (const auto& [i, v] : pg.entries[size_t(j + t)]) {
              if (i >= uint32_t(r.out_ch0) && i < uint32_t(r.out_ch0 + head_dim)) {
                const size_t at = size_t(t) * head_dim + (i - uint32_t(r.out_ch0));
                ASSERT_EQ(b[at], dense[at] + v);
                dense[at] = b[at];
              }
            }
          }
          ASSERT_EQ(0, std::memcmp(dense.data(), b.data(), b.size() * 4)) << "from " << j;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvq
