// SPDX-License-Identifier: MIT
#include "model/weight_format.h"

#include <cmath>
#include <cstring>

#include "base/fp16.h"
#include "kernels/cpu/ops.h"
#include "quant/activation_round.h"
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
#include "quant/weight/q8_k.h"
#include "quant/weight/vec_dot.h"

namespace kvq {

namespace {

void f32_row(const uint8_t* s, float* d, int64_t n) { std::memcpy(d, s, size_t(n) * 4); }

void f16_row_ref(const uint8_t* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    f16_t h;
    std::memcpy(&h, s + 2 * i, 2);
    d[i] = f16_to_f32(h);
  }
}
// The rows that follow are prefetched 8 KiB ahead as a row is converted: a decode step reads an
// F16 or BF16 matrix from memory row after row, and the hardware prefetcher alone reached ~60%
// of the read bandwidth on the project's Zen 4 VM (7B-shaped F16 model: 27.5 -> 31.4-33.9 tok/s
// with it).
constexpr size_t kF16RowPrefetchBytes = 8192;
void f16_row_simd(const uint8_t* s, float* d, int64_t n) {
  cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(s), d, size_t(n), kF16RowPrefetchBytes);
}

void bf16_row(const uint8_t* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    bf16_t h;
    std::memcpy(&h, s + 2 * i, 2);
    d[i] = bf16_to_f32(h);
  }
}
void bf16_row_simd(const uint8_t* s, float* d, int64_t n) {
  cpu::convert_bf16_to_f32(reinterpret_cast<const bf16_t*>(s), d, size_t(n), kF16RowPrefetchBytes);
}

// Adapts a typed row dequantizer (Block*, float*, k) to DequantizeRowFn.
template <typename Block, void (*kFn)(const Block*, float*, int64_t)>
void typed(const uint8_t* s, float* d, int64_t n) {
  kFn(reinterpret_cast<const Block*>(s), d, n);
}

template <typename Block, void (*kFn)(const Block*, float*, int64_t, KernelPath)>
void typed_simd(const uint8_t* s, float* d, int64_t n) {
  kFn(reinterpret_cast<const Block*>(s), d, n, KernelPath::kSimd);
}

void round_q8_0(const float* x, float* y, int64_t n) { round_row_q8_0(x, y, n); }
void round_q8_k(const float* x, float* y, int64_t n) { round_row_q8_k(x, y, n); }

bool quantize_q8_0(const float* x, uint8_t* blocks, int64_t n) {
  return quantize_row_q8_0(x, reinterpret_cast<BlockQ8_0*>(blocks), n).ok();  // checks finiteness
}

bool quantize_q8_k(const float* x, uint8_t* blocks, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  quantize_row_q8_k(x, reinterpret_cast<BlockQ8_K*>(blocks), n);
  return true;
}

struct ActivationFormat {
  RoundActivationsFn round;
  int block, block_bytes;
  QuantizeActivationsFn quantize;
};
constexpr ActivationFormat kQ8_0Act{round_q8_0, kQK8_0, int(sizeof(BlockQ8_0)), quantize_q8_0};
constexpr ActivationFormat kQ8_KAct{round_q8_k, kQK_K, int(sizeof(BlockQ8_K)), quantize_q8_k};

template <typename Block, typename ActBlock, float (*kFn)(const Block*, const ActBlock*, int64_t, KernelPath)>
float vec_dot(const uint8_t* w, const uint8_t* a, int64_t n, KernelPath path) {
  return kFn(reinterpret_cast<const Block*>(w), reinterpret_cast<const ActBlock*>(a), n, path);
}

// A type without a multi-row kernel: one vec_dot per row (never instantiated as called
// without one: the table leaves vec_dot_rows null then).
template <VecDotFn kDot>
void rows_one_by_one(const uint8_t* w, size_t row_bytes, int n_rows, const uint8_t* a, int64_t n, float* y,
                     KernelPath path) {
  if constexpr (kDot != nullptr) {
    for (int r = 0; r < n_rows; ++r) y[r] = kDot(w + size_t(r) * row_bytes, a, n, path);
  }
}

template <typename Block, typename ActBlock,
          void (*kFn)(const Block*, size_t, int, const ActBlock*, int64_t, float*, KernelPath)>
void vec_dot_rows(const uint8_t* w, size_t row_bytes, int n_rows, const uint8_t* a, int64_t n, float* y,
                  KernelPath path) {
  kFn(reinterpret_cast<const Block*>(w), row_bytes / sizeof(Block), n_rows, reinterpret_cast<const ActBlock*>(a), n, y,
      path);
}

