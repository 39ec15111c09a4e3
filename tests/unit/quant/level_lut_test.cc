// SPDX-License-Identifier: MIT
// The fused kernels' code lookups (quant/codebook-inl.h LevelLut::at, quant/bitpack-inl.h
// UnpackRowCodes) against the scalar unpack (unpack_codes_ref), on every target this CPU runs:
// every vector of rows of 1-9 chunks at 2, 3 and 4 bits. Each row is a heap buffer of exactly
// its packed bytes, so that a read past the row's end (the 8-byte loads of 3-bit chunks) is an
// ASan error; the levels are distinct floats, so that a code looked up in the wrong entry shows.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "level_lut_test.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/codebook-inl.h"

#ifndef KVQ_LEVEL_LUT_TEST_ONCE
#define KVQ_LEVEL_LUT_TEST_ONCE
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "../every_target.h"
#include "quant/bitpack.h"

namespace kvq {
using testing::TargetChecks;
}  // namespace kvq
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

template <int kBits>
void CheckRows(std::mt19937& g, TargetChecks* out) {
  const DF df;
  constexpr size_t N = hn::MaxLanes(DF());
  HWY_ALIGN float levels[16];
  for (int j = 0; j < 16; ++j) levels[j] = j < (1 << kBits) ? 0.25f * float(j) - 1.0f : 99.0f;
  const LevelLut<kBits> lut(levels);
  for (size_t chunks = 1; chunks <= 9; ++chunks) {
    const size_t n = chunks * kChunk, bytes = packed_bytes(kBits, n);
    std::vector<uint8_t> codes(n), back(n);
    for (auto& x : codes) x = uint8_t(g() % (1u << kBits));
    const std::unique_ptr<uint8_t[]> row(new uint8_t[bytes]);  // exactly the row
    pack_codes_ref(kBits, codes.data(), n, row.get());
    unpack_codes_ref(kBits, row.get(), n, back.data());
    for (size_t c = 0; c < n; c += N) {
      HWY_ALIGN float got[N];
      HWY_ALIGN uint32_t code[N];
      hn::Store(lut.at(row.get(), c, bytes), df, got);
      hn::Store(UnpackRowCodes<kBits>(row.get(), c, bytes), DU(), code);
      for (size_t l = 0; l < N; ++l) {
        out->run += 2;
        out->failed += got[l] != levels[back[c + l]];
        out->failed += code[l] != back[c + l];
      }
    }
  }
}

TargetChecks CheckLevelLut(uint32_t seed) {
  std::mt19937 g(seed);
  TargetChecks c;
  CheckRows<2>(g, &c);
  CheckRows<3>(g, &c);
  CheckRows<4>(g, &c);
  return c;
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {
namespace {
HWY_EXPORT(CheckLevelLut);

TEST(LevelLut, RowLookupsEqualTheScalarUnpackOnEveryTarget) {
  const auto totals =
      testing::expect_every_target_passes(20, [](uint32_t seed) { return HWY_DYNAMIC_DISPATCH(CheckLevelLut)(seed); });
  for (const auto& [target, total] : totals) {
    EXPECT_GT(total.run, 0) << hwy::TargetName(target);
  }
}
}  // namespace
}  // namespace kvq
#endif
