// SPDX-License-Identifier: MIT
#include "engine/weight_types.h"

#include <cstring>

#include "base/fp16.h"
#include "quant/ggml_blocks.h"

namespace kvq {

namespace {

void encode_f32(const float* x, int64_t n, uint8_t* out) { std::memcpy(out, x, size_t(n) * 4); }

void encode_f16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const f16_t h = f32_to_f16(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void encode_bf16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const bf16_t h = f32_to_bf16(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

// ggml's reference quantizer, so the bytes match what llama-quantize would write.
void encode_q8_0(const float* x, int64_t n, uint8_t* out) {
  quantize_row_q8_0_ref(x, reinterpret_cast<BlockQ8_0*>(out), n);
}

// file_type values are llama.cpp's LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0 / MOSTLY_BF16.
constexpr WeightType kTypes[] = {
    {"f32", GgmlType::kF32, 0, encode_f32},
    {"f16", GgmlType::kF16, 1, encode_f16},
    {"bf16", GgmlType::kBF16, 32, encode_bf16},
    {"q8_0", GgmlType::kQ8_0, 7, encode_q8_0},
};

}  // namespace

std::span<const WeightType> weight_types() { return kTypes; }

std::string weight_type_names() {
  std::string s;
  for (const auto& t : kTypes) s += (s.empty() ? "" : ", ") + std::string(t.name);
  return s;
}

StatusOr<const WeightType*> find_weight_type(std::string_view name) {
  for (const auto& t : kTypes) {
    if (name == t.name) return &t;
  }
  return invalid_argument("unknown weight type '" + std::string(name) + "' (known: " + weight_type_names() + ")");
}

}  // namespace kvq
