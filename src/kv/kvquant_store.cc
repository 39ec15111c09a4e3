// SPDX-License-Identifier: MIT
#include "kv/kvquant_store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>

#include "base/hash.h"
#include "kernels/cpu/ops.h"
#include "kernels/ref/kv_decode_ref.h"
#include "quant/bitpack.h"

namespace kvq {

const char* codebook_kind_name(CodebookKind k) {
  switch (k) {
    case CodebookKind::kNuq: return "nuq";
    case CodebookKind::kNf: return "nf";
    case CodebookKind::kUniform: return "uniform";
  }
  return "?";
}

StatusOr<std::unique_ptr<KvStore>> KvquantStore::make(const KvCacheShape& shape, PagePool* pool, KvRole role,
                                                      const KvquantOptions& opts,
                                                      const KvquantParams& params) {
  if (opts.bits != 0 && (opts.bits < 2 || opts.bits > 4)) return invalid_argument("kvquant supports 2, 3 and 4 bits");
  if (opts.outliers < 0.0 || opts.outliers > 0.5) return invalid_argument("kvquant outliers must be in [0, 0.5]");
  if (opts.sinks < 0 || opts.sinks > shape.n_ctx) return invalid_argument("kvquant sinks out of range");
  if (opts.norm_bits != 16 && opts.norm_bits != 8) return invalid_argument("kvquant norm must be 16 or 8 bits");
  if (opts.window < 0) return invalid_argument("kvquant window r must not be negative");
  if (params.layers.size() != size_t(shape.n_layers)) {
    return invalid_argument("kvquant calibration has " + std::to_string(params.layers.size()) +
                            " layers, the model " + std::to_string(shape.n_layers));
  }
  // Each head's width: the spec's, or (kvquant-mixed) the one its calibrated codebook has
  // (the layer's, or with widths per KV head the head's).
  std::vector<std::vector<int>> head_bits;
  for (size_t il = 0; il < params.layers.size(); ++il) {
    const KvquantLayerParams& p = params.layers[il];
    const std::string layer = "kvquant calibration codebook of layer " + std::to_string(il);
    if (!p.head_codebooks.empty()) {
      if (opts.bits != 0) return invalid_argument(layer + " has widths per KV head, for kvquant-mixed only");
      if (p.head_codebooks.size() != size_t(shape.n_kv_heads)) {
        return invalid_argument(layer + " has widths for " + std::to_string(p.head_codebooks.size()) +
                                " KV heads, the model " + std::to_string(shape.n_kv_heads));
      }
    }
    std::vector<int> bits;
    for (int h = 0; h < shape.n_kv_heads; ++h) {
      const Codebook& cb = p.head_codebooks.empty() ? p.codebook : p.head_codebooks[size_t(h)];
      const int b = cb.bits;
      if (opts.bits != 0 && b != opts.bits) {
        return invalid_argument(layer + " has " + std::to_string(b) + " bits, the cache " + std::to_string(opts.bits));
      }
      if (b < 2 || b > 4) return invalid_argument(layer + " has " + std::to_string(b) + " bits (2, 3 or 4 supported)");
      if (size_t(shape.head_dim) * size_t(b) % 8 != 0) {
        return unimplemented("kvquant needs head_dim * bits to be a multiple of 8 (head_dim " +
                             std::to_string(shape.head_dim) + ", " + std::to_string(b) + " bits)");
      }
      // One codebook per (layer, width): what the accounting counts, and what lets a row be
      // encoded once per width.
      for (int g = 0; g < h && !p.head_codebooks.empty(); ++g) {
        const Codebook& o = p.head_codebooks[size_t(g)];
        if (o.bits == b && (o.values != cb.values || o.thresholds != cb.thresholds)) {
          return invalid_argument(layer + ": KV heads " + std::to_string(g) + " and " + std::to_string(h) + " have " +
                                  std::to_string(b) + " bits but different codebooks (one per layer and width)");
        }
      }
      bits.push_back(b);
    }
    head_bits.push_back(std::move(bits));
  }
  std::unique_ptr<KvquantStore> s(new KvquantStore(shape, pool, role, opts, head_bits));
  const size_t row = shape.row_values(), hd = size_t(shape.head_dim);
  for (size_t il = 0; il < s->layers_.size(); ++il) {
    const KvquantLayerParams& p = params.layers[il];
    Layer& l = s->layers_[il];
    if (l.bits != 0) {
      l.codebook = p.head_codebooks.empty() ? p.codebook : p.head_codebooks[0];
    } else {
      for (int h = 0; h < shape.n_kv_heads; ++h) {
        const Codebook& cb = p.head_codebooks[size_t(h)];
        l.width_cb[size_t(cb.bits - 2)] = cb;
      }
    }
    // The 2-bit levels' integer form, once per layer (as the codebook, a lookup table of the view).
    const Codebook& cb2 = l.bits != 0 ? l.codebook : l.width_cb[0];
    if (role == KvRole::kValue && cb2.bits == 2) {
      l.level_step = ref::round_levels_ref(cb2.values.data(), 4, l.levels_q.data());
    }
    if (l.bits == 0) {
      for (int h = 0; h < shape.n_kv_heads; ++h) {
        KvHeadPart hp;
        hp.offset = l.quant.part_offset(h) * size_t(l.quant.page_records());
        hp.stride = l.quant.part_size(h);
        hp.bits = l.head_bits[size_t(h)];
        hp.levels = l.width_cb[size_t(hp.bits - 2)].values.data();
        if (hp.bits == 2 && role == KvRole::kValue) {
          hp.levels_q = l.levels_q.data();
          hp.level_step = l.level_step;
        }
        l.parts.push_back(hp);
      }
    }
    if (role == KvRole::kKey) {
      if (p.upper.size() != row || p.lower.size() != row) {
        return invalid_argument("kvquant key thresholds of layer " + std::to_string(il) +
                                " do not match the K vector of " + std::to_string(row));
      }
      KVQ_ASSIGN_OR_RETURN(l.norm, make_channel_norm(p.upper.data(), p.lower.data(), row));
      for (int h = 0; h < shape.n_kv_heads; ++h) {
        KVQ_ASSIGN_OR_RETURN(ChannelNorm hn, make_channel_norm(p.upper.data() + size_t(h) * hd,
                                                               p.lower.data() + size_t(h) * hd, hd));
        l.head_norms.push_back(std::move(hn));
      }
    }
  }
  return std::unique_ptr<KvStore>(std::move(s));
}

KvquantStore::KvquantStore(const KvCacheShape& shape, PagePool* pool, KvRole role, const KvquantOptions& opts,
                           const std::vector<std::vector<int>>& head_bits)
    : KvStore(shape, pool), role_(role), opts_(opts) {
  layers_.resize(size_t(shape.n_layers));
  for (size_t il = 0; il < layers_.size(); ++il) {
    Layer& l = layers_[il];
    l.head_bits = head_bits[il];
    const bool one = std::all_of(l.head_bits.begin(), l.head_bits.end(), [&](int b) { return b == l.head_bits[0]; });
    l.bits = one ? l.head_bits[0] : 0;
    std::vector<size_t> part_sizes;
    for (int b : l.head_bits) part_sizes.push_back(record_layout(b).part_bytes());
    l.codes_bytes = 0;
    for (size_t b : part_sizes) l.codes_bytes += b;
    l.sink = PagedRows(pool, size_t(shape.head_dim) * sizeof(f16_t), shape.n_kv_heads, 0, std::max(1, opts.sinks));
    // Codes of the whole vector (a part per head, each at its head's width), then values'
    // NormParams (the extra bytes).
    l.quant = PagedRows(pool, part_sizes, record_layout(l.head_bits[0]).norm_bytes());
    l.outliers = PagedOutliers(pool, l.quant.page_records(), shape.n_kv_heads, shape.head_dim);
    l.window = RowRing(pool, shape.row_values() * sizeof(f16_t));
  }
  const size_t row = shape.row_values();
  scratch_.sink_row.resize(row);
  scratch_.idx.resize(row);
  scratch_.val.resize(row);
  for (const Layer& l : layers_) {
    scratch_.rec.resize(std::max(scratch_.rec.size(), l.quant.record_bytes()));
    if (l.bits == 0) scratch_.width_codes.resize(packed_bytes(4, row));
  }
  scratch_.dense.resize(size_t(shape.head_dim));
}

std::string KvquantStore::name() const {
  char buf[192];
  const std::string width = opts_.bits == 0 ? "mixed" : std::to_string(opts_.bits);
  const std::string window = opts_.window > 0 ? ":r=" + std::to_string(opts_.window) : "";
  std::snprintf(buf, sizeof buf, "kvquant-%s:outliers=%g:sinks=%d%s:qnorm=%d:codebook=%s%s%s", width.c_str(),
                opts_.outliers, opts_.sinks, window.c_str(), int(opts_.qnorm), codebook_kind_name(opts_.codebook),
                role_ == KvRole::kKey && !opts_.pre_rope ? ":prerope=0" : "",
                role_ == KvRole::kValue && opts_.norm_bits == 8 ? ":norm=8" : "");
  return buf;
}

int KvquantStore::n_tokens(int il) const {
  const Layer& l = layers_[size_t(il)];
  return l.sink.n_tokens() + l.quant.n_tokens() + l.window.size();
}

Status KvquantStore::append(int il, int n, const float* x) {
  Layer& l = layers_[size_t(il)];
  const size_t row = shape().row_values();
  // A step that was not ended (end_step) is ended here, as KIVI's is.
  KVQ_RETURN_IF_ERROR(end_step_layer(l));
  f16_t* sink_row = scratch_.sink_row.data();
  const int sink0 = l.sink.n_tokens(), win0 = l.window.size();
  auto rollback = [&](const Status& s) {
    (void)l.sink.resize(sink0);
    l.window.truncate(win0);
    return s;
  };
  int t = 0;
  for (; t < n && l.sink.n_tokens() < opts_.sinks && l.quant.n_tokens() == 0 && l.window.size() == 0; ++t) {
    // Attention sink (§5.3): the first tokens are kept in fp16.
    const float* xr = x + size_t(t) * row;
    if (Status st = check_finite(xr, row, "kvquant K/V", true); !st.ok()) return rollback(st);
    const int s = l.sink.n_tokens();
    if (Status st = l.sink.resize(s + 1); !st.ok()) return rollback(st);
    cpu::convert_f32_to_f16(xr, sink_row, row);
    l.sink.put(s, reinterpret_cast<const uint8_t*>(sink_row));
  }
  if (t == n) return ok_status();
  if (opts_.window == 0) {
    if (Status st = quantize_rows(l, n - t, x + size_t(t) * row); !st.ok()) return rollback(st);
    return ok_status();
  }
  // The window: the tokens wait in fp16 until end_step() (or, simulating, go on at once).
  if (Status st = l.window.push_f16(x + size_t(t) * row, n - t, kvquant_window_rows(opts_.window), "kvquant K/V");
      !st.ok()) {
    return rollback(st);
  }
  if (eager_) {
    if (Status st = flush(l, l.window.size()); !st.ok()) return rollback(st);
  }
  return ok_status();
}

Status KvquantStore::flush(Layer& l, int n) {
  if (n == 0) return ok_status();
  const size_t row = shape().row_values();
  std::vector<float>& x = scratch_.rows;
  x.resize(size_t(n) * row);
  for (int i = 0; i < n; ++i) {
    cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(l.window.row(i)), x.data() + size_t(i) * row, row);
  }
  KVQ_RETURN_IF_ERROR(quantize_rows(l, n, x.data()));
  l.window.pop_front(n);
  // One piece, from the block's start: with pre-RoPE keys, where attention splits its runs
  // changes the rounding of their rotation, so the window's runs must depend on positions
  // only (a context shift then matches a fresh cache bit for bit). R rows moved per step.
  l.window.compact();
  return ok_status();
}

