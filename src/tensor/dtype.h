// SPDX-License-Identifier: MIT
// Element types of dense tensors and of the dense KV caches.
#pragma once

#include <cstddef>
#include <string_view>

namespace kvq {

enum class DType { kF32, kF16, kBF16 };

constexpr size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : 2; }
std::string_view dtype_name(DType t);

}  // namespace kvq
