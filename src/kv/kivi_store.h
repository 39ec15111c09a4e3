// SPDX-License-Identifier: MIT
// KIVI (Liu et al. 2024, kivi.md §1): asymmetric min-max 2/4-bit quantization with an fp16
// window of recent tokens.
//   keys:   per channel in groups of G tokens; the fp16 window is flushed R tokens at a time
//           (R/G groups per channel), so it holds between 0 and R tokens;
//   values: per token in groups of G channels of one head; the window slides one token at a
//           time and holds the newest R tokens.
// Flushing happens in end_step(), which the model calls after each step's attention (and
// append repeats it first for direct users): exactly KIVI's order. A token's own attention
// always sees it in fp16, prefill attends the prompt in fp16 (§1.4), and after the prompt
// T - (T mod R) keys and T - R values are quantized (§1.5). The window is a ring of the rows
// one decode step needs (keys max(R, G), values R + 1); a prefill chunk grows it and the end
// of its step shrinks it back, so bytes_used() is what bytes_for() predicts.
// Keys are stored after RoPE, as KIVI does.
#pragma once

#include <vector>

#include "base/fp16.h"
#include "kv/kv_store.h"
#include "kv/paged_rows.h"
#include "kv/row_ring.h"
#include "quant/kv_layout.h"

namespace kvq {

class KiviStore final : public KvStore {
 public:
  // Errors: bits not 2/4 (3 and 8 also accepted), G not dividing head_dim (values) or R not a
  // multiple of G.
  static StatusOr<std::unique_ptr<KvStore>> make(const KvCacheShape& shape, PagePool* pool, KvRole role, int bits,
                                                 int group_size, int residual);
  std::string name() const override;
  // Values with no window are quantized token by token; keys never are (a G-token group
  // completed by a batch is quantized before its tokens' attention, unlike in decode).
  bool batch_invariant() const override { return role_ == KvRole::kValue && residual_ == 0; }
  Status append(int il, int n, const float* x) override;
  int n_tokens(int il) const override;
  void read(int il, int kvh, int t0, int n, float* out) const override;
  KvStoreView view(int il) const override;
  Status truncate(int n) override;
  // Values only (keys are stored after RoPE and quantized: refused).
  Status check_shift(int n_keep, int n_drop, bool rerotate) const override;
  void shift(int n_keep, int n_drop, const Rope* rope) override;
  size_t bytes_used() const override;
  size_t bytes_for(int n) const override;
  void set_eager(bool eager) override { eager_ = eager; }
  Status end_step() override;
  // Per layer: the quantized rows (PagedRows::write), then the window ring (RowRing::write).
  void write_state(ByteWriter& w) const override;
  StatusOr<std::unique_ptr<KvStoreState>> read_state(ByteReader& r, int n_tokens) const override;
  void install_state(std::unique_ptr<KvStoreState> state) override;

  // Tokens of layer il held in the fp16 window (tests).
  int n_window(int il) const { return layers_[size_t(il)].window.size(); }

 private:
  KiviStore(const KvCacheShape& shape, PagePool* pool, KvRole role, int bits, int group_size, int residual);
  struct Layer {
    PagedRows quant;             // keys: one record per G-token block; values: one per token
    RowRing window;              // rows [n_kv_heads, head_dim] f16, oldest first
  };
  struct State;
  // Quantizes the oldest `n` window tokens of layer il (n a multiple of G for keys).
  Status flush(int il, int n);
  // Flushes what KIVI's policy says is due (§1.5 steps 3 and 6).
  Status end_step_layer(int il);
  int quantized_tokens(const Layer& l) const;
  KiviKeyBlockLayout key_layout() const;  // one head of one key block
  UniformRowLayout value_layout() const;  // one head of one value token
  int window_rows() const;          // the window's steady capacity

  KvRole role_;
  int bits_, group_, residual_;
  bool eager_ = false;
  std::vector<Layer> layers_;
};

}  // namespace kvq
