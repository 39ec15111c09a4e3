// SPDX-License-Identifier: MIT
#include "kv/kivi_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "quant/bits_accounting.h"
#include "quant/uniform_group.h"
#include "quant/uniform_group_math.h"

namespace kvq {

StatusOr<std::unique_ptr<KvStore>> KiviStore::make(const KvCacheShape& shape, PagePool* pool, KvRole role,
                                                   int bits, int group_size, int residual) {
  if (!is_packable_bits(bits)) return invalid_argument("kivi supports 2, 3, 4 and 8 bits");
  if (group_size <= 0) return invalid_argument("kivi group size g must be positive");
  if (residual < 0 || residual % group_size != 0) {
    return invalid_argument("kivi residual length r=" + std::to_string(residual) +
                            " must be a multiple of the group size g=" + std::to_string(group_size));
  }
  if (role == KvRole::kValue && shape.head_dim % group_size != 0) {
    return unimplemented("kivi values are grouped along head_dim, and g=" + std::to_string(group_size) +
                         " does not divide head_dim " + std::to_string(shape.head_dim) +
                         " (a group never spans heads); pass a smaller g, e.g. g=" +
                         std::to_string(std::min(shape.head_dim, group_size)));
  }
  return std::unique_ptr<KvStore>(new KiviStore(shape, pool, role, bits, group_size, residual));
}

KiviStore::KiviStore(const KvCacheShape& shape, PagePool* pool, KvRole role, int bits, int group_size,
                     int residual)
    : KvStore(shape, pool), role_(role), bits_(bits), group_(group_size), residual_(residual) {
  layers_.resize(size_t(shape.n_layers));
  // Keys: one G-token block per page, so allocation follows the tokens held.
  for (auto& l : layers_) {
    l.quant = role == KvRole::kKey ? PagedRows(pool, key_layout().bytes(), shape.n_kv_heads, 0, 1)
                                   : PagedRows(pool, value_layout().bytes(), shape.n_kv_heads, 0);
    l.window = RowRing(pool, shape.row_values() * sizeof(f16_t));
  }
}

std::string KiviStore::name() const {
  return "kivi-" + std::to_string(bits_) + ":g=" + std::to_string(group_) + ":r=" + std::to_string(residual_);
}

KiviKeyBlockLayout KiviStore::key_layout() const { return {bits_, size_t(shape().head_dim), group_}; }
UniformRowLayout KiviStore::value_layout() const { return {bits_, size_t(shape().head_dim), group_}; }

int KiviStore::window_rows() const { return kivi_window_rows(role_ == KvRole::kKey, residual_, group_); }

int KiviStore::quantized_tokens(const Layer& l) const {
  return role_ == KvRole::kKey ? l.quant.n_tokens() * group_ : l.quant.n_tokens();
}

int KiviStore::n_tokens(int il) const {
  const Layer& l = layers_[size_t(il)];
  return quantized_tokens(l) + l.window.size();
}

Status KiviStore::flush(int il, int n) {
  Layer& l = layers_[size_t(il)];
  const size_t row = shape().row_values(), hd = size_t(shape().head_dim);
  const int n_heads = shape().n_kv_heads;
  const KiviKeyBlockLayout kl = key_layout();
  const UniformRowLayout vl = value_layout();
  std::vector<float> x(size_t(n) * row);
  for (int t = 0; t < n; ++t) {
    cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(l.window.row(t)), x.data() + size_t(t) * row, row);
  }
  const int r0 = l.quant.n_tokens();
  if (role_ == KvRole::kKey) {
    const int n_blocks = n / group_;
    KVQ_RETURN_IF_ERROR(l.quant.resize(r0 + n_blocks));
    for (int b = 0; b < n_blocks; ++b) {
      for (int h = 0; h < n_heads; ++h) {
        uint8_t* codes = l.quant.part(r0 + b, h);
        // Block of G tokens x head_dim channels; one min-max group per channel (KIVI §1.2).
        const Status s = quantize_uniform_cols(x.data() + size_t(b) * group_ * row + size_t(h) * hd,
                                               size_t(group_), hd, row, bits_, codes,
                                               reinterpret_cast<f16_t*>(codes + kl.scales_offset()),
                                               reinterpret_cast<f16_t*>(codes + kl.zeros_offset()));
        if (!s.ok()) {
          (void)l.quant.resize(r0);
          return s;
        }
      }
    }
  } else {
    KVQ_RETURN_IF_ERROR(l.quant.resize(r0 + n));
    UniformParams p;
    p.bits = bits_;
    p.group_size = group_;
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < n_heads; ++h) {
        uint8_t* codes = l.quant.part(r0 + t, h);
        const Status s = quantize_uniform_row(x.data() + size_t(t) * row + size_t(h) * hd, hd, p, codes,
                                              reinterpret_cast<f16_t*>(codes + vl.scales_offset()),
                                              reinterpret_cast<f16_t*>(codes + vl.zeros_offset()));
        if (!s.ok()) {
          (void)l.quant.resize(r0);
          return s;
        }
      }
    }
  }
  l.window.pop_front(n);
  return ok_status();
}