Status KvquantStore::end_step_layer(Layer& l) {
  if (opts_.window == 0) return ok_status();
  const int w = l.window.size();
  if (w > opts_.window) KVQ_RETURN_IF_ERROR(flush(l, w - opts_.window));
  l.window.shrink(kvquant_window_rows(opts_.window));  // after a prefill chunk, back to the steady ring
  return ok_status();
}

Status KvquantStore::quantize_rows(Layer& l, int n, const float* x) {
  const size_t row = shape().row_values();
  uint16_t* idx = scratch_.idx.data();
  f16_t* val = scratch_.val.data();
  const std::span<uint8_t> rec(scratch_.rec.data(), l.quant.record_bytes());
  // Widths per KV head: the row is encoded once per width in use (the norm and the outliers do
  // not depend on the codebook), and each head takes its part of its width's codes.
  const std::span<uint8_t> width_codes(scratch_.width_codes.data(), l.bits == 0 ? packed_bytes(4, row) : 0);
  // Both start from zeros on every call, as the buffers made per call did.
  std::fill(rec.begin(), rec.end(), uint8_t(0));
  std::fill(width_codes.begin(), width_codes.end(), uint8_t(0));
  float* dense = scratch_.dense.data();
  const int quant0 = l.quant.n_tokens();
  auto rollback = [&](const Status& s) {
    (void)l.quant.resize(quant0);
    l.outliers.truncate(size_t(quant0));
    return s;
  };
  for (int t = 0; t < n; ++t) {
    const float* xr = x + size_t(t) * row;
    const int q = l.quant.n_tokens();
    if (Status st = l.quant.resize(q + 1); !st.ok()) return rollback(st);
    size_t count = 0;
    // The record's norm (values): NormParams, or NormParams8 with norm=8 (the codes then use its
    // decoded form, `norm`).
    NormParams norm;
    NormParams8 norm8;
    NormParams8* n8 = opts_.norm_bits == 8 ? &norm8 : nullptr;
    auto encode = [&](const Codebook& cb, uint8_t* codes) -> Status {
      if (role_ == KvRole::kKey) {
        return opts_.outliers > 0.0
                   ? quantize_dense_sparse_channels(xr, row, l.norm, cb, codes, idx, val, &count)
                   : encode_codebook_row_pc(xr, row, l.norm, cb, codes);
      }
      if (opts_.outliers > 0.0) {
        return quantize_dense_sparse_token(xr, row, opts_.outliers, cb, codes, &norm, idx, val, &count,
                                           KernelPath::kSimd, n8);
      }
      KVQ_RETURN_IF_ERROR(check_finite(xr, row, "V", true));
      KVQ_ASSIGN_OR_RETURN(norm, row_norm_from_minmax(xr, row, n8));
      return encode_codebook_row(xr, row, norm, cb, codes);
    };
    Status st;
    if (l.bits != 0) {
      st = encode(l.codebook, rec.data());
    } else {
      for (const Codebook& cb : l.width_cb) {
        if (cb.bits == 0 || !st.ok()) continue;
        st = encode(cb, width_codes.data());
        // Head h's codes at this width are bytes [h, h + 1) * head_dim * bits / 8 of the row's.
        const size_t part = shape().head_dim * size_t(cb.bits) / 8;
        for (int h = 0; h < shape().n_kv_heads; ++h) {
          if (l.head_bits[size_t(h)] == cb.bits) {
            std::memcpy(rec.data() + l.quant.part_offset(h), width_codes.data() + size_t(h) * part, part);
          }
        }
      }
    }
    if (role_ == KvRole::kValue) {
      if (n8) {
        std::memcpy(rec.data() + l.codes_bytes, &norm8, sizeof norm8);
      } else {
        std::memcpy(rec.data() + l.codes_bytes, &norm, sizeof norm);
      }
    }
    if (!st.ok()) return rollback(st);
    l.quant.put(q, rec.data());
    // Without dense-and-sparse there is no sparse matrix at all (not even row pointers).
    if (opts_.outliers > 0.0) {
      // Each outlier is stored as its correction x - dense to what the dense codes decode to at
      // its channel, not as x (KVQuant §3.4 keeps x): attention adds the correction to the
      // score or output it computed from the codes, without decoding the code again (the
      // decode made the correction walks ~30% of KVQuant's decode attention), and read() adds
      // it to the dense row. It is rounded to f16 relative to |x - dense| instead of |x|.
      const size_t hd = size_t(shape().head_dim);
      for (size_t j = 0; j < count;) {
        const size_t h = idx[j] / hd;  // indices ascend: a head's outliers are consecutive
        decode_dense(l, q, int(h), dense);
        for (; j < count && idx[j] / hd == h; ++j) {
          val[j] = f32_to_f16(xr[idx[j]] - dense[idx[j] - h * hd]);
          if (!std::isfinite(f16_to_f32(val[j]))) {
            return rollback(invalid_argument("kvquant: outlier " + std::to_string(xr[idx[j]]) +
                                             " is too far from its dense value for an fp16 correction"));
          }
        }
      }
      if (Status os = l.outliers.append_row(idx, val, count); !os.ok()) return rollback(os);
    }
  }
  return ok_status();
}

