// SPDX-License-Identifier: MIT
#include "engine/weight_types.h"

#include <cstring>

#include "base/fp16.h"
#include "quant/ggml_blocks.h"
#include "quant/weight/iq4_nl.h"
#include "quant/weight/iq4_xs.h"
#include "quant/weight/q2_k.h"
#include "quant/weight/q3_k.h"
#include "quant/weight/q4_1.h"
#include "quant/weight/q4_k.h"
#include "quant/weight/q5_0.h"
#include "quant/weight/q5_1.h"
#include "quant/weight/q5_k.h"
#include "quant/weight/q6_k.h"

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

// ggml's reference quantizers (blocks of 32, K-quant super-blocks of 256), so the bytes match
// what llama-quantize writes for a tensor of that type without an importance matrix.
template <typename Block, void (*kQuantize)(const float*, Block*, int64_t)>
void encode_blocks(const float* x, int64_t n, uint8_t* out) {
  kQuantize(x, reinterpret_cast<Block*>(out), n);
}

// file_type values are llama.cpp's LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0 / MOSTLY_BF16 /
// MOSTLY_Q4_0 / MOSTLY_Q4_1 / MOSTLY_Q5_0 / MOSTLY_Q5_1 / MOSTLY_Q2_K / MOSTLY_Q3_K_S /
// MOSTLY_Q4_K_S / MOSTLY_Q5_K_S / MOSTLY_Q6_K / MOSTLY_IQ4_NL / MOSTLY_IQ4_XS. A file with every
// matrix of one K type has no _M mix (those keep some tensors at a higher type): the _S ftype
// is the one whose tensors are of that type.
constexpr WeightType kTypes[] = {
    {"f32", GgmlType::kF32, 0, encode_f32},
    {"f16", GgmlType::kF16, 1, encode_f16},
    {"bf16", GgmlType::kBF16, 32, encode_bf16},
    {"q8_0", GgmlType::kQ8_0, 7, encode_blocks<BlockQ8_0, quantize_row_q8_0_ref>},
    {"q4_0", GgmlType::kQ4_0, 2, encode_blocks<BlockQ4_0, quantize_row_q4_0_ref>},
    {"q4_1", GgmlType::kQ4_1, 3, encode_blocks<BlockQ4_1, quantize_row_q4_1_ref>},
    {"q5_0", GgmlType::kQ5_0, 8, encode_blocks<BlockQ5_0, quantize_row_q5_0_ref>},
    {"q5_1", GgmlType::kQ5_1, 9, encode_blocks<BlockQ5_1, quantize_row_q5_1_ref>},
    {"q2_k", GgmlType::kQ2_K, 10, encode_blocks<BlockQ2_K, quantize_row_q2_k_ref>},
    {"q3_k", GgmlType::kQ3_K, 11, encode_blocks<BlockQ3_K, quantize_row_q3_k_ref>},
    {"q4_k", GgmlType::kQ4_K, 14, encode_blocks<BlockQ4_K, quantize_row_q4_k_ref>},
    {"q5_k", GgmlType::kQ5_K, 16, encode_blocks<BlockQ5_K, quantize_row_q5_k_ref>},
    {"q6_k", GgmlType::kQ6_K, 18, encode_blocks<BlockQ6_K, quantize_row_q6_k_ref>},
    {"iq4_nl", GgmlType::kIQ4_NL, 25, encode_blocks<BlockIQ4_NL, quantize_row_iq4_nl_ref>},
    {"iq4_xs", GgmlType::kIQ4_XS, 30, encode_blocks<BlockIQ4_XS, quantize_row_iq4_xs_ref>},
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
