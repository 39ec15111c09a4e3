// SPDX-License-Identifier: MIT
// The last, partial vector of an array: lanes [0, n) from p, zeros after them, never reading
// past p + n. Highway 1.0.3's MaskedLoad is that only where the CPU has masked loads (AVX-512,
// and AVX2 for 4- and 8-byte lanes); on SSE4 and the emulated targets it is a whole *aligned*
// load, which faults on an unaligned p (and reads past the end). Per-target include guard, as
// Highway requires.
#if defined(KVQ_KERNELS_LOAD_PARTIAL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_LOAD_PARTIAL_INL_H_
#undef KVQ_KERNELS_LOAD_PARTIAL_INL_H_
#else
#define KVQ_KERNELS_LOAD_PARTIAL_INL_H_
#endif

#include <cstddef>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// n < Lanes(d) float lanes from p.
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

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_LOAD_PARTIAL_INL_H_
