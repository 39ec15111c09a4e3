// SPDX-License-Identifier: MIT
// Full-precision KV cache (f32 or f16) stored in pages allocated on demand, so bytes_used()
// grows with the tokens held rather than with the context capacity.
#pragma once

#include <memory>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/fp16.h"
#include "kv/kv_cache.h"

namespace kvq {

class DenseKvCache final : public KvCache {
 public:
  static constexpr int kPageTokens = 64;

  DenseKvCache(const KvCacheShape& shape, DType dtype);

  std::string name() const override { return std::string(dtype_name(dtype_)); }
  Status append(int il, int n_tokens, const float* k, const float* v) override;
  int n_tokens(int il) const override { return layers_[size_t(il)].n_tokens; }
  Status truncate_to(int n_tokens) override;
  void read_block(int il, int kvh, int t0, int n, float* k, float* v) const override;
  size_t bytes_used() const override;
  size_t bytes_for(int n_tokens) const override;
  bool dense_view(int il, DenseKvLayerView* view) const override;

  DType dtype() const { return dtype_; }

 private:
  struct Layer {
    std::vector<AlignedBuffer<uint8_t>> k_pages, v_pages;
    std::vector<const void*> k_ptrs, v_ptrs;
    int n_tokens = 0;
  };
  size_t page_bytes() const;
  void store_row(const float* src, uint8_t* page, int slot);

  DType dtype_;
  std::vector<Layer> layers_;
};

}  // namespace kvq
