// SPDX-License-Identifier: MIT
// Owning, 64-byte aligned, zero-initialised array of trivially copyable T.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

namespace kvq {

template <typename T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  static constexpr size_t kAlign = 64;
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { resize(n); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept { *this = std::move(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~AlignedBuffer() { std::free(p_); }

  // Returns false if the allocation failed (the buffer is then empty).
  bool resize(size_t n) {
    std::free(p_);
    p_ = nullptr;
    n_ = 0;
    if (n == 0) return true;
    if (n > (SIZE_MAX - kAlign) / sizeof(T)) return false;
    const size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    p_ = static_cast<T*>(std::aligned_alloc(kAlign, bytes));
    if (!p_) return false;
    std::memset(static_cast<void*>(p_), 0, bytes);
    n_ = n;
    return true;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }
  std::span<T> span() { return {p_, n_}; }
  std::span<const T> span() const { return {p_, n_}; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace kvq
