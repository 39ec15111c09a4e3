// SPDX-License-Identifier: MIT
// Bit packing: scalar reference, word-at-a-time pack and Highway unpack (bitpack.h layout).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/bitpack.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/bitpack-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void UnpackCodesSimd(int bits, const uint8_t* packed, size_t n, uint8_t* codes) {
  UnpackRowBits(bits, packed, n, codes);
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <cstring>

#include "base/check.h"
#include "quant/bitpack.h"

namespace kvq {

HWY_EXPORT(UnpackCodesSimd);

void pack_codes_ref(int bits, const uint8_t* codes, size_t n, uint8_t* packed) {
  std::memset(packed, 0, packed_bytes(bits, n));
  const uint32_t mask = (1u << bits) - 1u;
  for (size_t i = 0; i < n; ++i) {
    const size_t bit = size_t(bits) * i;
    const uint32_t v = (codes[i] & mask) << (bit & 7);
    packed[bit >> 3] |= uint8_t(v);
    if ((bit & 7) + size_t(bits) > 8) packed[(bit >> 3) + 1] |= uint8_t(v >> 8);
  }
}

void unpack_codes_ref(int bits, const uint8_t* packed, size_t n, uint8_t* codes) {
  for (size_t i = 0; i < n; ++i) codes[i] = uint8_t(code_at(packed, bits, i));
}

namespace {
template <int kBits>
void pack_row(const uint8_t* codes, size_t n, uint8_t* packed) {
  const size_t n_chunks = n / 16;
  for (size_t c = 0; c < n_chunks; ++c) {
    uint64_t acc = 0;
    for (int i = 0; i < 16; ++i) acc |= uint64_t(codes[c * 16 + i] & ((1u << kBits) - 1u)) << (kBits * i);
    std::memcpy(packed + c * 2 * kBits, &acc, 2 * kBits);
  }
  const size_t done = n_chunks * 16;
  pack_codes_ref(kBits, codes + done, n - done, packed + done * kBits / 8);
}
}  // namespace

void pack_codes(int bits, const uint8_t* codes, size_t n, uint8_t* packed, KernelPath path) {
  KVQ_DCHECK(is_packable_bits(bits));
  if (path == KernelPath::kRef) return pack_codes_ref(bits, codes, n, packed);
  switch (bits) {
    case 2: return pack_row<2>(codes, n, packed);
    case 3: return pack_row<3>(codes, n, packed);
    case 4: return pack_row<4>(codes, n, packed);
    default:
      for (size_t i = 0; i < n; ++i) packed[i] = codes[i];
  }
}

void unpack_codes(int bits, const uint8_t* packed, size_t n, uint8_t* codes, KernelPath path) {
  KVQ_DCHECK(is_packable_bits(bits));
  if (path == KernelPath::kRef) return unpack_codes_ref(bits, packed, n, codes);
  HWY_DYNAMIC_DISPATCH(UnpackCodesSimd)(bits, packed, n, codes);
}

Status pack_codes_checked(int bits, const uint8_t* codes, size_t n, uint8_t* packed) {
  if (!is_packable_bits(bits)) return invalid_argument("bits must be 2, 3, 4 or 8");
  if (n > 0 && (!codes || !packed)) return invalid_argument("null pointer");
  for (size_t i = 0; i < n; ++i) {
    if (bits < 8 && codes[i] >> bits) {
      return invalid_argument("code " + std::to_string(codes[i]) + " at index " +
                              std::to_string(i) + " does not fit in " + std::to_string(bits) +
                              " bits");
    }
  }
  pack_codes(bits, codes, n, packed);
  return ok_status();
}

Status unpack_codes_checked(int bits, const uint8_t* packed, size_t n, uint8_t* codes) {
  if (!is_packable_bits(bits)) return invalid_argument("bits must be 2, 3, 4 or 8");
  if (n > 0 && (!codes || !packed)) return invalid_argument("null pointer");
  unpack_codes(bits, packed, n, codes);
  return ok_status();
}

}  // namespace kvq
#endif  // HWY_ONCE