void KvquantStore::decode_dense(const Layer& l, int q, int kvh, float* out) const {
  const size_t hd = size_t(shape().head_dim);
  const uint8_t* codes = l.quant.part(q, kvh);
  const Codebook& cb = l.bits != 0 ? l.codebook : l.width_cb[size_t(l.head_bits[size_t(kvh)] - 2)];
  if (role_ == KvRole::kKey) {
    decode_codebook_row_pc(codes, hd, l.head_norms[size_t(kvh)], cb, out);
    return;
  }
  NormParams norm;
  if (opts_.norm_bits == 8) {
    NormParams8 p8;
    std::memcpy(&p8, l.quant.extra(q), sizeof p8);
    norm = norm8_decode(p8);
  } else {
    std::memcpy(&norm, l.quant.extra(q), sizeof norm);
  }
  decode_codebook_row(codes, hd, norm, cb, out);
}

void KvquantStore::read(int il, int kvh, int t0, int n, float* out) const {
  const Layer& l = layers_[size_t(il)];
  const size_t hd = size_t(shape().head_dim);
  const size_t lo = size_t(kvh) * hd;
  const int n_sink = l.sink.n_tokens();
  for (int i = 0; i < n; ++i) {
    const int t = t0 + i;
    float* o = out + size_t(i) * hd;
    if (t < n_sink) {
      cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(l.sink.part(t, kvh)), o, hd);
      continue;
    }
    const int q = t - n_sink;
    if (q >= l.quant.n_tokens()) {
      const auto* w = reinterpret_cast<const f16_t*>(l.window.row(q - l.quant.n_tokens()));
      cpu::convert_f16_to_f32(w + lo, o, hd);
      continue;
    }
    decode_dense(l, q, kvh, o);
    if (opts_.outliers == 0.0) continue;
    // A sparse outlier is stored as its correction to the dense decode (append()).
    l.outliers.for_each_in_row(size_t(q), [&](size_t i, f16_t v) {
      if (i >= lo && i < lo + hd) o[i - lo] += f16_to_f32(v);
    });
  }
}

