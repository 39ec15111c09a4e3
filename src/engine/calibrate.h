// SPDX-License-Identifier: MIT
// KVQuant calibration from activations (kvquant.md §2-§5): run the model over windows of a
// calibration text, keep every layer's keys (before RoPE) and values, and derive per-channel
// key thresholds, per-layer codebooks (nuq by k-means, nf, uniform) and Q-Norm.
// `--calib auto` uses unweighted k-means; Fisher-weighted nuq is `kvq calibrate` (issue 5).
#pragma once

#include <functional>
#include <string_view>
#include <span>
#include <string>
#include <vector>

#include "base/exec_context.h"
#include "engine/prefill.h"
#include "kv/cache_spec.h"
#include "model/llama.h"

namespace kvq {

struct CalibrationArgs {
  int n_windows = 8;
  int window = 512;  // tokens per window (BOS first), at most the model's context
  // Tokens per forward step when capturing without Fisher (engine/prefill.h); a backward
  // pass takes the whole window.
  int batch = kDefaultBatch;
  uint64_t seed = 0;
  // Also compute Fisher information (squared loss gradients of every K/V activation, §4.1)
  // by a backward pass per window.
  bool fisher = false;
};

// Sample weights of the codebook k-means (kvquant.md §4.2): none (plain k-means), the Fisher
// information F (the released code) or F * s^2 with s the normalization half-range of the
// element's channel (keys) or token (values) (the paper's derivation, App D/E).
enum class CodebookWeighting { kNone, kFisher, kFisherScale2 };
const char* weighting_name(CodebookWeighting w);
StatusOr<CodebookWeighting> parse_weighting(std::string_view s);

class KvActivations {
 public:
  // tokens: the calibration text, tokenized. Errors when it is shorter than one window.
  static StatusOr<KvActivations> capture(ExecContext& ctx, const LlamaModel& model,
                                         std::span<const int32_t> tokens, const CalibrationArgs& args,
                                         const std::function<void(int done, int total)>& progress = {});

  // Activations given directly instead of captured from a model (synthetic benchmarks):
  // k, v per layer hold [args.n_windows * args.window, n_kv_heads * head_dim], keys before
  // RoPE, each window starting at position 0. Fisher weighting is unavailable.
  static StatusOr<KvActivations> from_samples(int n_kv_heads, int head_dim, int rope_dim, float rope_base,
                                              const CalibrationArgs& args, std::vector<std::vector<float>> k,
                                              std::vector<std::vector<float>> v);

  // Parameters for a kvquant key (or value) store with these options; sinks are excluded
  // from every statistic.
  // layer_done, if given, is called after each layer (progress of long calibrations).
  StatusOr<KvquantParams> key_params(const KvquantOptions& opts,
                                     CodebookWeighting w = CodebookWeighting::kNone,
                                     const std::function<void(int layer)>& layer_done = {}) const;
  StatusOr<KvquantParams> value_params(const KvquantOptions& opts,
                                       CodebookWeighting w = CodebookWeighting::kNone,
                                       const std::function<void(int layer)>& layer_done = {}) const;
  // Both, as the cache factory needs them for a spec (null members where unused).
  struct ForSpec {
    std::unique_ptr<KvquantParams> k, v;
    CacheCalibration calibration() const { return {k.get(), v.get()}; }
  };
  StatusOr<ForSpec> for_spec(const CacheSpec& spec, CodebookWeighting w = CodebookWeighting::kNone) const;
  bool has_fisher() const { return !fk_.empty(); }
  // Fisher-weighted quantization error of each layer of keys (or values), kvquant.md §4.1:
  // the sum over the calibration activations (sinks excluded) of F_i (x_i - Q(x_i))^2, where Q
  // is what a kvquant store with opts and params stores: the layer's codebook and
  // normalization (values: the per-token norm in opts.norm_bits), the dense-and-sparse outliers
  // at opts.outliers kept as fp16. Needs fisher; single-threaded, fixed summation order (the
  // same result on every run).
  // per_head, if given, receives the same sum split by KV head ([n_layers * n_kv_heads], layer
  // major): each head's channels, for widths per head (a head's error depends only on its own
  // codes: the norm and the outliers do not depend on the width).
  StatusOr<std::vector<double>> fisher_error(const KvquantOptions& opts, const KvquantParams& params,
                                             bool keys, std::vector<double>* per_head = nullptr) const;
  // Mean next-token loss over the windows (with fisher).
  double loss() const { return loss_; }

  const CalibrationArgs& args() const { return args_; }
  int n_tokens() const { return args_.n_windows * args_.window; }
  int n_layers() const { return n_layers_; }
  // Layer il's captured keys (before RoPE) and values: [n_tokens(), n_kv_heads * head_dim],
  // window w at rows [w * window, +window). Owned by this object.
  std::span<const float> keys(int il) const { return k_[size_t(il)]; }
  std::span<const float> values(int il) const { return v_[size_t(il)]; }

 private:
  // Layer il's calibration keys as a store with opts quantizes them (sinks dropped, RoPE for
  // prerope=0, rotated for rot=1); kept gets each row's token index.
  std::vector<float> calibration_keys(const KvquantOptions& opts, int il, std::vector<int>* kept) const;

  CalibrationArgs args_;
  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0;
  Rope rope_;
  std::vector<std::vector<float>> k_, v_;    // per layer: [n_windows * window, n_kv_heads * head_dim]
  std::vector<std::vector<float>> fk_, fv_;  // Fisher of the same elements (empty without fisher)
  double loss_ = 0;
};

// 2^bits evenly spaced levels over [-1, 1]: per-channel uniform quantization as a codebook.
StatusOr<Codebook> make_uniform_codebook(int bits);

// The cache calibration for every kvquant part of spec, from per-tensor parameter makers.
StatusOr<KvActivations::ForSpec> make_for_spec(
    const CacheSpec& spec, const std::function<StatusOr<KvquantParams>(const KvquantOptions&)>& keys,
    const std::function<StatusOr<KvquantParams>(const KvquantOptions&)>& values);

// Sinks are excluded from calibration statistics: an error unless some tokens of each window
// remain (checked before capture by the tools, and again where the statistics are taken).
Status check_calibration_sinks(int sinks, int window);

// numpy.percentile with linear interpolation over sorted values, p in [0, 100]; sorted must
// not be empty (a programmer error).
float percentile_sorted(std::span<const float> sorted, double p);

}  // namespace kvq
