// SPDX-License-Identifier: MIT
// Bits accounting: the exact storage a KV-cache configuration costs for n tokens, broken down
// by component, and the resulting bits per value. Every report in the project uses it.
//
// Counts what the quant/ formats store (docs/QUANT_SCHEMES.md §9):
//   codes: packed rows (bitpack.h; a row is one head for uniform formats, the whole d_kv
//          vector for codebook formats), fp16 scales / zero points per group or vector,
//   codebook formats: per-layer fp16 zero + half-range per channel (keys, offline), fp32
//          codebook, optional Q-Norm (2 floats), per-token NormParams (values, online; 2
//          bytes as NormParams8 with norm=8),
//   outliers: the cache's page layout (quant/outlier_layout.h, kv/paged_outliers.h): fp16
//          value + index per outlier (uint8 when d_kv <= 256, else uint16: the paper's App M
//          counts uint16), a page-local row pointer per token (uint16 when a page of
//          kKvPageTokens rows of d_kv values fits in it, else uint32), and per page its
//          uint32 capacity and one more pointer,
//   fp16 windows: KIVI's ring of recent tokens as allocated (kivi_window_rows: keys flushed in
//          blocks of R, values sliding) and the attention-sink tokens (first n_sink tokens of K
//          and V in fp16).
// Capacity, not size: per-token records (codes, per-token scales and norms) are counted for
// every slot of the pages begun (kKvPageTokens each), as the stores allocate them; KIVI's key
// groups are whole records already; outliers are counted per token stored.
// A Hadamard rotation (`rot=1`, kv/rotated_store.h) stores nothing: its sign diagonal comes
// from a fixed seed, so a rotated cache costs exactly the bits of its plain counterpart.
// Key outliers with offline thresholds are data dependent: the expected count is fraction * d_kv
// per token unless a measured average is given.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quant/common.h"

namespace kvq {

// Tokens per page of every paged KV store (kv/paged_rows.h).
inline constexpr int kKvPageTokens = 64;

// Rows of KIVI's fp16 window ring: keys hold up to R tokens before a flush (G with no window),
// values R plus the step's token.
inline int kivi_window_rows(bool keys, int residual, int group_size) {
  return keys ? (residual > group_size ? residual : group_size) : residual + 1;
}

// Rows of KVQuant's fp16 window ring (the spec's r=N): R plus the step's token, as KIVI's values
// (it slides one token at a time); 0 without a window.
inline int kvquant_window_rows(int residual) { return residual > 0 ? residual + 1 : 0; }

// kF16: full precision, 16 or 32 bits.
enum class KvScheme { kF16, kUniform, kNuq, kNf, kQ8_0, kQ4_0 };

struct TensorQuantConfig {
  KvScheme scheme = KvScheme::kF16;
  int bits = 16;
  // kUniform (asymmetric, quant/kv_layout.h): values per group (0 = whole row), per_channel
  // (groups of group_size tokens of one channel: KIVI keys) and whole_vector (a token's row is
  // its whole d_kv vector rather than one head: the int-b per-token baselines).
  int group_size = 32;
  bool per_channel = false;
  bool whole_vector = false;
  // kNuq / kNf: per_channel = offline per-channel thresholds (keys), else per-token (values).
  double outlier_fraction = 0.0;  // dense-and-sparse (0 = off)
  bool qnorm = false;
  // kNuq / kNf per token (values): the norm in 8 + 8 bits (NormParams8, the spec's norm=8)
  // instead of fp16 zero + half-range.
  bool norm8 = false;
  // fp16 residual window of the most recent tokens (KIVI R); flush_in_blocks: the window is
  // quantized R tokens at a time (KIVI keys), else it slides one token at a time (values).
  int residual = 0;
  bool flush_in_blocks = false;
  // Rows of the fp16 window ring allocated once a token is held (kivi_window_rows; 0: none).
  int window_rows = 0;
  // kNuq / kNf with per-layer widths (kvquant-mixed): one bit width per layer, replacing
  // `bits`; empty: every layer has `bits`. A layer costs what a one-layer cache of its width
  // costs, so the total is the sum over layers.
  std::vector<int> layer_bits;
  // kNuq / kNf with widths per KV head (kvquant-mixed from `kvq calibrate --width-per head`):
  // layer il's head h has head_bits[il * n_kv_heads + h], replacing bits and layer_bits. A
  // layer costs what a one-layer cache costs, with its codes summed head by head at each
  // head's width and one codebook per width its heads use.
  std::vector<int> head_bits;
};

struct CacheConfig {
  int n_layers = 0, n_kv_heads = 0, head_dim = 0;
  TensorQuantConfig k, v;
  int n_sink = 0;                       // first tokens stored fp16 (K and V)
  double key_outliers_per_token = -1;  // measured mean key outliers per token (< 0: expected)
};

// Bytes over all layers for one tensor (K or V).
struct TensorBytes {
  double codes = 0, scales = 0, zeros = 0;
  double outlier_values = 0, outlier_indices = 0, outlier_pointers = 0;
  double fp16_window = 0, sink = 0, per_layer = 0;
  double total() const {
    return codes + scales + zeros + outlier_values + outlier_indices + outlier_pointers +
           fp16_window + sink + per_layer;
  }
};

struct BitsReport {
  int64_t n_tokens = 0;
  int64_t n_values = 0;  // K and V elements: 2 * n_tokens * n_layers * n_kv_heads * head_dim
  TensorBytes k, v;
  double total_bytes() const { return k.total() + v.total(); }
  double bits_per_value() const { return n_values ? 8 * total_bytes() / double(n_values) : 0.0; }
  double k_bits_per_value() const { return n_values ? 16 * k.total() / double(n_values) : 0.0; }
  double v_bits_per_value() const { return n_values ? 16 * v.total() / double(n_values) : 0.0; }
  std::string to_string() const;  // one line per component, for reports
};

// invalid_argument for inconsistent configurations (bad bits for the scheme, KIVI R not a
// multiple of G, q8_0/q4_0 with d_kv % 32 != 0, negative sizes).
StatusOr<BitsReport> account_bits(const CacheConfig& config, int64_t n_tokens);

// Presets for the papers' configurations.
// KIVI-b: keys per channel in groups of G tokens, values per token in groups of G channels,
// fp16 residual of R tokens (KIVI §3).
CacheConfig kivi_config(int n_layers, int n_kv_heads, int head_dim, int bits, int group_size,
                        int residual);
// KVQuant nuq-b (or nf-b) with `fraction` outliers and n_sink fp16 tokens (KVQuant §3).
CacheConfig kvquant_config(int n_layers, int n_kv_heads, int head_dim, int bits,
                           double outlier_fraction, int n_sink, bool nf = false);
// Gives t KVQuant's fp16 window of the newest `residual` tokens (the spec's r=N; 0: none).
void set_kvquant_window(TensorQuantConfig* t, int residual);

}  // namespace kvq