// Tokens past n leave from the newest: the window's first, then the body's, then the sinks'.
// What stays keeps its form (a body token does not return to the window).
Status KvquantStore::truncate(int n) {
  for (auto& l : layers_) {
    const int body = l.sink.n_tokens() + l.quant.n_tokens();
    if (n >= body) {
      l.window.truncate(n - body);
      continue;
    }
    l.window.truncate(0);
    if (n < l.sink.n_tokens()) {
      KVQ_RETURN_IF_ERROR(l.sink.resize(n));
      KVQ_RETURN_IF_ERROR(l.quant.resize(0));
      l.outliers.truncate(0);
    } else {
      KVQ_RETURN_IF_ERROR(l.quant.resize(n - l.sink.n_tokens()));
      l.outliers.truncate(size_t(n - l.sink.n_tokens()));
    }
  }
  return ok_status();
}

Status KvquantStore::end_step() {
  for (auto& l : layers_) {
    KVQ_RETURN_IF_ERROR(end_step_layer(l));
    l.outliers.seal_full_pages();
  }
  return ok_status();
}

Status KvquantStore::check_shift(int n_keep, int n_drop, bool rerotate) const {
  if (rerotate) {
    return unimplemented("context shift with kvquant keys stored after RoPE (prerope=0): they would be "
                         "re-quantized; keep the default prerope=1, which needs no re-rotation");
  }
  const int page = PagedRows::kPageTokens;
  const int sinks = opts_.sinks;
  if (n_keep != sinks || n_drop % page != 0) {
    return unimplemented("kvquant shifts its context a page at a time after its sink tokens: keep " +
                         std::to_string(sinks) + " tokens and drop a multiple of " + std::to_string(page) +
                         " (asked: keep " + std::to_string(n_keep) + ", drop " + std::to_string(n_drop) + ")");
  }
  return ok_status();
}

