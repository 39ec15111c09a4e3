// SPDX-License-Identifier: MIT
#include "quant/bitpack.h"

#include <gtest/gtest.h>

#include <vector>

#include "base/rng.h"
#include "test_util.h"

namespace kvq {
namespace {

// Layout examples from the papers' kernels (bitpack.h): KIVI 2/4-bit words, KVQuant 3-bit.
TEST(Bitpack, KnownLayouts) {
  std::vector<uint8_t> c(32), p(12);
  for (int i = 0; i < 16; ++i) c[i] = uint8_t(i & 3);
  pack_codes_ref(2, c.data(), 16, p.data());
  uint32_t w;
  std::memcpy(&w, p.data(), 4);
  for (int i = 0; i < 16; ++i) EXPECT_EQ((w >> (2 * i)) & 3u, uint32_t(i & 3));
  for (int i = 0; i < 8; ++i) c[i] = uint8_t(15 - i);
  pack_codes_ref(4, c.data(), 8, p.data());
  std::memcpy(&w, p.data(), 4);
  for (int i = 0; i < 8; ++i) EXPECT_EQ((w >> (4 * i)) & 15u, uint32_t(15 - i));
  // 3-bit: 32 codes in three little-endian words; codes 10 and 21 straddle the words.
  for (int i = 0; i < 32; ++i) c[i] = uint8_t((i * 5) & 7);
  pack_codes_ref(3, c.data(), 32, p.data());
  uint32_t words[3];
  std::memcpy(words, p.data(), 12);
  const uint64_t lo = words[0] | uint64_t(words[1]) << 32;
  for (int i = 0; i < 21; ++i) EXPECT_EQ((lo >> (3 * i)) & 7u, uint64_t(c[i])) << i;
  EXPECT_EQ(((words[0] >> 30) | (words[1] << 2)) & 7u, c[10]);
  EXPECT_EQ(((words[1] >> 31) | (words[2] << 1)) & 7u, c[21]);
  EXPECT_EQ(packed_bytes(3, 32), 12u);
  EXPECT_EQ(packed_bytes(3, 33), 13u);
  EXPECT_EQ(packed_bytes(2, 1), 1u);
}

// Exhaustive: every byte pattern (2/4-bit: all codes of a byte) and every 24-bit pattern of
// eight 3-bit codes round-trip through unpack -> pack, on every path.
TEST(Bitpack, ExhaustiveSmallPatterns) {
  for (int bits : {2, 4, 8}) {
    const size_t n = 8 / bits;
    for (int b = 0; b < 256; ++b) {
      uint8_t byte = uint8_t(b), codes[8], back = 0;
      unpack_codes_ref(bits, &byte, n, codes);
      pack_codes_ref(bits, codes, n, &back);
      ASSERT_EQ(back, byte);
    }
  }
  uint8_t codes[8], back[3];
  for (uint32_t v = 0; v < (1u << 24); ++v) {
    const uint8_t in[3] = {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16)};
    unpack_codes_ref(3, in, 8, codes);
    for (int i = 0; i < 8; ++i) ASSERT_EQ(codes[i], (v >> (3 * i)) & 7u);
    pack_codes(3, codes, 8, back);
    ASSERT_TRUE(back[0] == in[0] && back[1] == in[1] && back[2] == in[2]) << v;
  }
}

// Every code value at every position of a 96-bit period, over all lengths up to 100, with
// random background codes: SIMD and word paths equal the reference on every target.
TEST(Bitpack, AllPositionsAllLengthsAllTargets) {
  test::for_each_target([] {
    Rng rng(7);
    for (int bits : {2, 3, 4, 8}) {
      for (size_t n = 1; n <= 100; ++n) {
        std::vector<uint8_t> c(n), p_ref(packed_bytes(bits, n)), p(p_ref.size()), u(n);
        for (auto& v : c) v = uint8_t(rng.below(1u << bits));
        for (size_t pos = 0; pos < std::min<size_t>(n, 32); ++pos) {
          for (uint32_t val = 0; val < (1u << std::min(bits, 3)); ++val) {
            c[pos] = uint8_t(val << (bits - std::min(bits, 3)));
            pack_codes_ref(bits, c.data(), n, p_ref.data());
            pack_codes(bits, c.data(), n, p.data());
            ASSERT_EQ(p, p_ref) << "bits " << bits << " n " << n;
            unpack_codes(bits, p.data(), n, u.data());
            ASSERT_EQ(u, c) << "bits " << bits << " n " << n;
          }
        }
      }
    }
  });
}

TEST(Bitpack, CheckedApiRejectsBadInput) {
  uint8_t c[4] = {0, 1, 4, 2}, p[4];
  EXPECT_FALSE(pack_codes_checked(5, c, 4, p).ok());
  EXPECT_FALSE(pack_codes_checked(2, c, 4, p).ok());  // 4 does not fit in 2 bits
  EXPECT_TRUE(pack_codes_checked(3, c, 4, p).ok());
  EXPECT_FALSE(unpack_codes_checked(2, nullptr, 4, c).ok());
}

}  // namespace
}  // namespace kvq
