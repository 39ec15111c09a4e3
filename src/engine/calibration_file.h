// SPDX-License-Identifier: MIT
// The kvq calibration file (`kvq calibrate -o FILE`, `--calib FILE`): a GGUF container,
// self-describing and versioned, bound to the model it was made for (architecture, shapes and
// a hash of the tensor table), recording the text, windows, seed, settings and kvq version.
// It holds, per layer, the per-channel key thresholds and the nuq codebooks for 2, 3 and 4
// bits of keys and values, plain and with Q-Norm, and optionally (kvq calibrate --bits-budget)
// each layer's K and V width for kvquant-mixed. Layout: docs/FILE_FORMAT.md.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "engine/calibrate.h"
#include "engine/mixed_precision.h"
#include "io/gguf.h"
#include "io/output_file.h"
#include "model/llama.h"

namespace kvq {

inline constexpr uint32_t kCalibrationVersion = 1;

struct CalibrationMeta {
  std::string kvq_version, text, model_arch;
  uint32_t n_layers = 0, n_kv_heads = 0, head_dim = 0;
  uint64_t tensor_hash = 0;
  int n_windows = 0, window = 0;
  uint64_t seed = 0;
  // Outlier fraction the thresholds are set for: the keys' (outliers) and the values'
  // (v_outliers; kvq calibrate --outliers-v, e.g. 0 for key outliers only). v_outliers < 0
  // asks build() for the keys' fraction; a built or loaded file's is always resolved. Files
  // without kvq.calib.v_outliers read as one fraction for both.
  double outliers = 0.01, v_outliers = -1, loss = 0;
  int sinks = 1;
  bool pre_rope = true;
  // Fitted on rows in the Hadamard basis (kv/rotated_store.h): the values, and the keys when
  // they are stored after RoPE (pre-RoPE keys cannot be rotated). Absent in older files: false.
  bool rot = false;
  // Bits of the values' per-token norm the cache will run with (the spec's norm=16|8, kvq
  // calibrate --norm): the per-layer widths are chosen with that accounting and that error, so
  // kvquant-mixed refuses a value spec with another norm. Absent in older files: 16.
  int norm_bits = 16;
  // The fp16 window of the newest tokens the cache will run with (the spec's r=N, kvq calibrate
  // --r): --bits-budget accounts its bytes, so kvquant-mixed refuses another r. Written with the
  // widths (kvq.mixed.r); absent: 0.
  int residual = 0;
  CodebookWeighting weighting = CodebookWeighting::kFisherScale2;
  // kvq calibrate --bits-budget B: per-layer K/V widths for kvquant-mixed within B bits per
  // value as allocated at budget_context tokens (0: no widths chosen; budget_context 0: the
  // model's context). Absent in older files.
  double bits_budget = 0;
  int budget_context = 0;
  // build() with bits_budget: widths per (layer, KV head) instead of per layer (kvq calibrate
  // --width-per head). Not a file key: the file's widths say which they are.
  bool per_head_widths = false;
};

// The cache --bits-budget plans for, accounted as it will allocate: kvquant at `bits` in every
// layer of meta's model (n_layers, n_kv_heads, head_dim) with meta's key and value outlier
// fractions, sinks, value norm and fp16 window.
CacheConfig planned_cache_config(const CalibrationMeta& meta, int bits);

class CalibrationFile {
 public:
  // Derives everything from captured activations (with Fisher unless weighting is none).
  // progress(done, total) counts the (layer, tensor, bits) fits.
  static StatusOr<CalibrationFile> build(const KvActivations& acts, const LlamaModel& model,
                                         CalibrationMeta meta,
                                         const std::function<void(int done, int total)>& progress = {});
  // Errors: kDataLoss for a truncated or foreign file, kUnimplemented for another version,
  // kInvalidArgument when it was made for another model (all named).
  // Refused as corrupt: duplicate or unexpected tensors (from the GGUF reader and here), a
  // non-finite or out-of-range setting, inverted thresholds, non-finite values.
  static StatusOr<CalibrationFile> load(const std::string& path, const LlamaModel& model);
  // The same for a parsed container (fuzzing); name is used in messages.
  static StatusOr<CalibrationFile> from_gguf(const GgufFile& f, const std::string& name, const LlamaModel& model);
  // Written through out (io/output_file.h): atomically for a regular file.
  Status save(OutputFile& out) const;
  // The same for a path checked now (no other files to compare against).
  Status save(const std::string& path) const;

  // Parameters for the kvquant parts of spec. Errors say which setting does not match the
  // calibration (outlier fraction, sinks, pre-RoPE, Q-Norm with a built-in codebook).
  StatusOr<KvActivations::ForSpec> for_spec(const CacheSpec& spec) const;
  const CalibrationMeta& meta() const { return meta_; }
  std::string describe() const;
  // Chooses each layer's K and V width for kvquant-mixed (engine/mixed_precision.h): the least
  // Fisher-weighted error of acts (with fisher, the activations this file was built from)
  // within bits_budget bits per value as allocated at `context` tokens; replaces any earlier
  // choice. per_head: a width per (layer, KV head) instead (kvq calibrate --width-per head).
  // invalid_argument without Fisher, or for a budget below every layer at 2 bits.
  Status choose_widths(const KvActivations& acts, double bits_budget, int context, bool per_head = false);
  // The per-layer (or per-head) widths (kvq calibrate --bits-budget), or null.
  const MixedPlan* mixed() const { return mixed_ ? &*mixed_ : nullptr; }
  // One line per layer (or per layer and KV head): the K and V widths and each width's
  // Fisher-weighted error ("" without).
  std::string describe_mixed() const;

 private:
  struct Layer {
    std::vector<float> k_upper, k_lower;
    // Index bits - 2: sorted centroids and Q-Norm decode levels.
    std::array<std::vector<float>, 3> k_centroids, v_centroids, k_qnorm, v_qnorm;
  };
  StatusOr<KvquantParams> params(const KvquantOptions& o, bool keys) const;
  // The optional kvq.mixed.* keys: all or none, one width (2..4) and three finite errors per
  // layer (kvq.mixed.k_bits...) or per layer and KV head (kvq.mixed.k_head_bits...).
  Status read_mixed(const GgufFile& f, const std::string& path, const ModelConfig& mc);
  CalibrationMeta meta_;
  std::vector<Layer> layers_;
  std::optional<MixedPlan> mixed_;
};

}  // namespace kvq
