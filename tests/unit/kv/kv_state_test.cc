// SPDX-License-Identifier: MIT
// Session state of every cache format (KvCache::write_state / read_state): a restored cache
// reads back bit for bit, costs the same bytes, exposes the same views and goes on appending
// as the original would; truncated, corrupted and mismatched states are errors that leave the
// target cache as it was.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "io/byte_stream.h"
#include "quant/outlier_layout.h"
#include "test_caches.h"

namespace kvq {
namespace {

using test::build;
using test::kHd;
using test::kKvHeads;
using test::kLayers;

constexpr int kCtx = 512;

const char* const kSpecs[] = {
    "f32", "f16", "q8_0", "q4_0", "int4", "int2:g=32", "kivi-2", "kivi-4", "kivi-2:g=8:r=16",
    "kvquant-2", "kvquant-3", "kvquant-3:outliers=0", "kvquant-4:sinks=0", "kvquant-3:sinks=5",
    "q4_0:rot=1", "int4:rot=1", "kivi-2:rot=1", "kvquant-3:prerope=0:rot=1",
    "K=kvquant-3,V=f16", "K=q8_0,V=kivi-2", "K=f16,V=kvquant-2:rot=1", "kvquant-mixed",
    "K=kvquant-mixed:outliers=0,V=kvquant-3", "kvquant-3:norm=8", "kvquant-3:r=16", "K=kvquant-2:r=8,V=kvquant-3:r=24:sinks=0"};

// Appends n random tokens to every layer, in steps of `step` with end_step() after each.
void fill(KvCache& c, int n, int step, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  const size_t row = c.shape().row_values();
  for (int done = 0; done < n; done += step) {
    const int m = std::min(step, n - done);
    std::vector<float> k(size_t(m) * row), v(k.size());
    for (auto& x : k) x = d(rng);
    for (auto& x : v) x = d(rng);
    for (int il = 0; il < c.shape().n_layers; ++il) ASSERT_TRUE(c.append(il, m, k.data(), v.data()).ok());
    ASSERT_TRUE(c.end_step().ok());
  }
}

// Every value read back, with every layer at the same length.
std::vector<float> contents(const KvCache& c) {
  for (int il = 1; il < kLayers; ++il) EXPECT_EQ(c.n_tokens(il), c.n_tokens(0));
  return read_all(c);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::string state_of(const KvCache& c) {
  std::string s;
  ByteWriter w = ByteWriter::to_string(&s);
  c.write_state(w);
  EXPECT_TRUE(w.finish().ok());
  return s;
}

Status restore(KvCache& c, const std::string& s, int n) {
  ByteReader r({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, "state");
  return c.read_state(r, n);
}

TEST(KvState, RoundTripsEverySpecBitForBit) {
  for (const char* spec : kSpecs) {
    for (int n : {0, 1, 37, 64, 200}) {
      SCOPED_TRACE(std::string(spec) + " n=" + std::to_string(n));
      auto a = build(spec, kCtx);
      ASSERT_TRUE(a.cache);
      fill(*a.cache, n, 24, 7);
      const std::string s = state_of(*a.cache);
      auto b = build(spec, kCtx);
      ASSERT_TRUE(restore(*b.cache, s, n).ok()) << restore(*b.cache, s, n).to_string();
      EXPECT_EQ(b.cache->n_tokens(0), n);
      EXPECT_EQ(b.cache->bytes_used(), a.cache->bytes_used());
      EXPECT_TRUE(same_bits(contents(*a.cache), contents(*b.cache)));
      EXPECT_EQ(state_of(*b.cache), s);
      // Both go on alike: the same appends give the same contents (windows, partial pages and
      // outlier pages were restored as they were).
      fill(*a.cache, 30, 1, 9);
      fill(*b.cache, 30, 1, 9);
      EXPECT_TRUE(same_bits(contents(*a.cache), contents(*b.cache)));
      EXPECT_EQ(b.cache->bytes_used(), a.cache->bytes_used());
    }
  }
}

TEST(KvState, StateIsAboutBytesUsed) {
  for (const char* spec : kSpecs) {
    auto a = build(spec, kCtx);
    fill(*a.cache, 256, 64, 3);
    const double ratio = double(state_of(*a.cache).size()) / double(a.cache->bytes_used());
    EXPECT_GT(ratio, 0.95) << spec;
    EXPECT_LT(ratio, 1.01) << spec;
  }
}

// A truncated or corrupted state is an error, and the target keeps what it held.
TEST(KvState, BadStatesChangeNothing) {
  for (const char* spec : {"f16", "q4_0", "kivi-2:g=8:r=16", "kvquant-3", "K=kvquant-2,V=kivi-4"}) {
    SCOPED_TRACE(spec);
    auto a = build(spec, kCtx);
    fill(*a.cache, 100, 30, 1);
    const std::string s = state_of(*a.cache);
    auto b = build(spec, kCtx);
    fill(*b.cache, 20, 20, 2);
    const auto before = contents(*b.cache);
    const size_t used = b.cache->bytes_used();
    auto unchanged = [&] {
      EXPECT_EQ(b.cache->n_tokens(0), 20);
      EXPECT_EQ(b.cache->bytes_used(), used);
      EXPECT_TRUE(same_bits(contents(*b.cache), before));
    };
    for (size_t cut = 0; cut < s.size(); cut += 97) {
      const Status st = restore(*b.cache, s.substr(0, cut), 100);
      ASSERT_EQ(st.code(), StatusCode::kDataLoss) << cut;
      EXPECT_NE(st.message().find("truncated"), std::string::npos) << st.message();
    }
    unchanged();
    EXPECT_EQ(restore(*b.cache, s + "x", 100).code(), StatusCode::kDataLoss);
    // Another token count than the state holds.
    EXPECT_EQ(restore(*b.cache, s, 99).code(), StatusCode::kDataLoss);
    EXPECT_EQ(restore(*b.cache, s, 101).code(), StatusCode::kDataLoss);
    EXPECT_EQ(restore(*b.cache, s, kCtx + 1).code(), StatusCode::kInvalidArgument);
    // A huge count where the first count sits: refused before allocating.
    std::string huge = s;
    const uint64_t big = uint64_t(1) << 40;
    std::memcpy(huge.data(), &big, 8);
    EXPECT_EQ(restore(*b.cache, huge, 100).code(), StatusCode::kDataLoss);
    unchanged();
  }
}

// Outlier pages are validated: an index out of order or beyond the row, and a row pointer
// beyond the page's capacity, are refused, in each width of OutlierLayout: d_kv 128 (uint8
// indices, uint16 pointers), 512 (uint16, uint16) and 1088 (uint16, uint32).
TEST(KvState, BadOutlierIndicesAreRefused) {
  for (const int kv_heads : {kKvHeads, 8, 17}) {
    const size_t d_kv = size_t(kv_heads) * kHd;
    SCOPED_TRACE("d_kv " + std::to_string(d_kv));
    const int page = PagedRows::kPageTokens;
    const OutlierLayout lay = OutlierLayout::for_rows(kv_heads, kHd, page);
    EXPECT_EQ(lay.idx_bytes, d_kv <= 256 ? 1 : 2);
    EXPECT_EQ(lay.ptr_bytes, d_kv <= 1023 ? 2 : 4);
    auto a = build("kvquant-3:sinks=0", kCtx, nullptr, kv_heads);
    // Two tokens whose channels 0 and 1 are far beyond the key thresholds: outliers.
    std::vector<float> x(2 * d_kv, 0.5f);
    x[0] = x[1] = x[d_kv] = 50.f;
    for (int il = 0; il < kLayers; ++il) ASSERT_TRUE(a.cache->append(il, 2, x.data(), x.data()).ok());
    const std::string s = state_of(*a.cache);
    auto b = build("kvquant-3:sinks=0", kCtx, nullptr, kv_heads);
    const size_t empty = b.cache->bytes_used();
    ASSERT_TRUE(restore(*b.cache, s, 2).ok());
    b.cache->clear();
    // Keys of layer 0: the sink count (no pages), the row count and one page of rows, then the
    // outlier block [cap][row_ptr x 65][val x cap][idx x cap].
    const size_t block = 8 + 8 + size_t(page) * (d_kv * 3 / 8);
    const auto* blk = reinterpret_cast<const uint8_t*>(s.data() + block);
    const uint32_t cap = OutlierLayout::cap_of(blk);
    const size_t idx0 = block + lay.idx_offset(page, cap);
    ASSERT_GE(lay.ptr_at(blk, 1), 2u);  // row 0's outliers: channels 0 and 1
    ASSERT_EQ(lay.idx_at(blk, page, cap, 0), 0u);
    ASSERT_EQ(lay.idx_at(blk, page, cap, 1), 1u);
    std::string bad = s;
    const uint16_t beyond = uint16_t(d_kv);
    if (lay.idx_bytes == 1) {
      bad[idx0] = char(d_kv <= 255 ? d_kv : 255);  // 128: one past the row; never 256 here
    } else {
      std::memcpy(bad.data() + idx0, &beyond, 2);
    }
    Status st = restore(*b.cache, bad, 2);
    EXPECT_EQ(st.code(), StatusCode::kDataLoss);
    EXPECT_NE(st.message().find("outlier"), std::string::npos) << st.message();
    bad = s;
    for (size_t j = 0; j < lay.idx_bytes; ++j) std::swap(bad[idx0 + j], bad[idx0 + lay.idx_bytes + j]);
    EXPECT_EQ(restore(*b.cache, bad, 2).code(), StatusCode::kDataLoss);
    // A row pointer beyond the page's capacity, as large as its width holds.
    bad = s;
    // It is refused before any of the row's entries is read: the last pointer is in range, and
    // the entries past the page's capacity were read before the fix (session_fuzz found it).
    lay.set_ptr(reinterpret_cast<uint8_t*>(bad.data() + block), 1, lay.ptr_bytes == 2 ? 0xffffu : 1u << 30);
    st = restore(*b.cache, bad, 2);
    EXPECT_EQ(st.code(), StatusCode::kDataLoss);
    EXPECT_NE(st.message().find("points past"), std::string::npos) << st.message();
    // A capacity beyond what the page's rows hold (its pointers could not carry it).
    bad = s;
    const uint32_t huge = uint32_t(OutlierLayout::max_cap(d_kv, page) + 1);
    std::memcpy(bad.data() + block, &huge, 4);
    st = restore(*b.cache, bad, 2);
    EXPECT_EQ(st.code(), StatusCode::kDataLoss);
    EXPECT_NE(st.message().find("claims room"), std::string::npos) << st.message();
    EXPECT_EQ(b.cache->n_tokens(0), 0);
    EXPECT_EQ(b.cache->bytes_used(), empty);
  }
}

// Sealed outlier pages (a full page: CSR by KV head, quant/outlier_layout.h) are validated
// too: a cell whose channel is beyond the head, whose token slot is beyond the page's rows, or
// out of order, and a head pointer beyond the page's capacity, are refused; the file as
// written restores.
TEST(KvState, BadSealedOutlierPagesAreRefused) {
  const int page = PagedRows::kPageTokens;
  const size_t d_kv = size_t(kKvHeads) * kHd;
  const OutlierLayout lay = OutlierLayout::for_rows(kKvHeads, kHd, page);
  auto a = build("kvquant-3:sinks=0", kCtx);
  // 64 tokens whose channel 0 of head 0 and channel 3 of head 1 are far beyond the key
  // thresholds: outliers in both heads of every token of a full (sealed) page.
  std::vector<float> x(size_t(page) * d_kv, 0.5f);
  for (int t = 0; t < page; ++t) x[size_t(t) * d_kv] = x[size_t(t) * d_kv + kHd + 3] = 50.f;
  for (int il = 0; il < kLayers; ++il) ASSERT_TRUE(a.cache->append(il, page, x.data(), x.data()).ok());
  ASSERT_TRUE(a.cache->end_step().ok());  // seals the full page
  const std::string s = state_of(*a.cache);
  auto b = build("kvquant-3:sinks=0", kCtx);
  const size_t empty = b.cache->bytes_used();
  ASSERT_TRUE(restore(*b.cache, s, page).ok());
  b.cache->clear();
  // Keys of layer 0: the sink count, the row count and one page of rows, then the sealed block
  // [cap | sealed][head_ptr x 3][val x cap][cell x cap].
  const size_t block = 8 + 8 + size_t(page) * (d_kv * 3 / 8);
  const auto* blk = reinterpret_cast<const uint8_t*>(s.data() + block);
  ASSERT_TRUE(OutlierLayout::sealed_of(blk));
  const uint32_t cap = OutlierLayout::cap_of(blk);
  ASSERT_GE(lay.ptr_at(blk, 1), uint32_t(page));  // head 0: channel 0 of every token
  ASSERT_EQ(lay.cell_at(blk, 0), 0u);
  const size_t cell0 = block + lay.sealed_cell_offset(cap);
  auto refused = [&](const std::string& bad, const char* says) {
    const Status st = restore(*b.cache, bad, page);
    EXPECT_EQ(st.code(), StatusCode::kDataLoss) << says;
    EXPECT_NE(st.message().find(says), std::string::npos) << st.message();
  };
  auto with_cell = [&](size_t k, uint16_t c) {
    std::string bad = s;
    std::memcpy(bad.data() + cell0 + 2 * k, &c, 2);
    return bad;
  };
  refused(with_cell(0, uint16_t(kHd)), "out of order or beyond");           // channel 64 of a 64-value head
  refused(with_cell(0, uint16_t(64u << lay.ch_bits)), "out of order or beyond");  // token 64 of 64
  refused(with_cell(1, 0), "out of order or beyond");                      // token 1 repeats token 0's cell
  std::string bad = s;
  lay.set_ptr(reinterpret_cast<uint8_t*>(bad.data() + block), 1, cap + 1);
  refused(bad, "points past");
  EXPECT_EQ(b.cache->n_tokens(0), 0);
  EXPECT_EQ(b.cache->bytes_used(), empty);
}

// A pool that refuses part way through a restore: kOutOfMemory, the cache as it was, and
// every page the restore took handed back.
TEST(KvState, PoolBudgetRefusalChangesNothingAndLeaksNothing) {
  for (const char* spec : {"f16", "kivi-2:g=8:r=16", "kvquant-3", "K=kvquant-2,V=kivi-4"}) {
    SCOPED_TRACE(spec);
    auto a = build(spec, kCtx);
    fill(*a.cache, 150, 50, 5);
    const std::string s = state_of(*a.cache);
    auto probe_pool = std::make_shared<PagePool>();
    auto probe = build(spec, kCtx, probe_pool);
    const size_t fixed = probe_pool->bytes_in_use();
    ASSERT_TRUE(restore(*probe.cache, s, 150).ok());
    const size_t needed = probe_pool->bytes_in_use() - fixed;
    auto ten_pool = std::make_shared<PagePool>();
    auto ten = build(spec, kCtx, ten_pool);
    fill(*ten.cache, 10, 10, 6);
    for (size_t frac : {1, 2, 3}) {
      // Room for the 10 tokens the target holds and a part of what the restore needs.
      auto pool = std::make_shared<PagePool>(ten_pool->bytes_in_use() + needed * frac / 4);
      auto b = build(spec, kCtx, pool);
      fill(*b.cache, 10, 10, 6);
      const auto before = contents(*b.cache);
      const size_t in_use = pool->bytes_in_use();
      const Status st = restore(*b.cache, s, 150);
      EXPECT_EQ(st.code(), StatusCode::kOutOfMemory) << st.to_string();
      EXPECT_EQ(pool->bytes_in_use(), in_use);
      EXPECT_TRUE(same_bits(contents(*b.cache), before));
    }
  }
}

}  // namespace
}  // namespace kvq
