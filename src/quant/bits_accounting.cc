// SPDX-License-Identifier: MIT
#include "quant/bits_accounting.h"

#include <algorithm>
#include <cstdio>

#include "quant/kv_layout.h"
#include "quant/outlier_layout.h"
#include "quant/outliers.h"

namespace kvq {
namespace {

Status check_tensor(const TensorQuantConfig& t, int head_dim, int d_kv) {
  switch (t.scheme) {
    case KvScheme::kF16:
      if (t.bits != 16 && t.bits != 32) return invalid_argument("full-precision scheme needs bits = 16 or 32");
      break;
    case KvScheme::kUniform:
      if (!is_packable_bits(t.bits)) return invalid_argument("uniform: bits must be 2, 3, 4 or 8");
      if (t.group_size < 0) return invalid_argument("uniform: negative group size");
      if (t.per_channel && t.group_size <= 0) return invalid_argument("uniform per-channel needs G > 0");
      if (t.per_channel && t.residual > 0 && t.residual % t.group_size != 0) {
        return invalid_argument("KIVI: residual length must be a multiple of the group size");
      }
      break;
    case KvScheme::kNuq:
    case KvScheme::kNf:
      if (!t.head_bits.empty()) {
        if (!t.layer_bits.empty()) return invalid_argument("nuq/nf: widths per layer and per head at once");
        for (int b : t.head_bits) {
          if (b < 2 || b > 4) return invalid_argument("nuq/nf: every head's bits must be 2, 3 or 4");
        }
        break;
      }
      if (!t.layer_bits.empty()) {
        for (int b : t.layer_bits) {
          if (b < 2 || b > 4) return invalid_argument("nuq/nf: every layer's bits must be 2, 3 or 4");
        }
        break;
      }
      if (t.bits == 0) {
        return invalid_argument("per-layer widths (kvquant-mixed) come from the calibration file: pass "
                                "--calib FILE written by 'kvq calibrate --bits-budget B'");
      }
      if (t.bits < 2 || t.bits > 4) return invalid_argument("nuq/nf: bits must be 2, 3 or 4");
      break;
    case KvScheme::kQ8_0:
    case KvScheme::kQ4_0:
      if (d_kv % 32 != 0) return invalid_argument("q8_0/q4_0: d_kv must be a multiple of 32");
      break;
  }
  if ((!t.layer_bits.empty() || !t.head_bits.empty()) && t.scheme != KvScheme::kNuq && t.scheme != KvScheme::kNf) {
    return invalid_argument("per-layer widths are for the codebook (kvquant) formats only");
  }
  if (!(t.outlier_fraction >= 0 && t.outlier_fraction < 1)) return invalid_argument("outlier fraction not in [0, 1)");
  if (t.residual < 0) return invalid_argument("negative residual length");
  return ok_status();
}

TensorBytes account_tensor(const TensorQuantConfig& t, const CacheConfig& c, int64_t n,
                           bool is_key) {
  const double L = c.n_layers, H = c.n_kv_heads, D = c.head_dim, d_kv = H * D;
  TensorBytes b;
  const int64_t n_sink = std::min<int64_t>(n, c.n_sink);
  const int64_t n_eff = n - n_sink;
  b.sink = double(n_sink) * d_kv * 2 * L;
  int64_t n_q = n_eff;
  if (t.residual > 0) {
    n_q = t.flush_in_blocks ? n_eff / t.residual * t.residual : std::max<int64_t>(n_eff - t.residual, 0);
  }
  if (t.scheme == KvScheme::kUniform && t.per_channel) n_q = n_q / t.group_size * t.group_size;
  // The ring is allocated with the first token past the sinks (KIVI has none).
  const int64_t window = t.window_rows > 0 && n_eff > 0 ? std::max<int64_t>(t.window_rows, n_eff - n_q) : n_eff - n_q;
  b.fp16_window = double(window) * d_kv * 2 * L;
  // Capacity: per-token records live in pages of kKvPageTokens (kv/paged_rows.h), so a page
  // begun is a page allocated. KIVI's per-channel key groups are records of their own (pages
  // of one group): exact. Outliers below count their expected number per token.
  const bool group_records = t.scheme == KvScheme::kUniform && t.per_channel;
  const int64_t n_rec = group_records ? n_q : (n_q + kKvPageTokens - 1) / kKvPageTokens * kKvPageTokens;
  const double nq = double(n_rec);
  // Codes, scales and zero points: the records' layouts (quant/kv_layout.h), as the stores
  // allocate them.
  const size_t hd = size_t(c.head_dim);
  switch (t.scheme) {
    case KvScheme::kF16:  // f16, or f32 with bits = 32
      b.codes = nq * H * double(DenseRowLayout{t.bits, hd}.part_bytes()) * L;
      break;
    case KvScheme::kUniform: {
      double records = 0, codes = 0, meta = 0;
      if (t.per_channel) {  // KIVI keys: a record per head and block of G tokens
        const KiviKeyBlockLayout lay{t.bits, hd, t.group_size};
        records = nq / t.group_size * H;
        codes = double(lay.codes_bytes());
        meta = double(lay.meta_bytes());
      } else {  // a record per token and head (KIVI values) or per token (int-b, the whole vector)
        const UniformRowLayout lay{t.bits, t.whole_vector ? size_t(d_kv) : hd, t.group_size};
        records = t.whole_vector ? nq : nq * H;
        codes = double(lay.codes_bytes());
        meta = double(lay.meta_bytes());
      }
      b.codes = records * codes * L;
      b.scales = b.zeros = records * meta / 2 * L;  // fp16 scales, then as many zero points
      break;
    }
    case KvScheme::kNuq:
    case KvScheme::kNf: {
      const CodebookRecordLayout lay{t.bits, hd, t.per_channel ? 0 : t.norm8 ? 8 : 16};
      b.codes = nq * H * double(lay.part_bytes()) * L;
      if (t.per_channel) {
        b.per_layer += d_kv * 4 * L;  // fp16 zero + half-range per channel
      } else {
        b.scales = b.zeros = nq * double(lay.norm_bytes()) / 2 * L;  // half-range and zero point per token
      }
      if (t.scheme == KvScheme::kNuq) b.per_layer += double(1 << t.bits) * 4 * L;
      if (t.qnorm) b.per_layer += 8 * L;
      if (t.outlier_fraction > 0) {
        double per_token;
        if (t.per_channel) {
          per_token = is_key && c.key_outliers_per_token >= 0 ? c.key_outliers_per_token
                                                             : t.outlier_fraction * d_kv;
        } else {
          per_token = 2.0 * double(outliers_per_side(size_t(d_kv), t.outlier_fraction));
        }
        // The cache's page layout (quant/outlier_layout.h, its widths follow the shape): a full
        // page sealed (a value and a cell per outlier; its capacity word and n_kv_heads + 1
        // head pointers), the newest page growing (a value and an index per outlier; its
        // capacity word and kKvPageTokens + 1 row pointers).
        const OutlierLayout lay = OutlierLayout::for_rows(c.n_kv_heads, c.head_dim, kKvPageTokens);
        const bool seal = lay.can_seal(kKvPageTokens);
        const int64_t full_rows = seal ? n_q / kKvPageTokens * kKvPageTokens : 0, part_rows = n_q - full_rows;
        const double part_pages = double((part_rows + kKvPageTokens - 1) / kKvPageTokens);
        const double rows = double(n_q);  // tokens stored, not page capacity
        b.outlier_values = rows * per_token * double(OutlierLayout::kValBytes) * L;
        b.outlier_indices = (double(full_rows) * double(OutlierLayout::kCellBytes) + double(part_rows) * double(lay.idx_bytes)) *
                            per_token * L;
        b.outlier_pointers = (double(full_rows / kKvPageTokens) * double(lay.sealed_block_bytes(0)) +
                              part_pages * double(lay.block_bytes(kKvPageTokens, 0))) *
                             L;
      }
      break;
    }
    case KvScheme::kQ8_0:
    case KvScheme::kQ4_0: {
      const GgmlRowLayout lay{t.scheme == KvScheme::kQ8_0 ? 8 : 4, hd};
      b.codes = nq * H * double(lay.codes_bytes()) * L;
      b.scales = nq * H * double(lay.scales_bytes()) * L;
      break;
    }
  }
  return b;
}

// Per-layer widths: the sum of one-layer caches, each at its own width. Widths per head: each
// layer as a one-layer cache whose codes are summed head by head (a one-head cache's codes at
// the head's width) and whose codebooks are those of the widths its heads use.
TensorBytes account_layers(const TensorQuantConfig& t, const CacheConfig& c, int64_t n, bool is_key) {
  if (t.layer_bits.empty() && t.head_bits.empty()) return account_tensor(t, c, n, is_key);
  TensorQuantConfig one = t;
  one.layer_bits.clear();
  one.head_bits.clear();
  CacheConfig layer = c;
  layer.n_layers = 1;
  CacheConfig head = layer;
  head.n_kv_heads = 1;
  const size_t H = size_t(c.n_kv_heads);
  std::vector<int> widths = t.layer_bits;  // one per layer
  if (!t.head_bits.empty()) {
    for (size_t il = 0; il < size_t(c.n_layers); ++il) widths.push_back(t.head_bits[il * H]);
  }
  TensorBytes sum;
  for (size_t il = 0; il < widths.size(); ++il) {
    one.bits = widths[il];
    TensorBytes l = account_tensor(one, layer, n, is_key);
    if (!t.head_bits.empty()) {
      const auto* hb = &t.head_bits[il * H];
      const auto codebook = [&](int b) { return t.scheme == KvScheme::kNuq ? double(1 << b) * 4 : 0.0; };
      l.codes = 0;
      l.per_layer -= codebook(widths[il]);
      for (size_t h = 0; h < H; ++h) {
        one.bits = hb[h];
        l.codes += account_tensor(one, head, n, is_key).codes;
        if (std::find(hb, hb + h, hb[h]) == hb + h) l.per_layer += codebook(hb[h]);
      }
    }
    sum.codes += l.codes;
    sum.scales += l.scales;
    sum.zeros += l.zeros;
    sum.outlier_values += l.outlier_values;
    sum.outlier_indices += l.outlier_indices;
    sum.outlier_pointers += l.outlier_pointers;
    sum.fp16_window += l.fp16_window;
    sum.sink += l.sink;
    sum.per_layer += l.per_layer;
  }
  return sum;
}

void append(std::string& s, const char* name, const TensorBytes& b, double n_values) {
  char line[512];
  const double f = 8.0 / n_values;  // bytes -> bits per value (of K+V)
  std::snprintf(line, sizeof line,
                "%s: %.4f bits/value of K+V (codes %.4f, scales %.4f, zeros %.4f, outlier "
                "values %.4f, indices %.4f, pointers %.4f, fp16 window %.4f, sink %.4f, "
                "per-layer %.6f)\n",
                name, b.total() * f, b.codes * f, b.scales * f, b.zeros * f,
                b.outlier_values * f, b.outlier_indices * f, b.outlier_pointers * f,
                b.fp16_window * f, b.sink * f, b.per_layer * f);
  s += line;
}

}  // namespace

std::string BitsReport::to_string() const {
  std::string s;
  char head[128];
  std::snprintf(head, sizeof head, "%lld tokens: %.4f bits/value, %.1f bytes\n",
                (long long)n_tokens, bits_per_value(), total_bytes());
  s += head;
  if (n_values) {
    append(s, "K", k, double(n_values));
    append(s, "V", v, double(n_values));
  }
  return s;
}

StatusOr<BitsReport> account_bits(const CacheConfig& c, int64_t n_tokens) {
  if (c.n_layers <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0) {
    return invalid_argument("bits accounting: n_layers, n_kv_heads and head_dim must be positive");
  }
  if (n_tokens < 0 || c.n_sink < 0) return invalid_argument("bits accounting: negative token count");
  const int d_kv = c.n_kv_heads * c.head_dim;
  KVQ_RETURN_IF_ERROR(check_tensor(c.k, c.head_dim, d_kv).with_context("keys"));
  KVQ_RETURN_IF_ERROR(check_tensor(c.v, c.head_dim, d_kv).with_context("values"));
  for (const auto* t : {&c.k, &c.v}) {
    if (!t->layer_bits.empty() && t->layer_bits.size() != size_t(c.n_layers)) {
      return invalid_argument("bits accounting: " + std::to_string(t->layer_bits.size()) + " per-layer widths for " +
                              std::to_string(c.n_layers) + " layers");
    }
    if (!t->head_bits.empty() && t->head_bits.size() != size_t(c.n_layers) * size_t(c.n_kv_heads)) {
      return invalid_argument("bits accounting: " + std::to_string(t->head_bits.size()) + " per-head widths for " +
                              std::to_string(c.n_layers) + " layers of " + std::to_string(c.n_kv_heads) + " KV heads");
    }
  }
  BitsReport r;
  r.n_tokens = n_tokens;
  r.n_values = 2 * n_tokens * int64_t(c.n_layers) * d_kv;
  r.k = account_layers(c.k, c, n_tokens, true);
  r.v = account_layers(c.v, c, n_tokens, false);
  return r;
}

CacheConfig kivi_config(int n_layers, int n_kv_heads, int head_dim, int bits, int group_size,
                        int residual) {
  CacheConfig c;
  c.n_layers = n_layers;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.k.scheme = c.v.scheme = KvScheme::kUniform;
  c.k.bits = c.v.bits = bits;
  c.k.group_size = c.v.group_size = group_size;
  c.k.residual = c.v.residual = residual;
  c.k.window_rows = kivi_window_rows(true, residual, group_size);
  c.v.window_rows = kivi_window_rows(false, residual, group_size);
  c.k.per_channel = true;
  c.k.flush_in_blocks = true;
  return c;
}

void set_kvquant_window(TensorQuantConfig* t, int residual) {
  t->residual = residual;
  t->flush_in_blocks = false;
  t->window_rows = kvquant_window_rows(residual);
}

CacheConfig kvquant_config(int n_layers, int n_kv_heads, int head_dim, int bits,
                           double outlier_fraction, int n_sink, bool nf) {
  CacheConfig c;
  c.n_layers = n_layers;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.k.scheme = c.v.scheme = nf ? KvScheme::kNf : KvScheme::kNuq;
  c.k.bits = c.v.bits = bits;
  c.k.per_channel = true;
  c.k.outlier_fraction = c.v.outlier_fraction = outlier_fraction;
  c.n_sink = n_sink;
  return c;
}

}  // namespace kvq