// A type's entry from its reference and its KernelPath-dispatched dequantizer.
template <typename Block, void (*kRef)(const Block*, float*, int64_t),
          void (*kFn)(const Block*, float*, int64_t, KernelPath), VecDotFn kDot = nullptr,
          VecDotRowsFn kDotRows = kDot ? rows_one_by_one<kDot> : nullptr>
constexpr WeightFormat blocks(GgmlType t, ActivationFormat act) {
  return {t,           typed<Block, kRef>, typed_simd<Block, kFn>, act.round, act.block, act.block_bytes,
          act.quantize, kDot,              kDotRows};
}

constexpr WeightFormat kFormats[] = {
    {GgmlType::kF32, f32_row, f32_row, nullptr, 1, 0, nullptr, nullptr, nullptr},
    {GgmlType::kF16, f16_row_ref, f16_row_simd, nullptr, 1, 0, nullptr, nullptr, nullptr},
    {GgmlType::kBF16, bf16_row, bf16_row_simd, nullptr, 1, 0, nullptr, nullptr, nullptr},
    blocks<BlockQ8_0, dequantize_row_q8_0_ref, dequantize_row_q8_0, vec_dot<BlockQ8_0, BlockQ8_0, vec_dot_q8_0_q8_0>>(
        GgmlType::kQ8_0, kQ8_0Act),
    blocks<BlockQ4_0, dequantize_row_q4_0_ref, dequantize_row_q4_0, vec_dot<BlockQ4_0, BlockQ8_0, vec_dot_q4_0_q8_0>>(
        GgmlType::kQ4_0, kQ8_0Act),
    blocks<BlockQ4_1, dequantize_row_q4_1_ref, dequantize_row_q4_1, vec_dot<BlockQ4_1, BlockQ8_0, vec_dot_q4_1_q8_0>>(
        GgmlType::kQ4_1, kQ8_0Act),
    blocks<BlockQ5_0, dequantize_row_q5_0_ref, dequantize_row_q5_0, vec_dot<BlockQ5_0, BlockQ8_0, vec_dot_q5_0_q8_0>>(
        GgmlType::kQ5_0, kQ8_0Act),
    blocks<BlockQ5_1, dequantize_row_q5_1_ref, dequantize_row_q5_1, vec_dot<BlockQ5_1, BlockQ8_0, vec_dot_q5_1_q8_0>>(
        GgmlType::kQ5_1, kQ8_0Act),
    blocks<BlockQ2_K, dequantize_row_q2_k_ref, dequantize_row_q2_k, vec_dot<BlockQ2_K, BlockQ8_K, vec_dot_q2_k_q8_k>>(
        GgmlType::kQ2_K, kQ8_KAct),
    blocks<BlockQ3_K, dequantize_row_q3_k_ref, dequantize_row_q3_k, vec_dot<BlockQ3_K, BlockQ8_K, vec_dot_q3_k_q8_k>>(
        GgmlType::kQ3_K, kQ8_KAct),
    blocks<BlockQ4_K, dequantize_row_q4_k_ref, dequantize_row_q4_k, vec_dot<BlockQ4_K, BlockQ8_K, vec_dot_q4_k_q8_k>,
           vec_dot_rows<BlockQ4_K, BlockQ8_K, vec_dot_q4_k_q8_k_rows>>(GgmlType::kQ4_K, kQ8_KAct),
    blocks<BlockQ5_K, dequantize_row_q5_k_ref, dequantize_row_q5_k, vec_dot<BlockQ5_K, BlockQ8_K, vec_dot_q5_k_q8_k>>(
        GgmlType::kQ5_K, kQ8_KAct),
    blocks<BlockQ6_K, dequantize_row_q6_k_ref, dequantize_row_q6_k, vec_dot<BlockQ6_K, BlockQ8_K, vec_dot_q6_k_q8_k>>(
        GgmlType::kQ6_K, kQ8_KAct),
    blocks<BlockIQ4_NL, dequantize_row_iq4_nl_ref, dequantize_row_iq4_nl,
           vec_dot<BlockIQ4_NL, BlockQ8_0, vec_dot_iq4_nl_q8_0>>(GgmlType::kIQ4_NL, kQ8_0Act),
    blocks<BlockIQ4_XS, dequantize_row_iq4_xs_ref, dequantize_row_iq4_xs,
           vec_dot<BlockIQ4_XS, BlockQ8_K, vec_dot_iq4_xs_q8_k>>(GgmlType::kIQ4_XS, kQ8_KAct),
};

}  // namespace

const WeightFormat* find_weight_format(uint32_t type) {
  for (const auto& f : kFormats) {
    if (uint32_t(f.type) == type) return &f;
  }
  return nullptr;
}

std::string weight_format_names() {
  std::string s;
  for (const auto& f : kFormats) s += (s.empty() ? "" : ", ") + ggml_type_name(uint32_t(f.type));
  return s;
}

}  // namespace kvq
