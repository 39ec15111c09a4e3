// SPDX-License-Identifier: MIT
// Bit packing of b-bit codes (b in {2, 3, 4, 8}) into a continuous little-endian bit stream.
//
// Layout (docs/QUANT_SCHEMES.md §1): code i of a row occupies stream bits [b*i, b*i + b), and
// byte k of the packed row holds stream bits [8k, 8k + 8). So:
//   b = 2: 4 codes per byte, 16 per little-endian uint32 (KIVI's int32 words),
//   b = 4: low nibble first, 8 per uint32 (KIVI and KVQuant deployment words),
//   b = 3: 32 codes in three little-endian uint32 words; codes 10 and 21 straddle words
//          (KVQuant's GPTQ-style stream),
//   b = 8: one byte per code.
// A row of n codes takes packed_bytes(b, n) = ceil(b*n/8) bytes; unused high bits of the last
// byte are written as zero.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/common.h"

namespace kvq {

constexpr size_t packed_bytes(int bits, size_t n) { return (size_t(bits) * n + 7) / 8; }

// Scalar reference (the specification). codes[i] < 2^bits is assumed (higher bits are
// masked off). Writes exactly packed_bytes(bits, n) bytes.
void pack_codes_ref(int bits, const uint8_t* codes, size_t n, uint8_t* packed);
void unpack_codes_ref(int bits, const uint8_t* packed, size_t n, uint8_t* codes);

// Word-at-a-time pack (kSimd) or the reference (kRef); identical output.
void pack_codes(int bits, const uint8_t* codes, size_t n, uint8_t* packed,
                KernelPath path = KernelPath::kSimd);
// Highway unpack (16 codes per step) or the reference; identical output.
void unpack_codes(int bits, const uint8_t* packed, size_t n, uint8_t* codes,
                  KernelPath path = KernelPath::kSimd);

// Checked entry points: bits must be 2, 3, 4 or 8, pointers non-null when n > 0, codes < 2^bits.
Status pack_codes_checked(int bits, const uint8_t* codes, size_t n, uint8_t* packed);
Status unpack_codes_checked(int bits, const uint8_t* packed, size_t n, uint8_t* codes);

// Reads code i of a packed row (for sparse fix-ups and tests).
inline uint32_t code_at(const uint8_t* packed, int bits, size_t i) {
  const size_t bit = size_t(bits) * i;
  uint32_t w = packed[bit >> 3];
  if ((bit & 7) + size_t(bits) > 8) w |= uint32_t(packed[(bit >> 3) + 1]) << 8;
  return (w >> (bit & 7)) & ((1u << bits) - 1u);
}

}  // namespace kvq
