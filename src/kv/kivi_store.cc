// SPDX-License-Identifier: MIT
#include "kv/kivi_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "quant/uniform_group.h"
#include "quant/uniform_group_math.h"

namespace kvq {

StatusOr<std::unique_ptr<KvStore>> KiviStore::make(const KvCacheShape& shape, KvRole role,
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
  return std::unique_ptr<KvStore>(new KiviStore(shape, role, bits, group_size, residual));
}

KiviStore::KiviStore(const KvCacheShape& shape, KvRole role, int bits, int group_size, int residual)
    : KvStore(shape), role_(role), bits_(bits), group_(group_size), residual_(residual) {
  layers_.resize(size_t(shape.n_layers));
  // Keys: one G-token block per page, so allocation follows the tokens held.
  for (auto& l : layers_) {
    l.quant = role == KvRole::kKey ? PagedRows(key_head_bytes(), shape.n_kv_heads, 0, 1)
                                   : PagedRows(value_head_bytes(), shape.n_kv_heads, 0);
  }
}

std::string KiviStore::name() const {
  return "kivi-" + std::to_string(bits_) + ":g=" + std::to_string(group_) + ":r=" + std::to_string(residual_);
}

// Key block layout, per head: codes [G rows of packed_bytes(bits, head_dim)], then fp16
// scales [head_dim], then fp16 zeros [head_dim].
size_t KiviStore::key_head_bytes() const {
  const size_t hd = size_t(shape().head_dim);
  return size_t(group_) * packed_bytes(bits_, hd) + 4 * hd;
}
// Value token layout, per head: codes packed_bytes(bits, head_dim), fp16 scales [hd/G], zeros [hd/G].
size_t KiviStore::value_head_bytes() const {
  const size_t hd = size_t(shape().head_dim);
  return packed_bytes(bits_, hd) + 4 * (hd / size_t(group_));
}

int KiviStore::quantized_tokens(const Layer& l) const {
  return role_ == KvRole::kKey ? l.quant.n_tokens() * group_ : l.quant.n_tokens();
}

int KiviStore::n_tokens(int il) const {
  const Layer& l = layers_[size_t(il)];
  return quantized_tokens(l) + int(l.window.size() / shape().row_values());
}

Status KiviStore::flush(int il, int n) {
  Layer& l = layers_[size_t(il)];
  const size_t row = shape().row_values(), hd = size_t(shape().head_dim);
  const int n_heads = shape().n_kv_heads;
  std::vector<float> x(size_t(n) * row);
  cpu::convert_f16_to_f32(l.window.data(), x.data(), x.size());
  const int r0 = l.quant.n_tokens();
  if (role_ == KvRole::kKey) {
    const int n_blocks = n / group_;
    KVQ_RETURN_IF_ERROR(l.quant.resize(r0 + n_blocks));
    for (int b = 0; b < n_blocks; ++b) {
      for (int h = 0; h < n_heads; ++h) {
        uint8_t* codes = l.quant.part(r0 + b, h);
        auto* scales = reinterpret_cast<f16_t*>(codes + size_t(group_) * packed_bytes(bits_, hd));
        // Block of G tokens x head_dim channels; one min-max group per channel (KIVI §1.2).
        const Status s = quantize_uniform_cols(x.data() + size_t(b) * group_ * row + size_t(h) * hd,
                                               size_t(group_), hd, row, bits_, codes, scales, scales + hd);
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
        auto* scales = reinterpret_cast<f16_t*>(codes + packed_bytes(bits_, hd));
        const Status s = quantize_uniform_row(x.data() + size_t(t) * row + size_t(h) * hd, hd, p,
                                              codes, scales, scales + hd / size_t(group_));
        if (!s.ok()) {
          (void)l.quant.resize(r0);
          return s;
        }
      }
    }
  }
  l.window.erase(l.window.begin(), l.window.begin() + ptrdiff_t(size_t(n) * row));
  return ok_status();
}

Status KiviStore::end_step_layer(int il) {
  Layer& l = layers_[size_t(il)];
  const int w = int(l.window.size() / shape().row_values());
  if (role_ == KvRole::kKey) {
    if (residual_ > 0 && w >= residual_) KVQ_RETURN_IF_ERROR(flush(il, w / residual_ * residual_));
  } else if (w > residual_) {
    KVQ_RETURN_IF_ERROR(flush(il, w - residual_));
  }
  if (l.window.capacity() != l.window.size()) l.window.shrink_to_fit();
  return ok_status();
}

Status KiviStore::end_step() {
  for (int il = 0; il < shape().n_layers; ++il) KVQ_RETURN_IF_ERROR(end_step_layer(il));
  return ok_status();
}

Status KiviStore::append(int il, int n, const float* x) {
  Layer& l = layers_[size_t(il)];
  const size_t row = shape().row_values();
  KVQ_RETURN_IF_ERROR(end_step_layer(il));
  const size_t old = l.window.size();
  l.window.resize(old + size_t(n) * row);
  cpu::convert_f32_to_f16(x, l.window.data() + old, size_t(n) * row);
  for (size_t i = 0; i < size_t(n) * row; ++i) {
    if (!std::isfinite(x[i])) {
      l.window.resize(old);
      return invalid_argument("kivi: non-finite K/V value");
    }
  }
  if (eager_ || residual_ == 0) {
    // Simulated quantization: everything quantized now (keys in whole G-token groups; a
    // trailing partial group stays fp16 until it fills).
    const int now = int(l.window.size() / row);
    const int q = role_ == KvRole::kKey ? now / group_ * group_ : now;
    if (q > 0) KVQ_RETURN_IF_ERROR(flush(il, q));
  }
  return ok_status();
}

void KiviStore::read(int il, int kvh, int t0, int n, float* out) const {
  const Layer& l = layers_[size_t(il)];
  const size_t hd = size_t(shape().head_dim), row = shape().row_values();
  const int nq = quantized_tokens(l);
  for (int i = 0; i < n; ++i) {
    const int t = t0 + i;
    float* o = out + size_t(i) * hd;
    if (role_ == KvRole::kKey && t < nq && t % group_ == 0 && i + group_ <= n) {
      // A whole G-token key block: one vectorized dequantization (codes stored token-major).
      const uint8_t* codes = l.quant.part(t / group_, kvh);
      const auto* scales = reinterpret_cast<const f16_t*>(codes + size_t(group_) * packed_bytes(bits_, hd));
      dequantize_uniform_cols(codes, scales, scales + hd, size_t(group_), hd, bits_, o, hd);
      i += group_ - 1;
      continue;
    }
    if (t >= nq) {
      cpu::convert_f16_to_f32(l.window.data() + size_t(t - nq) * row + size_t(kvh) * hd, o, hd);
      continue;
    }
    if (role_ == KvRole::kKey) {
      const uint8_t* codes = l.quant.part(t / group_, kvh);
      const auto* scales = reinterpret_cast<const f16_t*>(codes + size_t(group_) * packed_bytes(bits_, hd));
      const uint8_t* row_codes = codes + size_t(t % group_) * packed_bytes(bits_, hd);
      for (size_t c = 0; c < hd; ++c) {
        const auto q = detail::uniform_group_q_stored(bits_, false, scales[c], scales[hd + c]);
        o[c] = detail::uniform_value(code_at(row_codes, bits_, c), q);
      }
    } else {
      const uint8_t* codes = l.quant.part(t, kvh);
      const auto* scales = reinterpret_cast<const f16_t*>(codes + packed_bytes(bits_, hd));
      UniformParams p;
      p.bits = bits_;
      p.group_size = group_;
      dequantize_uniform_row(codes, scales, scales + hd / size_t(group_), hd, p, o);
    }
  }
}

Status KiviStore::truncate(int n) {
  const size_t row = shape().row_values();
  for (size_t il = 0; il < layers_.size(); ++il) {
    Layer& l = layers_[il];
    const int nq = quantized_tokens(l);
    if (n >= nq) {
      l.window.resize(std::min(l.window.size(), size_t(n - nq) * row));
    } else if (n == 0) {
      KVQ_RETURN_IF_ERROR(l.quant.resize(0));
      l.window.clear();
    } else if (role_ == KvRole::kValue) {
      KVQ_RETURN_IF_ERROR(l.quant.resize(n));
      l.window.clear();
    } else {
      return unimplemented("truncating a kivi key cache inside its quantized blocks (to " +
                           std::to_string(n) + " of " + std::to_string(nq) + " quantized tokens)");
    }
  }
  return ok_status();
}

size_t KiviStore::bytes_used() const {
  size_t b = 0;
  for (const auto& l : layers_) b += l.quant.bytes() + l.window.capacity() * sizeof(f16_t);
  return b;
}

size_t KiviStore::bytes_for(int n) const {
  // Steady state of decoding n tokens: keys keep up to R in fp16 (count R for sizing), values R.
  const size_t row = shape().row_values();
  const int win = std::min(n, residual_);
  const int nq = n - win;
  const PagedRows& pr = layers_[0].quant;
  const size_t q = role_ == KvRole::kKey ? pr.bytes_for((nq + group_ - 1) / group_) : pr.bytes_for(nq);
  return (q + size_t(win) * row * sizeof(f16_t)) * layers_.size();
}

}  // namespace kvq

