// SPDX-License-Identifier: MIT
#include "engine/calibrate.h"

#include <algorithm>
#include <cmath>

#include "kernels/ref/hadamard_ref.h"
#include "kernels/rope.h"
#include "base/check.h"
#include "base/printable.h"
#include "base/rng.h"
#include "kv/cache_spec.h"
#include "model/backward.h"
#include "quant/bitpack.h"
#include "quant/codebook.h"
#include "quant/kmeans.h"
#include "quant/normalize.h"
#include "quant/outliers.h"
#include "quant/qnorm.h"

namespace kvq {

const char* weighting_name(CodebookWeighting w) {
  switch (w) {
    case CodebookWeighting::kNone: return "none";
    case CodebookWeighting::kFisher: return "fisher";
    case CodebookWeighting::kFisherScale2: return "fisher-s2";
  }
  return "?";
}

StatusOr<CodebookWeighting> parse_weighting(std::string_view s) {
  if (s == "none") return CodebookWeighting::kNone;
  if (s == "fisher") return CodebookWeighting::kFisher;
  if (s == "fisher-s2") return CodebookWeighting::kFisherScale2;
  return invalid_argument("weighting must be none, fisher or fisher-s2, got '" + printable(s) + "'");
}

float percentile_sorted(std::span<const float> s, double p) {
  KVQ_CHECK(!s.empty(), "percentile of no values");  // callers check for empty columns
  const double pos = p / 100.0 * double(s.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(s.size() - 1, lo + 1);
  const double frac = pos - double(lo);
  return float(double(s[lo]) + (double(s[hi]) - double(s[lo])) * frac);
}

Status check_calibration_sinks(int sinks, int window) {
  if (sinks >= window) {
    return invalid_argument("sinks=" + std::to_string(sinks) + " leaves no token of a " + std::to_string(window) +
                            "-token calibration window to calibrate on: use fewer sinks or a longer window");
  }
  return ok_status();
}

StatusOr<KvActivations> KvActivations::capture(ExecContext& ctx, const LlamaModel& model,
                                               std::span<const int32_t> tokens,
                                               const CalibrationArgs& args,
                                               const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  if (args.n_windows < 1 || args.window < 2) return invalid_argument("calibration needs windows of >= 2 tokens");
  if (int64_t(tokens.size()) < args.window) {
    return invalid_argument("the calibration text has " + std::to_string(tokens.size()) +
                            " tokens, fewer than one window of " + std::to_string(args.window));
  }
  KvActivations a;
  a.args_ = args;
  a.n_layers_ = c.n_layers;
  a.n_kv_heads_ = c.n_kv_heads;
  a.head_dim_ = c.head_dim;
  a.rope_ = model.rope();  // the model's RoPE (mode, freq factors) for prerope=0 keys
  const size_t row = size_t(c.kv_dim());
  a.k_.assign(size_t(c.n_layers), std::vector<float>(size_t(a.n_tokens()) * row));
  a.v_.assign(size_t(c.n_layers), std::vector<float>(size_t(a.n_tokens()) * row));
  if (args.fisher) {
    a.fk_.assign(size_t(c.n_layers), std::vector<float>(size_t(a.n_tokens()) * row));
    a.fv_.assign(size_t(c.n_layers), std::vector<float>(size_t(a.n_tokens()) * row));
  }
  std::unique_ptr<LlamaGradient<float>> grad;
  if (args.fisher) {
    KVQ_RETURN_IF_ERROR(check_gradient_support(model));
    grad = std::make_unique<LlamaGradient<float>>(model);
  }
  const KvCacheShape shape = model.kv_shape(args.window);
  Rng rng(args.seed);
  ForwardWorkspace ws;
  std::vector<float> kb(size_t(args.window) * c.head_dim), vb(kb.size());
  for (int w = 0; w < args.n_windows; ++w) {
    // Seeded window starts; each window is fed as [BOS] + text, as the model was trained.
    const uint64_t start = rng.below(uint64_t(tokens.size()) - uint64_t(args.window) + 1);
    std::vector<int32_t> win(tokens.begin() + int64_t(start), tokens.begin() + int64_t(start) + args.window);
    win[0] = model.tokenizer().bos_id();
    if (grad) {
      // One backward pass gives the activations and F = g^2 for every element (§4.1).
      KVQ_ASSIGN_OR_RETURN(KvGradients<float> g, grad->compute(ctx, win));
      a.loss_ += g.loss / args.n_windows;
      const size_t off = size_t(w) * args.window * row;
      for (int il = 0; il < c.n_layers; ++il) {
        std::copy(g.k_act[size_t(il)].begin(), g.k_act[size_t(il)].end(), a.k_[size_t(il)].begin() + ptrdiff_t(off));
        std::copy(g.v_act[size_t(il)].begin(), g.v_act[size_t(il)].end(), a.v_[size_t(il)].begin() + ptrdiff_t(off));
        for (size_t i = 0; i < size_t(args.window) * row; ++i) {
          a.fk_[size_t(il)][off + i] = g.k[size_t(il)][i] * g.k[size_t(il)][i];
          a.fv_[size_t(il)][off + i] = g.v[size_t(il)][i] * g.v[size_t(il)][i];
        }
      }
      if (progress) progress(w + 1, args.n_windows);
      continue;
    }
    const std::unique_ptr<KvCache> captured = make_dense_cache(shape, DType::kF32, /*keys_pre_rope=*/true);
    KvCache& cache = *captured;
    KVQ_RETURN_IF_ERROR(prefill(ctx, model, win, cache, ws, nullptr, false, args.batch));
    for (int il = 0; il < c.n_layers; ++il) {
      for (int h = 0; h < c.n_kv_heads; ++h) {
        cache.read(il, h, 0, args.window, kb.data(), vb.data());
        for (int t = 0; t < args.window; ++t) {
          const size_t dst = (size_t(w) * args.window + t) * row + size_t(h) * c.head_dim;
          std::copy_n(&kb[size_t(t) * c.head_dim], c.head_dim, &a.k_[size_t(il)][dst]);
          std::copy_n(&vb[size_t(t) * c.head_dim], c.head_dim, &a.v_[size_t(il)][dst]);
        }
      }
    }
    if (progress) progress(w + 1, args.n_windows);
  }
  return a;
}

StatusOr<KvActivations> KvActivations::from_samples(int n_kv_heads, int head_dim, int rope_dim, float rope_base,
                                                    const CalibrationArgs& args, std::vector<std::vector<float>> k,
                                                    std::vector<std::vector<float>> v) {
  if (args.n_windows < 1 || args.window < 2 || args.fisher) {
    return invalid_argument("sample calibration needs windows of >= 2 tokens and no Fisher weighting");
  }
  const size_t n = size_t(args.n_windows) * size_t(args.window) * size_t(n_kv_heads) * size_t(head_dim);
  if (k.empty() || k.size() != v.size()) return invalid_argument("sample calibration needs K and V for every layer");
  for (size_t il = 0; il < k.size(); ++il) {
    if (k[il].size() != n || v[il].size() != n) {
      return invalid_argument("sample calibration: layer " + std::to_string(il) + " holds the wrong number of values");
    }
  }
  KvActivations a;
  a.args_ = args;
  a.n_layers_ = int(k.size());
  a.n_kv_heads_ = n_kv_heads;
  a.head_dim_ = head_dim;
  a.rope_ = Rope(head_dim, rope_dim, rope_base);
  a.k_ = std::move(k);
  a.v_ = std::move(v);
  return a;
}

namespace {

// What RotatedStore::make refuses, refused before any fitting.
Status check_calibration_rotation(const KvquantOptions& opts, int head_dim, bool keys) {
  if (!opts.rotate) return ok_status();
  if (!hadamard_size_ok(head_dim)) {
    return invalid_argument("rot=1 needs head_dim a power of two, this model's is " + std::to_string(head_dim));
  }
  if (keys && opts.pre_rope) return invalid_argument("rot=1 keys must be stored after RoPE (prerope=0)");
  return ok_status();
}

// Rows [n_rows, n_kv_heads * head_dim] of a rot=1 store as it stores them (kv/rotated_store.h).
// Codebooks are fitted on what is quantized, so calibration rotates its activations too.
void rotate_calibration_rows(float* x, size_t n_rows, int n_kv_heads, int head_dim) {
  std::vector<float> signs(static_cast<size_t>(head_dim));
  hadamard_signs(head_dim, signs.data());
  ref::hadamard_rows_ref(x, int(n_rows) * n_kv_heads, head_dim, signs.data(), false);
}

// The Fisher weight of element c of a rotated row from the squared gradients g^2 of the
// unrotated one (f: the row). Capture keeps gradients squared, so (R g)_c^2 is not known; over
// the random signs of R its mean is the head's mean of g^2, which is what we use.
float rotated_fisher(const float* f, size_t c, int head_dim) {
  const size_t h0 = c - c % size_t(head_dim);
  double sum = 0;
  for (size_t i = h0; i < h0 + size_t(head_dim); ++i) sum += f[i];
  return float(sum / head_dim);
}

// The codebook for normalized inliers xhat (k-means for nuq), with Q-Norm when asked.
// Also fits Q-Norm for the codebook into *qn (applied to the result only when opts.qnorm).
StatusOr<Codebook> fit_codebook(const KvquantOptions& opts, const std::vector<float>& xhat,
                                const std::vector<float>& weights, uint64_t seed, QNorm* qn) {
  Codebook cb;
  switch (opts.codebook) {
    case CodebookKind::kNf: cb = make_nf_codebook(opts.bits); break;
    case CodebookKind::kUniform: {
      KVQ_ASSIGN_OR_RETURN(cb, make_uniform_codebook(opts.bits));
      break;
    }
    case CodebookKind::kNuq: {
      if (xhat.size() < (size_t(1) << opts.bits)) return invalid_argument("too few calibration values for k-means");
      const std::vector<float> ones(weights.empty() ? xhat.size() : 0, 1.0f);
      const std::vector<float>& w = weights.empty() ? ones : weights;
      KMeansOptions ko;
      ko.k = 1 << opts.bits;
      ko.max_iter = 50;  // as KVQuant's sklearn call (§4.3)
      ko.seed = seed;
      KVQ_ASSIGN_OR_RETURN(KMeansResult km, kmeans_1d(xhat, w, ko));
      KVQ_ASSIGN_OR_RETURN(cb, make_codebook(opts.bits, km.centroids));
      break;
    }
  }
  KVQ_ASSIGN_OR_RETURN(*qn, fit_qnorm(xhat.data(), xhat.size(), cb));
  if (opts.qnorm) cb = apply_qnorm(cb, *qn);
  return cb;
}

// kvquant-mixed has no width of its own to fit: its per-layer widths are chosen by
// `kvq calibrate --bits-budget` and read from the file.
Status mixed_width_error() {
  return invalid_argument("kvquant-mixed takes each layer's width from a calibration file written by "
                          "'kvq calibrate --bits-budget B' (pass --calib FILE); --calib auto fits one width for all layers");
}

}  // namespace

std::vector<float> KvActivations::calibration_keys(const KvquantOptions& opts, int il, std::vector<int>* kept) const {
  const size_t row = size_t(n_kv_heads_) * size_t(head_dim_);
  // ggml's angles of the window positions, for keys calibrated after RoPE (prerope=0).
  const Rope& rope = rope_;
  const int rope_dim = rope.rope_dim();
  std::vector<float> rope_cs;
  if (!opts.pre_rope) {
    rope_cs.resize(size_t(args_.window) * size_t(rope_dim));
    rope.ggml_angles(0, args_.window, rope_cs.data());
  }
  // Calibration keys: pre-RoPE, or rotated to their window positions for prerope=0.
  kept->clear();
  for (int w = 0; w < args_.n_windows; ++w) {
    for (int t = std::min(opts.sinks, args_.window); t < args_.window; ++t) kept->push_back(w * args_.window + t);
  }
  std::vector<float> keys(kept->size() * row);
  for (size_t i = 0; i < kept->size(); ++i) {
    const int k = (*kept)[i];
    std::copy_n(&k_[size_t(il)][size_t(k) * row], row, &keys[i * row]);
    if (!opts.pre_rope) {
      rope.rotate_rows(&keys[i * row], 1, n_kv_heads_, &rope_cs[size_t(k % args_.window) * size_t(rope_dim)]);
    }
  }
  if (opts.rotate) rotate_calibration_rows(keys.data(), kept->size(), n_kv_heads_, head_dim_);
  return keys;
}

StatusOr<KvquantParams> KvActivations::key_params(const KvquantOptions& opts, CodebookWeighting weighting,
                                                  const std::function<void(int)>& layer_done) const {
  if (weighting != CodebookWeighting::kNone && !has_fisher()) {
    return invalid_argument("Fisher-weighted codebooks need activations captured with fisher");
  }
  // Sinks are excluded from every statistic: with none left the columns would be empty.
  KVQ_RETURN_IF_ERROR(check_calibration_sinks(opts.sinks, args_.window));
  KVQ_RETURN_IF_ERROR(check_calibration_rotation(opts, head_dim_, true));
  if (opts.bits < 2 || opts.bits > 4) return mixed_width_error();
  const size_t row = size_t(n_kv_heads_) * size_t(head_dim_);
  KvquantParams out;
  std::vector<float> col;
  for (int il = 0; il < n_layers_; ++il) {
    std::vector<int> kept;
    const std::vector<float> keys = calibration_keys(opts, il, &kept);
    KvquantLayerParams lp;
    lp.upper.resize(row);
    lp.lower.resize(row);
    // Per-channel thresholds at the percentiles the outlier fraction implies (§1.1, §2).
    const double tail = 100.0 * opts.outliers / 2.0;
    col.resize(kept.size());
    for (size_t c = 0; c < row; ++c) {
      for (size_t i = 0; i < kept.size(); ++i) col[i] = keys[i * row + c];
      std::sort(col.begin(), col.end());
      lp.lower[c] = percentile_sorted(col, tail);
      lp.upper[c] = percentile_sorted(col, 100.0 - tail);
    }
    KVQ_ASSIGN_OR_RETURN(ChannelNorm norm, make_channel_norm(lp.upper.data(), lp.lower.data(), row));
    std::vector<float> xhat, wts;
    xhat.reserve(keys.size());
    for (size_t i = 0; i < kept.size(); ++i) {
      for (size_t c = 0; c < row; ++c) {
        const float x = (keys[i * row + c] - norm.zero_f[c]) * norm.inv_f[c];
        if (std::fabs(x) > 1.0f) continue;
        xhat.push_back(x);
        if (weighting == CodebookWeighting::kNone) continue;
        const float* fr = &fk_[size_t(il)][size_t(kept[i]) * row];
        const float f = opts.rotate ? rotated_fisher(fr, c, head_dim_) : fr[c];
        wts.push_back(weighting == CodebookWeighting::kFisher ? f : f * norm.half_f[c] * norm.half_f[c]);
      }
    }
    KVQ_ASSIGN_OR_RETURN(lp.codebook, fit_codebook(opts, xhat, wts, args_.seed + uint64_t(il), &lp.qnorm));
    out.layers.push_back(std::move(lp));
    if (layer_done) layer_done(il);
  }
  return out;
}

StatusOr<KvquantParams> KvActivations::value_params(const KvquantOptions& opts, CodebookWeighting weighting,
                                                    const std::function<void(int)>& layer_done) const {
  if (weighting != CodebookWeighting::kNone && !has_fisher()) {
    return invalid_argument("Fisher-weighted codebooks need activations captured with fisher");
  }
  KVQ_RETURN_IF_ERROR(check_calibration_sinks(opts.sinks, args_.window));
  KVQ_RETURN_IF_ERROR(check_calibration_rotation(opts, head_dim_, false));
  if (opts.bits < 2 || opts.bits > 4) return mixed_width_error();
  const size_t row = size_t(n_kv_heads_) * size_t(head_dim_);
  const size_t k = opts.outliers > 0.0 ? outliers_per_side(row, opts.outliers) : 0;
  KvquantParams out;
  std::vector<float> sorted(row), rotated;
  for (int il = 0; il < n_layers_; ++il) {
    const std::vector<float>* values = &v_[size_t(il)];
    if (opts.rotate) {
      rotated = *values;
      rotate_calibration_rows(rotated.data(), rotated.size() / row, n_kv_heads_, head_dim_);
      values = &rotated;
    }
    std::vector<float> xhat, wts;
    for (int w = 0; w < args_.n_windows; ++w) {
      for (int t = std::min(opts.sinks, args_.window); t < args_.window; ++t) {
        const size_t base = (size_t(w) * args_.window + t) * row;
        const float* x = &(*values)[base];
        // Online per-token range (§3): the (k+1)-th largest and smallest values.
        std::copy_n(x, row, sorted.begin());
        std::sort(sorted.begin(), sorted.end());
        const NormF nf = norm_float(norm_from_thresholds(sorted[row - 1 - k], sorted[k]));
        for (size_t i = 0; i < row; ++i) {
          if (x[i] < sorted[k] || x[i] > sorted[row - 1 - k]) continue;
          const float xh = (x[i] - nf.zero) * nf.inv;
          if (std::fabs(xh) > 1.0f) continue;
          xhat.push_back(xh);
          if (weighting == CodebookWeighting::kNone) continue;
          const float f = opts.rotate ? rotated_fisher(&fv_[size_t(il)][base], i, head_dim_) : fv_[size_t(il)][base + i];
          wts.push_back(weighting == CodebookWeighting::kFisher ? f : f * nf.half * nf.half);
        }
      }
    }
    KvquantLayerParams lp;
    KVQ_ASSIGN_OR_RETURN(lp.codebook, fit_codebook(opts, xhat, wts, args_.seed + 1000 + uint64_t(il), &lp.qnorm));
    out.layers.push_back(std::move(lp));
    if (layer_done) layer_done(il);
  }
  return out;
}

StatusOr<std::vector<double>> KvActivations::fisher_error(const KvquantOptions& opts, const KvquantParams& params,
                                                          bool keys, std::vector<double>* per_head) const {
  if (!has_fisher()) return invalid_argument("the Fisher-weighted error needs activations captured with fisher");
  if (params.layers.size() != size_t(n_layers_)) return invalid_argument("fisher_error: parameters for another model");
  KVQ_RETURN_IF_ERROR(check_calibration_sinks(opts.sinks, args_.window));
  KVQ_RETURN_IF_ERROR(check_calibration_rotation(opts, head_dim_, keys));
  const size_t row = size_t(n_kv_heads_) * size_t(head_dim_);
  std::vector<double> err;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> idx(row);
  std::vector<f16_t> val(row);
  std::vector<float> out(row), rotated;
  if (per_head) per_head->assign(size_t(n_layers_) * size_t(n_kv_heads_), 0.0);
  for (int il = 0; il < n_layers_; ++il) {
    const KvquantLayerParams& lp = params.layers[size_t(il)];
    const Codebook& cb = lp.codebook;
    codes.assign(packed_bytes(cb.bits, row), 0);
    // The rows as the store quantizes them, and each row's token (for its Fisher row).
    std::vector<int> kept;
    std::vector<float> rows;
    ChannelNorm norm;
    if (keys) {
      rows = calibration_keys(opts, il, &kept);
      KVQ_ASSIGN_OR_RETURN(norm, make_channel_norm(lp.upper.data(), lp.lower.data(), row));
    } else {
      for (int w = 0; w < args_.n_windows; ++w) {
        for (int t = std::min(opts.sinks, args_.window); t < args_.window; ++t) kept.push_back(w * args_.window + t);
      }
      rows.resize(kept.size() * row);
      for (size_t i = 0; i < kept.size(); ++i) {
        std::copy_n(&v_[size_t(il)][size_t(kept[i]) * row], row, &rows[i * row]);
      }
      if (opts.rotate) rotate_calibration_rows(rows.data(), kept.size(), n_kv_heads_, head_dim_);
    }
    const std::vector<std::vector<float>>& fisher = keys ? fk_ : fv_;
    double e = 0, head_f = 0;
    for (size_t i = 0; i < kept.size(); ++i) {
      const float* x = &rows[i * row];
      size_t count = 0;
      if (keys) {
        if (opts.outliers > 0.0) {
          KVQ_RETURN_IF_ERROR(quantize_dense_sparse_channels(x, row, norm, cb, codes.data(), idx.data(), val.data(), &count));
        } else {
          KVQ_RETURN_IF_ERROR(encode_codebook_row_pc(x, row, norm, cb, codes.data()));
        }
        decode_codebook_row_pc(codes.data(), row, norm, cb, out.data());
      } else {
        // The norm as the store keeps it: with norm=8 the codes use the decoded 8-bit norm.
        NormParams np;
        NormParams8 np8;
        NormParams8* n8 = opts.norm_bits == 8 ? &np8 : nullptr;
        if (opts.outliers > 0.0) {
          KVQ_RETURN_IF_ERROR(quantize_dense_sparse_token(x, row, opts.outliers, cb, codes.data(), &np, idx.data(),
                                                          val.data(), &count, KernelPath::kSimd, n8));
        } else {
          KVQ_ASSIGN_OR_RETURN(np, row_norm_from_minmax(x, row, n8));
          KVQ_RETURN_IF_ERROR(encode_codebook_row(x, row, np, cb, codes.data()));
        }
        decode_codebook_row(codes.data(), row, np, cb, out.data());
      }
      apply_outliers(idx.data(), val.data(), count, out.data());
      const float* f = &fisher[size_t(il)][size_t(kept[i]) * row];
      for (size_t c = 0; c < row; ++c) {
        // Rotated rows: the head's mean F (rotated_fisher), taken once per head.
        if (opts.rotate && c % size_t(head_dim_) == 0) head_f = rotated_fisher(f, c, head_dim_);
        const double d = double(x[c]) - double(out[c]);
        const double fe = (opts.rotate ? head_f : double(f[c])) * d * d;
        e += fe;
        if (per_head) (*per_head)[size_t(il) * size_t(n_kv_heads_) + c / size_t(head_dim_)] += fe;
      }
    }
    err.push_back(e);
  }
  return err;
}

StatusOr<Codebook> make_uniform_codebook(int bits) {
  std::vector<float> levels(size_t(1) << bits);
  for (size_t j = 0; j < levels.size(); ++j) levels[j] = -1.0f + 2.0f * float(j) / float(levels.size() - 1);
  return make_codebook(bits, levels);
}

StatusOr<KvActivations::ForSpec> make_for_spec(
    const CacheSpec& spec, const std::function<StatusOr<KvquantParams>(const KvquantOptions&)>& keys,
    const std::function<StatusOr<KvquantParams>(const KvquantOptions&)>& values) {
  KvActivations::ForSpec f;
  if (spec.k.kind == TensorKind::kKvquant) {
    KVQ_ASSIGN_OR_RETURN(KvquantParams p, keys(spec.k.kvquant));
    f.k = std::make_unique<KvquantParams>(std::move(p));
  }
  if (spec.v.kind == TensorKind::kKvquant) {
    KVQ_ASSIGN_OR_RETURN(KvquantParams p, values(spec.v.kvquant));
    f.v = std::make_unique<KvquantParams>(std::move(p));
  }
  return f;
}

StatusOr<KvActivations::ForSpec> KvActivations::for_spec(const CacheSpec& spec, CodebookWeighting w) const {
  return make_for_spec(
      spec, [&](const KvquantOptions& o) { return key_params(o, w); },
      [&](const KvquantOptions& o) { return value_params(o, w); });
}

}  // namespace kvq