Status KiviStore::end_step_layer(int il) {
  Layer& l = layers_[size_t(il)];
  const int w = l.window.size();
  if (role_ == KvRole::kKey) {
    if (residual_ > 0 && w >= residual_) KVQ_RETURN_IF_ERROR(flush(il, w / residual_ * residual_));
  } else if (w > residual_) {
    KVQ_RETURN_IF_ERROR(flush(il, w - residual_));
  }
  l.window.shrink(window_rows());  // after a prefill chunk, back to the steady window
  return ok_status();
}

Status KiviStore::end_step() {
  for (int il = 0; il < shape().n_layers; ++il) KVQ_RETURN_IF_ERROR(end_step_layer(il));
  return ok_status();
}

Status KiviStore::append(int il, int n, const float* x) {
  Layer& l = layers_[size_t(il)];
  KVQ_RETURN_IF_ERROR(end_step_layer(il));
  KVQ_RETURN_IF_ERROR(l.window.push_f16(x, n, window_rows(), "kivi K/V"));
  if (eager_ || residual_ == 0) {
    // Simulated quantization: everything quantized now (keys in whole G-token groups; a
    // trailing partial group stays fp16 until it fills).
    const int now = l.window.size();
    const int q = role_ == KvRole::kKey ? now / group_ * group_ : now;
    if (q > 0) KVQ_RETURN_IF_ERROR(flush(il, q));
  }
  return ok_status();
}

void KiviStore::read(int il, int kvh, int t0, int n, float* out) const {
  const Layer& l = layers_[size_t(il)];
  const size_t hd = size_t(shape().head_dim);
  const KiviKeyBlockLayout kl = key_layout();
  const UniformRowLayout vl = value_layout();
  const int nq = quantized_tokens(l);
  for (int i = 0; i < n; ++i) {
    const int t = t0 + i;
    float* o = out + size_t(i) * hd;
    if (role_ == KvRole::kKey && t < nq && t % group_ == 0 && i + group_ <= n) {
      // A whole G-token key block: one vectorized dequantization (codes stored token-major).
      const uint8_t* codes = l.quant.part(t / group_, kvh);
      dequantize_uniform_cols(codes, reinterpret_cast<const f16_t*>(codes + kl.scales_offset()),
                              reinterpret_cast<const f16_t*>(codes + kl.zeros_offset()), size_t(group_), hd, bits_, o,
                              hd);
      i += group_ - 1;
      continue;
    }
    if (t >= nq) {
      cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(l.window.row(t - nq)) + size_t(kvh) * hd, o, hd);
      continue;
    }
    if (role_ == KvRole::kKey) {
      const uint8_t* codes = l.quant.part(t / group_, kvh);
      const auto* scales = reinterpret_cast<const f16_t*>(codes + kl.scales_offset());
      const auto* zeros = reinterpret_cast<const f16_t*>(codes + kl.zeros_offset());
      const uint8_t* row_codes = codes + size_t(t % group_) * kl.row_bytes();
      for (size_t c = 0; c < hd; ++c) {
        const auto q = detail::uniform_group_q_stored(bits_, false, scales[c], zeros[c]);
        o[c] = detail::uniform_value(code_at(row_codes, bits_, c), q);
      }
    } else {
      const uint8_t* codes = l.quant.part(t, kvh);
      UniformParams p;
      p.bits = bits_;
      p.group_size = group_;
      dequantize_uniform_row(codes, reinterpret_cast<const f16_t*>(codes + vl.scales_offset()),
                             reinterpret_cast<const f16_t*>(codes + vl.zeros_offset()), hd, p, o);
    }
  }
}

Status KiviStore::truncate(int n) {
  for (size_t il = 0; il < layers_.size(); ++il) {
    Layer& l = layers_[il];
    const int nq = quantized_tokens(l);
    if (n >= nq) {
      l.window.truncate(n - nq);
    } else if (n == 0) {
      KVQ_RETURN_IF_ERROR(l.quant.resize(0));
      l.window.truncate(0);
    } else if (role_ == KvRole::kValue) {
      KVQ_RETURN_IF_ERROR(l.quant.resize(n));
      l.window.truncate(0);
    } else {
      return unimplemented("truncating a kivi key cache inside its quantized blocks (to " +
                           std::to_string(n) + " of " + std::to_string(nq) + " quantized tokens)");
    }
  }
  return ok_status();
}

Status KiviStore::check_shift(int n_keep, int n_drop, bool rerotate) const {
  if (role_ == KvRole::kValue) return ok_status();
  return unimplemented("context shift with kivi keys: they are stored after RoPE and quantized per channel in "
                       "blocks of " + std::to_string(group_) + " tokens, so moving them would re-quantize them; "
                       "use kvquant keys (stored before RoPE) or f16 keys");
}

