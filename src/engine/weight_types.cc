// SPDX-License-Identifier: MIT
#include "engine/weight_types.h"

#include <cstring>

#include "base/fp16.h"
#include "quant/ggml_blocks.h"
#include "quant/weight/q4_1.h"
#include "quant/weight/q5_0.h"
#include "quant/weight/q5_1.h"

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

// ggml's reference quantizers for blocks of 32, so the bytes match what llama-quantize writes
// (without an importance matrix).
template <typename Block, void (*kQuantize)(const float*, Block*, int64_t)>
void encode_blocks(const float* x, int64_t n, uint8_t* out) {
  kQuantize(x, reinterpret_cast<Block*>(out), n);
}

// file_type values are llama.cpp's LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0 / MOSTLY_BF16 /
// MOSTLY_Q4_0 / MOSTLY_Q4_1 / MOSTLY_Q5_0 / MOSTLY_Q5_1.
constexpr WeightType kTypes[] = {
    {"f32", GgmlType::kF32, 0, encode_f32},
    {"f16", GgmlType::kF16, 1, encode_f16},
    {"bf16", GgmlType::kBF16, 32, encode_bf16},
    {"q8_0", GgmlType::kQ8_0, 7, encode_blocks<BlockQ8_0, quantize_row_q8_0_ref>},
    {"q4_0", GgmlType::kQ4_0, 2, encode_blocks<BlockQ4_0, quantize_row_q4_0_ref>},
    {"q4_1", GgmlType::kQ4_1, 3, encode_blocks<BlockQ4_1, quantize_row_q4_1_ref>},
    {"q5_0", GgmlType::kQ5_0, 8, encode_blocks<BlockQ5_0, quantize_row_q5_0_ref>},
    {"q5_1", GgmlType::kQ5_1, 9, encode_blocks<BlockQ5_1, quantize_row_q5_1_ref>},
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