namespace kvq {

KvStoreView KiviStore::view(int il) const {
  const Layer& l = layers_[size_t(il)];
  const int hd = shape().head_dim;
  const size_t row_bytes = packed_bytes(bits_, size_t(hd));
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
    seg.token_stride = row_bytes;
    if (role_ == KvRole::kKey) {
      // One page per G-token block; per head: G code rows, then fp16 scales [hd], zeros [hd]
      // for the whole block.
      seg.page_tokens = group_;
      seg.head_stride = key_head_bytes();
      seg.meta_off = size_t(group_) * row_bytes;
      seg.meta_head_step = ptrdiff_t(key_head_bytes());
      seg.meta_stride = 0;
      p.format = KvFormat::kUniformCols;
      p.zeros_off = 2 * hd;
    } else {
      // Head-major pages; per token and head: codes, then fp16 scales [hd / G], zeros [hd / G].
      seg.page_tokens = l.quant.page_records();
      seg.token_stride = value_head_bytes();
      seg.head_stride = l.quant.head_stride();
      seg.meta_off = row_bytes;
      seg.meta_head_step = ptrdiff_t(seg.head_stride);
      seg.meta_stride = seg.token_stride;
      p.format = KvFormat::kUniformRow;
      p.group = group_;
      p.zeros_off = 2 * (hd / group_);
    }
  }
  if (v.n_tokens > nq) {
    v.add() = f16_window_segment(nq, v.n_tokens - nq, shape().n_kv_heads, hd,
                                 reinterpret_cast<const uint8_t*>(l.window.data()));
  }
  return v;
}

}  // namespace kvq