// Whole pages of records and their outliers leave the page tables; no record moves, and
// pre-RoPE keys take their new positions at attention time (§2).
void KvquantStore::shift(int n_keep, int n_drop, const Rope* rope) {
  for (auto& l : layers_) {
    const int body = l.quant.n_tokens();
    if (n_drop <= body) {
      l.quant.erase(0, n_drop);
      if (opts_.outliers > 0.0) l.outliers.drop_front_pages(size_t(n_drop));
      continue;
    }
    // A context of fewer than a page past its sinks and window: the whole body goes, then the
    // window's oldest rows.
    l.quant.erase(0, body);
    l.outliers.truncate(0);
    l.window.erase(0, n_drop - body);
    l.window.compact();
  }
}

// Per layer, fixed: the codebook (2^b fp32 levels; with widths per head, one per width in use)
// and, for keys, fp16 zero + half-range per channel, as bits accounting counts them.
size_t KvquantStore::per_layer_bytes(const Layer& l) const {
  size_t b = l.bits != 0 ? size_t(1 << l.bits) * 4 : 0;
  for (const Codebook& cb : l.width_cb) b += cb.bits != 0 ? size_t(1 << cb.bits) * 4 : 0;
  if (role_ == KvRole::kKey) b += shape().row_values() * 4;
  return b;
}

