// SPDX-License-Identifier: MIT
#include "tensor/dtype.h"

namespace kvq {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
  }
  return "?";
}

}  // namespace kvq
