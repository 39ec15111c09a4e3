// SPDX-License-Identifier: MIT
// The KV cache interface. One sequence; tokens occupy positions 0..n_tokens-1 in order.
// Designed for the quantized caches too: keys may be stored before RoPE (KVQuant), caches may
// hold a full-precision window (KIVI), fp16 sink tokens and sparse outliers; all of it sits
// behind append / a per-layer view / truncate / clear / bytes_used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/check.h"
#include "kv/kv_view.h"
#include "kvq/status.h"
#include "tensor/dtype.h"

namespace kvq {

class ByteReader;
class ByteWriter;
class Rope;

struct KvCacheShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_ctx = 0;  // capacity in tokens
  // Values per token per layer for K (and for V).
  size_t row_values() const { return size_t(n_kv_heads) * size_t(head_dim); }
};

class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape) : shape_(shape) {}
  virtual ~KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // The cache spec string, e.g. "f16".
  virtual std::string name() const = 0;
  const KvCacheShape& shape() const { return shape_; }
  // True when append() expects keys before RoPE (RoPE is then applied at attention time).
  virtual bool pre_rope() const { return false; }

  // Appends n_tokens consecutive tokens to layer il at positions [n_tokens(il), +n_tokens).
  // k, v: [n_tokens, n_kv_heads, head_dim] f32. Errors: kInvalidArgument when the context
  // is full, kOutOfMemory when storage cannot be allocated (nothing is appended then).
  virtual Status append(int il, int n_tokens, const float* k, const float* v) = 0;
  // Tokens stored in layer il.
  virtual int n_tokens(int il) const = 0;
  // Drops every token at position >= n_tokens in all layers. kUnimplemented where a format
  // cannot split its storage there (e.g. inside a KIVI key block).
  virtual Status truncate(int n_tokens) = 0;
  // Context shift: removes tokens [n_keep, n_keep + n_drop) from every layer; later tokens
  // move down n_drop positions. Keys stored before RoPE need nothing more (positions are
  // applied at attention time); keys stored after RoPE are re-rotated with `rope` where that is
  // exact enough (f32, f16, as llama.cpp does), and quantized post-RoPE keys are refused
  // (kUnimplemented: it would re-quantize them). Errors change nothing.
  virtual Status shift(int n_keep, int n_drop, const Rope& rope) = 0;
  // Whether this cache's formats can shift that way at all (whatever it holds now): tools
  // check it before a long run.
  virtual Status check_shift(int n_keep, int n_drop) const = 0;
  // Tokens at the start that a context shift should keep (KVQuant's fp16 sinks; 0 if none).
  virtual int sink_tokens() const { return 0; }
  // Empties the cache (always possible).
  void clear() { KVQ_CHECK(truncate(0).ok()); }
  // Bytes actually allocated now, all layers, including any metadata and windows.
  virtual size_t bytes_used() const = 0;
  // Bytes that holding n_tokens tokens allocates (same accounting as bytes_used).
  virtual size_t bytes_for(int n_tokens) const = 0;

  // True when a token's stored form depends only on that token (no full-precision window
  // that later appends change): feeding tokens one at a time then equals batched prefill.
  virtual bool batch_invariant() const { return true; }
  // Called by the model after each forward step, once every layer has attended.
  virtual Status end_step() { return ok_status(); }
  // Quantize every token on append, with no full-precision window (simulated quantization).
  virtual void set_eager(bool eager) {}

  // Layer il's keys and values as attention reads them, in place (kv/kv_view.h).
  virtual void views(int il, KvStoreView* k, KvStoreView* v) const = 0;
  // Reference read: tokens [t0, t0 + n) of kv head kvh of layer il, dequantized into
  // k, v: [n, head_dim] f32 (keys before RoPE when pre_rope()). Thread-safe for reads.
  virtual void read(int il, int kvh, int t0, int n, float* k, float* v) const = 0;

  // Sessions (engine/session.h): the whole contents as they are in memory, every layer the
  // same length (docs/FILE_FORMAT.md).
  virtual void write_state(ByteWriter& w) const = 0;
  // Reads what write_state wrote for a cache of this spec and shape holding n_tokens tokens,
  // to the end of r (bytes left over are an error): all of it is read and validated before any of it is installed, so an error (kDataLoss
  // naming what is wrong, kOutOfMemory) changes nothing.
  virtual Status read_state(ByteReader& r, int n_tokens) = 0;
  // Identifies the calibrated parameters the cache was built with (0: it uses none).
  virtual uint64_t calibration_hash() const { return 0; }

 private:
  KvCacheShape shape_;
};

// Every value the cache holds as read() returns it: per layer, per KV head, that head's keys
// [n_tokens, head_dim] then its values (for comparing caches bit for bit: tests, checks).
std::vector<float> read_all(const KvCache& cache);

}  // namespace kvq
