// SPDX-License-Identifier: MIT
// The byte layout of every packed KV-cache record, one struct per scheme with constexpr
// offsets (issue 8 §1). The stores (kv/) write and read their records through them, their
// views point the kernels at the same offsets, and the bits accounting (bits_accounting.cc)
// counts their sizes: one source for all three. The sizes that vary at run time (bits,
// head_dim, group) select a layout; the static_asserts below pin the shapes the models use.
// Records live in pages of kKvPageTokens (kv/paged_rows.h), head-major: a KV head's parts are
// contiguous, per-token data shared by the heads (the extras) follow them.
#pragma once

#include <cstddef>

#include "quant/bitpack.h"
#include "quant/ggml_blocks.h"
#include "quant/normalize.h"
#include "quant/uniform_group.h"

namespace kvq {

// Full precision (f16, f32): a head's part is head_dim values of `bits` bits.
struct DenseRowLayout {
  int bits = 16;
  size_t head_dim = 0;
  constexpr size_t part_bytes() const { return head_dim * size_t(bits) / 8; }
};

// q8_0 / q4_0 (llama.cpp's blocks of 32 along head_dim, quant/ggml_blocks.h): a head's part is
// head_dim / 32 blocks, scale first in each block.
struct GgmlRowLayout {
  int bits = 4;  // 8: q8_0, 4: q4_0
  size_t head_dim = 0;
  constexpr size_t block_bytes() const { return bits == 8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0); }
  constexpr size_t codes_bytes() const { return head_dim / 32 * (block_bytes() - sizeof(f16_t)); }
  constexpr size_t scales_bytes() const { return head_dim / 32 * sizeof(f16_t); }
  constexpr size_t part_bytes() const { return head_dim / 32 * block_bytes(); }
};

// Per-token min-max groups along a row of n values (KIVI values per head, KIVI §3.2; the int-b
// baselines over the whole K/V vector): codes [packed_bytes(bits, n)], then fp16 scales
// [groups], then fp16 zero points [groups]. group 0: the row is one group.
struct UniformRowLayout {
  int bits = 4;
  size_t n = 0;
  int group = 0;
  constexpr size_t groups() const { return uniform_group_count(n, group); }
  constexpr size_t codes_bytes() const { return packed_bytes(bits, n); }
  constexpr size_t scales_offset() const { return codes_bytes(); }
  constexpr size_t zeros_offset() const { return scales_offset() + groups() * sizeof(f16_t); }
  constexpr size_t meta_bytes() const { return 2 * groups() * sizeof(f16_t); }
  constexpr size_t bytes() const { return codes_bytes() + meta_bytes(); }
};

// KIVI keys (KIVI §3.2, per channel): one KV head's block of G tokens is one record,
// codes [G][packed_bytes(bits, head_dim)] (token-major rows, as a fused score reads them), then
// fp16 scales [head_dim], then fp16 zero points [head_dim] (one min-max group per channel).
struct KiviKeyBlockLayout {
  int bits = 2;
  size_t head_dim = 0;
  int group = 32;
  constexpr size_t row_bytes() const { return packed_bytes(bits, head_dim); }
  constexpr size_t codes_bytes() const { return size_t(group) * row_bytes(); }
  constexpr size_t scales_offset() const { return codes_bytes(); }
  constexpr size_t zeros_offset() const { return scales_offset() + head_dim * sizeof(f16_t); }
  constexpr size_t meta_bytes() const { return 2 * head_dim * sizeof(f16_t); }
  constexpr size_t bytes() const { return codes_bytes() + meta_bytes(); }
};

// KVQuant (§3.1-3.3): a head's part is its codebook indices, packed_bytes(bits, head_dim)
// (bits per head with kvquant-mixed); values add one norm per token for the whole vector in
// the extras: NormParams (fp16 zero, fp16 half-range) or NormParams8 (norm=8). Keys' norms are
// per channel and per layer (offline), not per token. Outliers are paged separately
// (quant/outlier_layout.h).
struct CodebookRecordLayout {
  int bits = 3;
  size_t head_dim = 0;
  int norm_bits = 0;  // 0: none (keys), 16: NormParams, 8: NormParams8
  constexpr size_t part_bytes() const { return packed_bytes(bits, head_dim); }
  constexpr size_t norm_bytes() const {
    return norm_bits == 0 ? 0 : norm_bits == 8 ? sizeof(NormParams8) : sizeof(NormParams);
  }
};

static_assert(DenseRowLayout{16, 128}.part_bytes() == 256 && DenseRowLayout{32, 64}.part_bytes() == 256);
static_assert(GgmlRowLayout{4, 128}.part_bytes() == 72 && GgmlRowLayout{8, 128}.part_bytes() == 136);
static_assert(GgmlRowLayout{4, 64}.codes_bytes() + GgmlRowLayout{4, 64}.scales_bytes() == GgmlRowLayout{4, 64}.part_bytes());
static_assert(UniformRowLayout{2, 128, 32}.bytes() == 32 + 4 * 4 && UniformRowLayout{2, 128, 32}.zeros_offset() == 40);
static_assert(UniformRowLayout{4, 4096, 0}.groups() == 1 && UniformRowLayout{4, 4096, 0}.bytes() == 2048 + 4);
static_assert(UniformRowLayout{3, 8, 32}.codes_bytes() == 3 && UniformRowLayout{3, 8, 32}.groups() == 1);
static_assert(KiviKeyBlockLayout{2, 128, 32}.bytes() == 32 * 32 + 4 * 128);
static_assert(KiviKeyBlockLayout{4, 64, 32}.zeros_offset() == 32 * 32 + 128);
static_assert(CodebookRecordLayout{3, 128, 0}.part_bytes() == 48 && CodebookRecordLayout{2, 8, 16}.norm_bytes() == 4);
static_assert(CodebookRecordLayout{4, 64, 8}.norm_bytes() == 2);

}  // namespace kvq