size_t KvquantStore::bytes_used() const {
  size_t b = 0;
  for (const auto& l : layers_) {
    b += l.sink.bytes() + l.quant.bytes() + l.window.bytes() + per_layer_bytes(l);
    if (opts_.outliers > 0.0) b += l.outliers.bytes();
  }
  return b;
}

size_t KvquantStore::bytes_for(int n) const {
  // Outliers at the configured fraction (keys: expected, values: exact top/bottom counts).
  // After a step the window holds the newest r tokens past the sinks (none when simulating),
  // in a ring of kvquant_window_rows(r) rows allocated with the first of them.
  const int n_sink = std::min(n, opts_.sinks);
  const int n_win = eager_ ? 0 : std::min(n - n_sink, opts_.window);
  const int nq = n - n_sink - n_win;
  const size_t row = shape().row_values();
  const size_t ring = n > n_sink ? size_t(kvquant_window_rows(opts_.window)) * row * sizeof(f16_t) : 0;
  const size_t per_side = role_ == KvRole::kValue ? outliers_per_side(row, opts_.outliers)
                                                  : size_t(double(row) * opts_.outliers / 2.0 + 0.5);
  // Per page of outliers (OutlierLayout, the same widths in every layer): a full page sealed
  // at its exact size, the newest page growing.
  size_t sparse = 0;
  if (opts_.outliers > 0.0) {
    const int page = PagedRows::kPageTokens;
    const OutlierLayout lay = OutlierLayout::for_rows(shape().n_kv_heads, shape().head_dim, page);
    for (int t = 0; t < nq; t += page) {
      const int rows = std::min(page, nq - t);
      const size_t nnz = size_t(rows) * 2 * per_side;
      sparse += rows == page && lay.can_seal(page) ? lay.sealed_block_bytes(nnz) : lay.block_bytes(page, nnz);
    }
  }
  // Layers differ only in their width (kvquant-mixed): the codes and the codebook.
  size_t b = 0;
  for (const Layer& l : layers_) {
    b += l.sink.bytes_for(n_sink) + l.quant.bytes_for(nq) + sparse + ring + per_layer_bytes(l);
  }
  return b;
}

size_t KvquantStore::n_outliers() const {
  size_t n = 0;
  for (const auto& l : layers_) n += l.outliers.nnz();
  return n;
}

struct KvquantStore::State : KvStoreState {
  struct Parts {
    PagedRows sink, quant;
    PagedOutliers outliers;
    RowRing window;
  };
  std::vector<Parts> layers;
};

void KvquantStore::write_state(ByteWriter& w) const {
  for (const auto& l : layers_) {
    l.sink.write(w);
    l.quant.write(w);
    if (opts_.outliers > 0.0) l.outliers.write(w);
    if (opts_.window > 0) l.window.write(w);
  }
}

StatusOr<std::unique_ptr<KvStoreState>> KvquantStore::read_state(ByteReader& r, int n) const {
  auto st = std::make_unique<State>();
  // Every token goes to the sinks until they are full (shifts and truncation keep that).
  const int n_sink = std::min(n, opts_.sinks);
  for (size_t il = 0; il < layers_.size(); ++il) {
    const Layer& l = layers_[il];
    const std::string what = name() + " layer " + std::to_string(il);
    State::Parts p{l.sink.like(), l.quant.like(), PagedOutliers(pool(), l.quant.page_records(), shape().n_kv_heads, shape().head_dim),
                   RowRing(pool(), shape().row_values() * sizeof(f16_t))};
    KVQ_RETURN_IF_ERROR(p.sink.read(r, n_sink, n_sink, what + " sinks"));
    // A saved step has at most r tokens in its window (fewer after a truncation).
    KVQ_RETURN_IF_ERROR(p.quant.read(r, std::max(0, n - n_sink - opts_.window), n - n_sink, what + " rows"));
    const int nq = p.quant.n_tokens();
    if (opts_.outliers > 0.0) {
      KVQ_RETURN_IF_ERROR(p.outliers.read(r, size_t(nq), what + " outliers"));
    }
    if (opts_.window > 0) {
      KVQ_RETURN_IF_ERROR(p.window.read(r, n - n_sink - nq, kvquant_window_rows(opts_.window), what + " window"));
      p.window.compact();
    }
    st->layers.push_back(std::move(p));
  }
  return std::unique_ptr<KvStoreState>(std::move(st));
}

