// SPDX-License-Identifier: MIT
// Base of the stores that keep one fixed-size record per token (dense, q8_0/q4_0, int-b):
// per-layer PagedRows plus the bookkeeping every such store shares.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kv/kv_store.h"
#include "kv/paged_rows.h"

namespace kvq {

class PagedStore : public KvStore {
 public:
  // Records of one part per KV head (part_bytes each) plus extra_bytes per token (paged_rows.h).
  PagedStore(const KvCacheShape& shape, PagePool* pool, size_t part_bytes, size_t extra_bytes)
      : KvStore(shape, pool) {
    for (int il = 0; il < shape.n_layers; ++il) rows_.emplace_back(pool, part_bytes, shape.n_kv_heads, extra_bytes);
  }
  int n_tokens(int il) const override { return rows_[size_t(il)].n_tokens(); }
  Status truncate(int n) override {
    for (auto& r : rows_) {
      if (r.n_tokens() > n) KVQ_RETURN_IF_ERROR(r.resize(n));
    }
    return ok_status();
  }
  // Erasing records needs nothing of the format; keys stored after RoPE in a quantized format
  // cannot be re-rotated without re-quantizing them (DenseStore overrides).
  Status check_shift(int n_keep, int n_drop, bool rerotate) const override {
    if (!rerotate) return ok_status();
    return unimplemented("context shift with " + name() +
                         " keys: they are stored after RoPE and quantized, so moving them to new positions "
                         "would re-quantize them; use keys stored before RoPE (kvquant) or f16/f32 keys");
  }
  void shift(int n_keep, int n_drop, const Rope* rope) override {
    for (auto& r : rows_) r.erase(n_keep, n_drop);
  }
  size_t bytes_used() const override {
    size_t b = 0;
    for (const auto& r : rows_) b += r.bytes();
    return b;
  }
  size_t bytes_for(int n) const override { return rows_[0].bytes_for(n) * rows_.size(); }
  // Per layer: the rows (PagedRows::write).
  void write_state(ByteWriter& w) const override {
    for (const auto& r : rows_) r.write(w);
  }
  StatusOr<std::unique_ptr<KvStoreState>> read_state(ByteReader& r, int n_tokens) const override {
    auto st = std::make_unique<State>();
    for (size_t il = 0; il < rows_.size(); ++il) {
      st->rows.push_back(rows_[il].like());
      KVQ_RETURN_IF_ERROR(st->rows.back().read(r, n_tokens, n_tokens, name() + " layer " + std::to_string(il) + " rows"));
    }
    return std::unique_ptr<KvStoreState>(std::move(st));
  }
  void install_state(std::unique_ptr<KvStoreState> state) override {
    auto* st = dynamic_cast<State*>(state.get());
    KVQ_CHECK(st && st->rows.size() == rows_.size());
    rows_ = std::move(st->rows);
  }

 protected:
  std::vector<PagedRows> rows_;  // per layer, one record per token

 private:
  struct State : KvStoreState {
    std::vector<PagedRows> rows;
  };
};

}  // namespace kvq
