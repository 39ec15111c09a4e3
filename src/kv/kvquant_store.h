// SPDX-License-Identifier: MIT
// KVQuant (Hooper et al. 2024, kvquant.md §1-§5):
//   keys:   per channel with offline thresholds (upper/lower per channel from calibration),
//           stored before RoPE by default (§2), normalized to [-1, 1] and encoded to the
//           layer's codebook (nuq, nf or uniform levels);
//   values: per token over the whole K/V vector (all heads), thresholds found online (§3);
//   dense-and-sparse: key values outside the channel thresholds, and the top/bottom fraction
//           of each value token, are kept as fp16 + index (§5.1): the fp16 holds the
//           value's correction to its dense decode (x - dense), which attention adds to what
//           it computed from the codes;
//   sinks:  the first n tokens stay fp16 (§5.3); Q-Norm adjusts the decode levels (§5.2);
//   window: with r=N the newest N tokens stay fp16 too (KIVI's residual, kivi.md §1.5; not in
//           KVQuant) and are quantized one at a time as they leave it, at the end of a step.
#pragma once

#include <array>
#include <vector>

#include "base/fp16.h"
#include "kv/kv_store.h"
#include "kv/paged_outliers.h"
#include "kv/paged_rows.h"
#include "kv/row_ring.h"
#include "quant/codebook.h"
#include "quant/kv_layout.h"
#include "quant/normalize.h"
#include "quant/outliers.h"
#include "quant/qnorm.h"

namespace kvq {

enum class CodebookKind { kNuq, kNf, kUniform };
const char* codebook_kind_name(CodebookKind k);

struct KvquantOptions {
  int bits = 3;  // 0: per layer (kvquant-mixed), each layer's codebook says its width
  double outliers = 0.01;  // fraction kept exactly (0.5% each side)
  int sinks = 1;
  bool qnorm = false;
  CodebookKind codebook = CodebookKind::kNuq;
  bool pre_rope = true;  // keys only
  // Rows stored rotated (the spec's rot=1, kv/rotated_store.h): what calibration fits on.
  bool rotate = false;
  // Bits of the values' per-token norm (the spec's norm=16|8): 16 stores NormParams (fp16 zero
  // and half-range), 8 a NormParams8 (quant/normalize.h). Keys' norms are per channel and
  // offline (no per-token norm), so it changes nothing there.
  int norm_bits = 16;
  // The fp16 window of the newest tokens (the spec's r=N; 0: none). The attention most models
  // give their last few tokens makes those tokens' quantization error cost the most
  // (docs/QUALITY.md, "A window of recent tokens").
  int window = 0;
};

// Calibrated parameters for one of K/V, per layer.
struct KvquantLayerParams {
  Codebook codebook;                // decode levels already include Q-Norm when enabled
  // kvquant-mixed with widths per KV head: head h's codebook (its width; heads of one width
  // share one codebook). Empty: every head uses `codebook`.
  std::vector<Codebook> head_codebooks;
  std::vector<float> upper, lower;  // keys: per-channel thresholds [n_kv_heads * head_dim]
  QNorm qnorm;                      // the fitted Q-Norm (calibration; identity when not fitted)
};
struct KvquantParams {
  std::vector<KvquantLayerParams> layers;
};

class KvquantStore final : public KvStore {
 public:
  // params must hold one layer per model layer (and thresholds for keys). Errors name what
  // does not fit.
  static StatusOr<std::unique_ptr<KvStore>> make(const KvCacheShape& shape, PagePool* pool, KvRole role,
                                                 const KvquantOptions& opts,
                                                 const KvquantParams& params);
  std::string name() const override;
  bool pre_rope() const override { return role_ == KvRole::kKey && opts_.pre_rope; }
  // A window makes what a token is attended with depend on when it was attended.
  bool batch_invariant() const override { return opts_.window == 0; }
  Status append(int il, int n, const float* x) override;
  int n_tokens(int il) const override;
  void read(int il, int kvh, int t0, int n, float* out) const override;
  KvStoreView view(int il) const override;
  Status truncate(int n) override;
  // Quantizes what left the window (errors: the encoding's, or out of memory, each leaving the
  // layer as it was), then seals the outlier pages the step filled (kv/paged_outliers.h; a page
  // the pool refuses stays as it was).
  Status end_step() override;
  // Simulated quantization: every token past the sinks is quantized as it is appended.
  void set_eager(bool eager) override { eager_ = eager; }
  // Drops whole pages after the sinks: n_keep must be the sinks held, n_drop a multiple of the
  // page size (past the quantized tokens, into the window's oldest). Keys stored after RoPE
  // (prerope=0) are refused.
  Status check_shift(int n_keep, int n_drop, bool rerotate) const override;
  void shift(int n_keep, int n_drop, const Rope* rope) override;
  int sink_tokens() const override { return opts_.sinks; }
  size_t bytes_used() const override;
  size_t bytes_for(int n) const override;
  // Per layer: the sink rows, the quantized rows (PagedRows::write), the outlier pages when
  // outliers > 0 (PagedOutliers::write), then the window ring when r > 0 (RowRing::write).
  void write_state(ByteWriter& w) const override;
  StatusOr<std::unique_ptr<KvStoreState>> read_state(ByteReader& r, int n_tokens) const override;
  void install_state(std::unique_ptr<KvStoreState> state) override;
  // The codebooks' levels and boundaries and, for keys, the per-channel thresholds.
  uint64_t calibration_hash() const override;