void KvquantStore::install_state(std::unique_ptr<KvStoreState> state) {
  auto* st = dynamic_cast<State*>(state.get());
  KVQ_CHECK(st && st->layers.size() == layers_.size());
  for (size_t il = 0; il < layers_.size(); ++il) {
    layers_[il].sink = std::move(st->layers[il].sink);
    layers_[il].quant = std::move(st->layers[il].quant);
    layers_[il].outliers = std::move(st->layers[il].outliers);
    layers_[il].window = std::move(st->layers[il].window);
  }
}

uint64_t KvquantStore::calibration_hash() const {
  uint64_t h = kFnvOffset;
  for (const auto& l : layers_) {
    // Per-layer widths are part of what the codes mean (folded in only for kvquant-mixed, so
    // uniform caches keep the hash their session files were written with).
    if (opts_.bits == 0) h = fnv1a(&l.bits, sizeof l.bits, h);
    h = fnv1a(l.codebook.values.data(), sizeof l.codebook.values, h);
    h = fnv1a(l.codebook.thresholds.data(), sizeof l.codebook.thresholds, h);
    if (l.bits == 0) {  // widths per KV head: each head's width and each width's codebook
      h = fnv1a(l.head_bits.data(), l.head_bits.size() * sizeof(int), h);
      for (const Codebook& cb : l.width_cb) {
        h = fnv1a(cb.values.data(), sizeof cb.values, h);
        h = fnv1a(cb.thresholds.data(), sizeof cb.thresholds, h);
      }
    }
    for (const auto* v : {&l.norm.upper, &l.norm.lower, &l.norm.zero_f, &l.norm.half_f}) {
      h = fnv1a(v->data(), v->size() * sizeof(float), h);
    }
  }
  return h;
}

}  // namespace kvq

namespace kvq {

KvStoreView KvquantStore::view(int il) const {
  const Layer& l = layers_[size_t(il)];
  const KvCacheShape& s = shape();
  KvStoreView v;
  v.n_tokens = n_tokens(il);
  v.pre_rope = pre_rope();
  const int n_sink = l.sink.n_tokens(), nq = l.quant.n_tokens();
  if (n_sink > 0) {
    v.add() = l.sink.segment(KvFormat::kF16, s.head_dim);
  }
  if (nq > 0) {
    // Values: a NormParams per token for all heads, in the extras.
    KvSegment& seg = v.add();
    seg = l.quant.segment(role_ == KvRole::kKey ? KvFormat::kCodebookPc : KvFormat::kCodebookRow, s.head_dim, n_sink);
    KvRun& p = seg.proto;
    p.bits = l.bits;
    p.levels = l.codebook.values.data();
    if (role_ == KvRole::kValue && l.bits == 2) {
      p.levels_q = l.levels_q.data();
      p.level_step = l.level_step;
    }
    // Widths per KV head: each head's run gets its own rows, width and levels.
    if (l.bits == 0) {
      p.levels = nullptr;
      seg.heads = l.parts.data();
    }
    p.norm8 = role_ == KvRole::kValue && opts_.norm_bits == 8;
    if (role_ == KvRole::kKey) {
      p.ch_half = l.norm.half_f.data();
      p.ch_zero = l.norm.zero_f.data();
    }
    if (opts_.outliers > 0.0) {
      seg.out_pages = l.outliers.pages();
      seg.out_layout = l.outliers.layout();
    }
  }
  const uint8_t* base[2];
  int count[2];
  if (const int np = l.window.pieces(base, count); np > 0) {
    KVQ_CHECK(np == 1);  // flush() and read_state() compact the ring
    v.add() = f16_window_segment(n_sink + nq, count[0], s.n_kv_heads, s.head_dim, base[0]);
  }
  return v;
}

}  // namespace kvq
