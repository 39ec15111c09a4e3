// SPDX-License-Identifier: MIT
// One half of a KV cache: the store that holds the keys, or the values, of every layer in
// some format. A cache is a key store plus a value store (composite_cache.h), so keys and
// values can use different schemes (--cache-k / --cache-v).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kv/kv_cache.h"
#include "kv/kv_view.h"
#include "kv/page_pool.h"
#include "kvq/status.h"

namespace kvq {

class ByteReader;
class ByteWriter;
class Rope;

enum class KvRole { kKey, kValue };

// A store's contents read from a session file (KvStore::read_state): validated and allocated,
// not yet installed. Each store defines its own.
struct KvStoreState {
  virtual ~KvStoreState() = default;
};

class KvStore {
 public:
  // Storage comes from pool (page_pool.h), which must outlive the store.
  KvStore(const KvCacheShape& shape, PagePool* pool) : shape_(shape), pool_(pool) {}
  virtual ~KvStore() = default;
  KvStore(const KvStore&) = delete;
  KvStore& operator=(const KvStore&) = delete;

  const KvCacheShape& shape() const { return shape_; }
  // The spec string of this store, e.g. "kivi-2:g=32:r=128".
  virtual std::string name() const = 0;
  // Keys stored before RoPE (RoPE is applied when they are read for attention).
  virtual bool pre_rope() const { return false; }
  // True when the stored form of a token depends only on that token (no full-precision window
  // that changes with later appends): decoding token by token then equals batched prefill.
  virtual bool batch_invariant() const { return true; }

  // Appends n tokens to layer il. x: [n, n_kv_heads, head_dim] f32.
  virtual Status append(int il, int n, const float* x) = 0;
  virtual int n_tokens(int il) const = 0;
  // Dequantizes tokens [t0, t0 + n) of kv head kvh of layer il into out: [n, head_dim].
  virtual void read(int il, int kvh, int t0, int n, float* out) const = 0;
  // Layer il as attention reads it: the store's pages in place (kv_view.h).
  virtual KvStoreView view(int il) const = 0;
  // Keeps the first n tokens of every layer. kUnimplemented where the format cannot split.
  virtual Status truncate(int n) = 0;
  // Context shift (KvCache::shift) in two halves, so a cache changes both stores or neither:
  // whether tokens [n_keep, n_keep + n_drop) of every layer can be removed (rerotate: the
  // keys are stored after RoPE and must move to their new positions), then the removal itself,
  // which cannot fail once checked and allocates nothing. rope is null unless rerotate.
  virtual Status check_shift(int n_keep, int n_drop, bool rerotate) const = 0;
  virtual void shift(int n_keep, int n_drop, const Rope* rope) = 0;
  // Tokens at the start kept in full precision whatever the format (KVQuant's sinks).
  virtual int sink_tokens() const { return 0; }
  // Bytes allocated now, and bytes holding n tokens allocates (same accounting).
  virtual size_t bytes_used() const = 0;
  virtual size_t bytes_for(int n) const = 0;
  // Called once a forward step's attention is done: windowed formats flush what the step
  // filled (KIVI quantizes a full key window and the oldest value right after attention).
  virtual Status end_step() { return ok_status(); }
  // Quantize every token as soon as it is appended, with no full-precision window (the
  // KVQuant paper's simulated quantization). Only windowed formats (KIVI) change.
  virtual void set_eager(bool eager) {}

  // Sessions (engine/session.h, docs/FILE_FORMAT.md): every layer's contents as they are in
  // memory (pages, outliers, windows, sinks; not the calibrated parameters, which
  // calibration_hash() identifies).
  virtual void write_state(ByteWriter& w) const = 0;
  // Reads what write_state wrote for a store of this spec and shape holding n_tokens tokens in
  // every layer, validated (every count against the shape and n_tokens, sizes, outlier indices),
  // with storage from this store's pool. Changes nothing: kDataLoss names what is wrong,
  // kOutOfMemory when the pool refuses.
  virtual StatusOr<std::unique_ptr<KvStoreState>> read_state(ByteReader& r, int n_tokens) const = 0;
  // Replaces the contents with what read_state returned (allocates nothing, cannot fail).
  virtual void install_state(std::unique_ptr<KvStoreState> state) = 0;
  // Identifies the calibrated parameters the store was built with (a hash of the codebooks
  // and thresholds); 0 for formats that use none.
  virtual uint64_t calibration_hash() const { return 0; }

 protected:
  PagePool* pool() const { return pool_; }

 private:
  KvCacheShape shape_;
  PagePool* pool_;
};

}  // namespace kvq