  // Outliers stored so far over all layers (accounting checks).
  size_t n_outliers() const;
  // Tokens of layer il held in the fp16 window (tests).
  int n_window(int il) const { return layers_[size_t(il)].window.size(); }

 private:
  // head_bits: per layer, each KV head's width.
  KvquantStore(const KvCacheShape& shape, PagePool* pool, KvRole role, const KvquantOptions& opts,
               const std::vector<std::vector<int>>& head_bits);
  struct Layer {
    int bits = 0;                        // this layer's width (opts_.bits unless mixed); 0: per head
    std::vector<int> head_bits;          // each KV head's width (all `bits` unless per head)
    size_t codes_bytes = 0;              // packed codes of one row (every head at its width)
    Codebook codebook;                   // bits != 0
    std::array<Codebook, 3> width_cb;    // bits == 0: index width - 2, the heads' codebooks (bits 0: unused)
    // Values: the 2-bit codebook's levels in int8 steps of level_step (ref::round_levels_ref),
    // which 2-bit value runs accumulate in integers (kernels/ref/kv_decode_ref.h).
    std::array<int8_t, 4> levels_q{};
    float level_step = 0.0f;
    std::vector<KvHeadPart> parts;       // bits == 0: each head's layout in a page, for the view
    ChannelNorm norm;                    // keys: the whole row
    std::vector<ChannelNorm> head_norms; // keys: one per kv head
    PagedRows sink;                      // fp16 rows of the first opts_.sinks tokens
    PagedRows quant;                     // values: codes then NormParams; keys: codes
    PagedOutliers outliers;              // paged like quant
    RowRing window;                      // r > 0: fp16 rows [n_kv_heads * head_dim], oldest first
  };
  struct State;
  // A token's record at `bits` (quant/kv_layout.h): values carry a norm, keys none.
  CodebookRecordLayout record_layout(int bits) const {
    return {bits, size_t(shape().head_dim), role_ == KvRole::kValue ? opts_.norm_bits : 0};
  }
  size_t per_layer_bytes(const Layer& l) const;
  // Appends n rows x [n, n_kv_heads * head_dim] to the quantized body; all or nothing.
  Status quantize_rows(Layer& l, int n, const float* x);
  // Quantizes the oldest n window rows into the body; all or nothing.
  Status flush(Layer& l, int n);
  // Flushes what is past the window's r newest tokens and returns the ring to its steady size.
  Status end_step_layer(Layer& l);
  // Record q's head kvh as its dense codes decode it (no outliers): out [head_dim].
  void decode_dense(const Layer& l, int q, int kvh, float* out) const;

  KvRole role_;
  KvquantOptions opts_;
  bool eager_ = false;
  std::vector<Layer> layers_;
  // Buffers of append / quantize_rows / flush, kept between calls (an append per layer and
  // step, so per-call vectors cost allocations on every token). Not cache memory: bytes_used()
  // does not count them, as it does not count the model's workspace.
  struct Scratch {
    std::vector<f16_t> sink_row;      // [row]
    std::vector<uint16_t> idx;        // [row] a row's outlier channels
    std::vector<f16_t> val;           // [row] their corrections
    std::vector<uint8_t> rec;         // the largest record of any layer
    std::vector<uint8_t> width_codes; // mixed widths: a row's codes at one width
    std::vector<float> dense;         // [head_dim]
    std::vector<float> rows;          // flush: window rows in f32
  };
  Scratch scratch_;
};

}  // namespace kvq
