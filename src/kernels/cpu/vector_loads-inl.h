// SPDX-License-Identifier: MIT
// Vectors of f32, f16 or bf16 values loaded as f32: whole ones, and the last, partial one of an
// array (lanes [0, n) from p, zeros after them, never reading past p + n). Highway 1.0.3's
// MaskedLoad is that only where the CPU has masked loads (AVX-512, and AVX2 for 4- and 8-byte
// lanes); on SSE4 and the emulated targets it is a whole *aligned* load, which faults on an
// unaligned p (and reads past the end), and 16-bit lanes have no masked load on every target,
// so their partial vector goes through a zero-padded buffer. Per-target include guard, as
// Highway requires.
#if defined(KVQ_KERNELS_VECTOR_LOADS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_VECTOR_LOADS_INL_H_
#undef KVQ_KERNELS_VECTOR_LOADS_INL_H_
#else
#define KVQ_KERNELS_VECTOR_LOADS_INL_H_
#endif

#include <cstddef>
#include <cstdint>

#include "base/fp16.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// bf16 values: told apart from f16's by this type (f16_t and bf16_t are both 16-bit words).
struct Bf16 {
  bf16_t bits;
};

// Lanes(d) values from p as f32 (exact): f32, f16, or bf16 (a float's upper 16 bits, widened
// and shifted up).
template <class D>
HWY_INLINE hn::Vec<D> LoadWhole(D d, const float* HWY_RESTRICT p) {
  return hn::LoadU(d, p);
}
template <class D>
HWY_INLINE hn::Vec<D> LoadWhole(D d, const f16_t* HWY_RESTRICT p) {
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<hwy::float16_t, D>(), reinterpret_cast<const hwy::float16_t*>(p)));
}
template <class D>
HWY_INLINE hn::Vec<D> LoadWhole(D d, const Bf16* HWY_RESTRICT p) {
  const hn::RebindToUnsigned<D> du;
  const auto h = hn::LoadU(hn::Rebind<uint16_t, D>(), reinterpret_cast<const uint16_t*>(p));
  return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, h)));
}

// n < Lanes(d) values from p as f32, zeros after them.
template <class D>
HWY_INLINE hn::Vec<D> LoadPartial(D d, const float* HWY_RESTRICT p, size_t n) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  return hn::MaskedLoad(hn::FirstN(d, n), d, p);
#else
  HWY_ALIGN float buf[hn::MaxLanes(d)] = {};
  for (size_t k = 0; k < n; ++k) buf[k] = p[k];
  return hn::Load(d, buf);
#endif
}
template <class D, typename T>  // T: f16_t or Bf16
HWY_INLINE hn::Vec<D> LoadPartial(D d, const T* HWY_RESTRICT p, size_t n) {
  static_assert(sizeof(T) == 2);
  HWY_ALIGN T buf[hn::MaxLanes(d)] = {};
  for (size_t k = 0; k < n; ++k) buf[k] = p[k];
  return LoadWhole(d, static_cast<const T*>(buf));
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_VECTOR_LOADS_INL_H_