void KiviStore::shift(int n_keep, int n_drop, const Rope* rope) {
  for (auto& l : layers_) {
    const int nq = l.quant.n_tokens();  // values: one record per token
    const int in_quant = std::clamp(nq - n_keep, 0, n_drop);
    if (in_quant > 0) l.quant.erase(n_keep, in_quant);
    if (n_drop > in_quant) l.window.erase(std::max(0, n_keep - nq), n_drop - in_quant);
  }
}

size_t KiviStore::bytes_used() const {
  size_t b = 0;
  for (const auto& l : layers_) b += l.quant.bytes() + l.window.bytes();
  return b;
}

size_t KiviStore::bytes_for(int n) const {
  // What n tokens hold after a step (the bits accounting's rule, quant/bits_accounting.cc):
  // keys are quantized R at a time (G at a time without a window, or when eager), values all
  // but the newest R; the window's ring is window_rows() once a token is held.
  const size_t row = shape().row_values();
  const bool all = eager_ || residual_ == 0;
  const int block = role_ == KvRole::kKey ? (all ? group_ : residual_) : 1;
  const int nq = role_ == KvRole::kKey ? n / block * block : n - (all ? 0 : std::min(n, residual_));
  const PagedRows& pr = layers_[0].quant;
  const size_t q = role_ == KvRole::kKey ? pr.bytes_for(nq / group_) : pr.bytes_for(nq);
  const size_t w = n > 0 ? size_t(window_rows()) * row * sizeof(f16_t) : 0;
  return (q + w) * layers_.size();
}

struct KiviStore::State : KvStoreState {
  std::vector<Layer> layers;
};

void KiviStore::write_state(ByteWriter& w) const {
  for (const auto& l : layers_) {
    l.quant.write(w);
    l.window.write(w);
  }
}

StatusOr<std::unique_ptr<KvStoreState>> KiviStore::read_state(ByteReader& r, int n) const {
  auto st = std::make_unique<State>();
  const bool keys = role_ == KvRole::kKey;
  for (size_t il = 0; il < layers_.size(); ++il) {
    const std::string what = name() + " layer " + std::to_string(il);
    Layer l;
    l.quant = layers_[il].quant.like();
    l.window = RowRing(pool(), shape().row_values() * sizeof(f16_t));
    KVQ_RETURN_IF_ERROR(l.quant.read(r, 0, keys ? n / group_ : n, what + (keys ? " key blocks" : " values")));
    const int in_window = n - quantized_tokens(l);
    KVQ_RETURN_IF_ERROR(l.window.read(r, in_window, std::max(shape().n_ctx, window_rows()), what + " window"));
    st->layers.push_back(std::move(l));
  }
  return std::unique_ptr<KvStoreState>(std::move(st));
}

void KiviStore::install_state(std::unique_ptr<KvStoreState> state) {
  auto* st = dynamic_cast<State*>(state.get());
  KVQ_CHECK(st && st->layers.size() == layers_.size());
  layers_ = std::move(st->layers);
}

}  // namespace kvq

namespace kvq {

KvStoreView KiviStore::view(int il) const {
  const Layer& l = layers_[size_t(il)];
  const int hd = shape().head_dim;
  const KiviKeyBlockLayout kl = key_layout();
  const UniformRowLayout vl = value_layout();
  const int nq = quantized_tokens(l);
  KvStoreView v;
  v.n_tokens = n_tokens(il);
  if (nq > 0) {
    KvSegment& seg = v.add();
    seg.n = nq;
    seg.pages = l.quant.pages();
    KvRun& p = seg.proto;
    p.head_dim = hd;
    p.bits = bits_;
    if (role_ == KvRole::kKey) {
      // One page per G-token block of KiviKeyBlockLayout per head; its scales and zeros serve
      // the whole block.
      seg.page_tokens = group_;
      seg.token_stride = kl.row_bytes();
      seg.head_stride = kl.bytes();
      seg.meta_off = kl.scales_offset();
      seg.meta_head_step = ptrdiff_t(kl.bytes());
      seg.meta_stride = 0;
      p.format = KvFormat::kUniformCols;
      p.zeros_off = ptrdiff_t(kl.zeros_offset() - kl.scales_offset());
    } else {
      // Head-major pages of UniformRowLayout records per token and head.
      seg.page_tokens = l.quant.page_records();
      seg.token_stride = vl.bytes();
      seg.head_stride = l.quant.head_stride();
      seg.meta_off = vl.scales_offset();
      seg.meta_head_step = ptrdiff_t(seg.head_stride);
      seg.meta_stride = seg.token_stride;
      p.format = KvFormat::kUniformRow;
      p.group = group_;
      p.zeros_off = ptrdiff_t(vl.zeros_offset() - vl.scales_offset());
    }
  }
  const uint8_t* base[2];
  int count[2];
  for (int k = 0, t0 = nq, n = l.window.pieces(base, count); k < n; t0 += count[k++]) {
    v.add() = f16_window_segment(t0, count[k], shape().n_kv_heads, hd, base[k]);
  }
  return v;
}

}  // namespace kvq
