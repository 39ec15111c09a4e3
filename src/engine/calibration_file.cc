// SPDX-License-Identifier: MIT
#include "engine/calibration_file.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "base/printable.h"
#include "io/gguf_writer.h"

#ifndef KVQ_VERSION
#define KVQ_VERSION "unknown"
#endif

namespace kvq {

namespace {

constexpr const char* kArch = "kvq-calibration";

std::string tensor_name(int il, const char* what, int bits = 0) {
  std::string n = "blk." + std::to_string(il) + "." + what;
  if (bits) n += "." + std::to_string(bits);
  return n;
}

// Widths layer 0 first ("333344"); per head, a layer's heads together, layers apart by '.'
// ("33.33.34.44.44.44").
std::string widths_text(const MixedPlan& p, bool keys) {
  const std::vector<int>& w = keys ? p.k_bits : p.v_bits;
  std::string s;
  for (size_t i = 0; i < w.size(); ++i) {
    if (p.per_head && i > 0 && i % size_t(p.n_kv_heads) == 0) s += '.';
    s += std::to_string(w[i]);
  }
  return s;
}

std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

}  // namespace

StatusOr<CalibrationFile> CalibrationFile::build(const KvActivations& acts, const LlamaModel& model,
                                                 CalibrationMeta meta,
                                                 const std::function<void(int, int)>& progress) {
  CalibrationFile f;
  const ModelConfig& c = model.config();
  meta.kvq_version = KVQ_VERSION;
  meta.model_arch = c.arch;
  meta.n_layers = uint32_t(c.n_layers);
  meta.n_kv_heads = uint32_t(c.n_kv_heads);
  meta.head_dim = uint32_t(c.head_dim);
  meta.tensor_hash = gguf_tensor_table_hash(model.gguf());
  meta.n_windows = acts.args().n_windows;
  meta.window = acts.args().window;
  meta.seed = acts.args().seed;
  if (meta.v_outliers < 0) meta.v_outliers = meta.outliers;
  meta.loss = acts.loss();
  f.meta_ = meta;
  f.layers_.resize(size_t(c.n_layers));
  const int total = 3 * 2 * c.n_layers;
  int done = 0;
  auto tick = [&](int) {
    if (progress) progress(++done, total);
  };
  // One k-means per (bits, layer, K/V); the Q-Norm levels come from the same codebook.
  for (int bits = 2; bits <= 4; ++bits) {
    KvquantOptions o;
    o.bits = bits;
    o.outliers = meta.outliers;
    o.sinks = meta.sinks;
    o.pre_rope = meta.pre_rope;
    o.codebook = CodebookKind::kNuq;
    o.rotate = meta.rot && !meta.pre_rope;
    KVQ_ASSIGN_OR_RETURN(KvquantParams k, acts.key_params(o, meta.weighting, tick));
    o.rotate = meta.rot;
    o.outliers = meta.v_outliers;
    KVQ_ASSIGN_OR_RETURN(KvquantParams v, acts.value_params(o, meta.weighting, tick));
    const size_t n = size_t(1) << bits, b = size_t(bits - 2);
    for (int il = 0; il < c.n_layers; ++il) {
      Layer& l = f.layers_[size_t(il)];
      const KvquantLayerParams& kl = k.layers[size_t(il)];
      const KvquantLayerParams& vl = v.layers[size_t(il)];
      l.k_upper = kl.upper;
      l.k_lower = kl.lower;
      const Codebook kq = apply_qnorm(kl.codebook, kl.qnorm), vq = apply_qnorm(vl.codebook, vl.qnorm);
      l.k_centroids[b].assign(kl.codebook.values.begin(), kl.codebook.values.begin() + ptrdiff_t(n));
      l.v_centroids[b].assign(vl.codebook.values.begin(), vl.codebook.values.begin() + ptrdiff_t(n));
      l.k_qnorm[b].assign(kq.values.begin(), kq.values.begin() + ptrdiff_t(n));
      l.v_qnorm[b].assign(vq.values.begin(), vq.values.begin() + ptrdiff_t(n));
    }
  }
  if (meta.bits_budget > 0) {
    KVQ_RETURN_IF_ERROR(f.choose_widths(acts, meta.bits_budget, meta.budget_context > 0 ? meta.budget_context : c.n_ctx_train,
                                        meta.per_head_widths));
  }
  return f;
}

CacheConfig planned_cache_config(const CalibrationMeta& meta, int bits) {
  CacheConfig c = kvquant_config(int(meta.n_layers), int(meta.n_kv_heads), int(meta.head_dim), bits, meta.outliers,
                                 meta.sinks);
  c.v.outlier_fraction = meta.v_outliers;
  c.v.norm8 = meta.norm_bits == 8;  // the values' per-token norm in 2 bytes
  set_kvquant_window(&c.k, meta.residual);
  set_kvquant_window(&c.v, meta.residual);
  return c;
}

Status CalibrationFile::choose_widths(const KvActivations& acts, double bits_budget, int context, bool per_head) {
  // Per-layer (per-head) widths: every layer's (head's) K and V error at each width, with this
  // file's codebooks.
  if (!acts.has_fisher()) return invalid_argument("--bits-budget needs Fisher information: use a weighting other than none");
  if (acts.n_layers() != int(meta_.n_layers)) return invalid_argument("choose_widths: activations of another model");
  const int n_layers = int(meta_.n_layers);
  const size_t n_items = size_t(n_layers) * (per_head ? meta_.n_kv_heads : 1);
  std::vector<std::array<double, 3>> k_err(n_items), v_err(n_items);
  for (int bits = kMixedMinBits; bits <= kMixedMaxBits; ++bits) {
    for (bool keys : {true, false}) {
      KvquantOptions o;
      o.bits = bits;
      o.outliers = keys ? meta_.outliers : meta_.v_outliers;
      o.sinks = meta_.sinks;
      o.pre_rope = meta_.pre_rope;
      o.rotate = meta_.rot && (!keys || !meta_.pre_rope);
      o.norm_bits = keys ? 16 : meta_.norm_bits;  // keys' norms are per channel, offline
      KVQ_ASSIGN_OR_RETURN(KvquantParams p, params(o, keys));
      std::vector<double> heads;
      KVQ_ASSIGN_OR_RETURN(std::vector<double> e, acts.fisher_error(o, p, keys, per_head ? &heads : nullptr));
      if (per_head) e = std::move(heads);
      for (size_t i = 0; i < n_items; ++i) (keys ? k_err : v_err)[i][size_t(bits - 2)] = e[i];
    }
  }
  KVQ_ASSIGN_OR_RETURN(MixedPlan plan, plan_mixed_precision(planned_cache_config(meta_, 3), context, bits_budget, k_err,
                                                            v_err, per_head));
  meta_.bits_budget = bits_budget;
  meta_.budget_context = context;
  mixed_ = std::move(plan);
  return ok_status();
}

Status CalibrationFile::save(const std::string& path) const {
  KVQ_ASSIGN_OR_RETURN(OutputFile out, OutputFile::prepare(path, "calibration file"));
  return save(out);
}

Status CalibrationFile::save(OutputFile& out) const {
  GgufWriter w;
  w.add_string("general.architecture", kArch);
  w.add_u32("kvq.calibration.version", kCalibrationVersion);
  w.add_string("kvq.version", meta_.kvq_version);
  w.add_string("kvq.model.architecture", meta_.model_arch);
  w.add_u32("kvq.model.block_count", meta_.n_layers);
  w.add_u32("kvq.model.head_count_kv", meta_.n_kv_heads);
  w.add_u32("kvq.model.head_dim", meta_.head_dim);
  w.add_string("kvq.model.tensor_table_hash", hex64(meta_.tensor_hash));
  w.add_string("kvq.calib.text", meta_.text);
  w.add_u32("kvq.calib.windows", uint32_t(meta_.n_windows));
  w.add_u32("kvq.calib.window", uint32_t(meta_.window));
  w.add_u64("kvq.calib.seed", meta_.seed);
  w.add_f32("kvq.calib.outliers", float(meta_.outliers));
  w.add_f32("kvq.calib.v_outliers", float(meta_.v_outliers));
  w.add_u32("kvq.calib.sinks", uint32_t(meta_.sinks));
  w.add_bool("kvq.calib.prerope", meta_.pre_rope);
  w.add_bool("kvq.calib.rot", meta_.rot);
  w.add_u32("kvq.calib.norm_bits", uint32_t(meta_.norm_bits));
  w.add_string("kvq.calib.weighting", weighting_name(meta_.weighting));
  w.add_f32("kvq.calib.loss", float(meta_.loss));
  if (mixed_) {
    w.add_f32("kvq.mixed.bits_budget", float(meta_.bits_budget));
    w.add_u32("kvq.mixed.context", uint32_t(meta_.budget_context));
    if (meta_.residual > 0) w.add_u32("kvq.mixed.r", uint32_t(meta_.residual));
    w.add_f32("kvq.mixed.bits_per_value", float(mixed_->bits_per_value));
    // Per head: other keys, so that a kvq that knows only per-layer widths refuses the file
    // (its kvq.mixed.* are incomplete) instead of reading other widths.
    const std::string per = mixed_->per_head ? "head_" : "";
    const std::vector<int32_t> kb(mixed_->k_bits.begin(), mixed_->k_bits.end());
    const std::vector<int32_t> vb(mixed_->v_bits.begin(), mixed_->v_bits.end());
    w.add_i32_array("kvq.mixed.k_" + per + "bits", kb);
    w.add_i32_array("kvq.mixed.v_" + per + "bits", vb);
    auto errors = [](const std::vector<std::array<double, 3>>& e) {
      std::vector<float> out;
      for (const auto& l : e) out.insert(out.end(), l.begin(), l.end());
      return out;
    };
    w.add_f32_array("kvq.mixed.k_" + per + "error", errors(mixed_->k_error));
    w.add_f32_array("kvq.mixed.v_" + per + "error", errors(mixed_->v_error));
  }
  auto add = [&](const std::string& name, const std::vector<float>& v) {
    const uint64_t ne[1] = {v.size()};
    w.add_tensor(name, ne, 0, {reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4});
  };
  for (int il = 0; il < int(layers_.size()); ++il) {
    const Layer& l = layers_[size_t(il)];
    add(tensor_name(il, "k_upper"), l.k_upper);
    add(tensor_name(il, "k_lower"), l.k_lower);
    for (int b = 2; b <= 4; ++b) {
      add(tensor_name(il, "k_codebook", b), l.k_centroids[size_t(b - 2)]);
      add(tensor_name(il, "v_codebook", b), l.v_centroids[size_t(b - 2)]);
      add(tensor_name(il, "k_codebook_qnorm", b), l.k_qnorm[size_t(b - 2)]);
      add(tensor_name(il, "v_codebook_qnorm", b), l.v_qnorm[size_t(b - 2)]);
    }
  }
  return w.write_to(out);
}

StatusOr<CalibrationFile> CalibrationFile::load(const std::string& path, const LlamaModel& model) {
  auto g = GgufFile::open(path);
  if (!g.ok()) return g.status().with_context("calibration file");
  return from_gguf(**g, path, model);
}

StatusOr<CalibrationFile> CalibrationFile::from_gguf(const GgufFile& f, const std::string& raw_path,
                                                     const LlamaModel& model) {
  const std::string path = printable(raw_path);
  auto fail = [&](const std::string& m) { return data_loss(path + ": " + m); };
  auto arch = f.get_string("general.architecture");
  if (!arch.ok() || *arch != kArch) return fail("not a kvq calibration file (made by 'kvq calibrate')");
  auto version = f.get_u64("kvq.calibration.version");
  if (!version.ok()) return fail("calibration version is missing");
  if (*version != kCalibrationVersion) {
    return unimplemented(path + ": calibration file version " + std::to_string(*version) +
                         " is not supported (this kvq reads version " + std::to_string(kCalibrationVersion) +
                         "); recalibrate with 'kvq calibrate'");
  }
  CalibrationFile c;
  CalibrationMeta& m = c.meta_;
  auto str = [&](const char* k, std::string* out) -> Status {
    auto v = f.get_string(k);
    if (!v.ok()) return fail(v.status().message());
    *out = *v;
    return ok_status();
  };
  auto u64 = [&](const char* k, uint64_t* out) -> Status {
    auto v = f.get_u64(k);
    if (!v.ok()) return fail(v.status().message());
    *out = *v;
    return ok_status();
  };
  std::string hash, weighting;
  uint64_t n_layers, n_kv, hd, windows, window, sinks;
  KVQ_RETURN_IF_ERROR(str("kvq.version", &m.kvq_version));
  KVQ_RETURN_IF_ERROR(str("kvq.model.architecture", &m.model_arch));
  KVQ_RETURN_IF_ERROR(u64("kvq.model.block_count", &n_layers));
  KVQ_RETURN_IF_ERROR(u64("kvq.model.head_count_kv", &n_kv));
  KVQ_RETURN_IF_ERROR(u64("kvq.model.head_dim", &hd));
  KVQ_RETURN_IF_ERROR(str("kvq.model.tensor_table_hash", &hash));
  KVQ_RETURN_IF_ERROR(str("kvq.calib.text", &m.text));
  KVQ_RETURN_IF_ERROR(u64("kvq.calib.windows", &windows));
  KVQ_RETURN_IF_ERROR(u64("kvq.calib.window", &window));
  KVQ_RETURN_IF_ERROR(u64("kvq.calib.seed", &m.seed));
  KVQ_RETURN_IF_ERROR(u64("kvq.calib.sinks", &sinks));
  KVQ_RETURN_IF_ERROR(str("kvq.calib.weighting", &weighting));
  auto outliers = f.get_f64("kvq.calib.outliers");
  auto prerope = f.get_bool("kvq.calib.prerope");
  auto loss = f.get_f64("kvq.calib.loss");
  if (!outliers.ok() || !prerope.ok() || !loss.ok()) return fail("calibration settings are missing");
  // Every float setting is checked: a NaN passes any comparison-based check downstream
  // (fabs(x - NaN) > eps is false).
  if (!std::isfinite(*outliers) || *outliers < 0.0 || *outliers > 0.5) {
    return fail("kvq.calib.outliers must be a finite fraction in [0, 0.5]");
  }
  if (!std::isfinite(*loss)) return fail("kvq.calib.loss is not finite");
  auto w = parse_weighting(weighting);
  if (!w.ok()) return fail(w.status().message());
  m.outliers = m.v_outliers = *outliers;
  if (f.find("kvq.calib.v_outliers")) {
    auto v = f.get_f64("kvq.calib.v_outliers");
    if (!v.ok() || !std::isfinite(*v) || *v < 0.0 || *v > 0.5) {
      return fail("kvq.calib.v_outliers must be a finite fraction in [0, 0.5]");
    }
    m.v_outliers = *v;
  }
  m.pre_rope = *prerope;
  if (f.find("kvq.calib.rot")) {
    auto rot = f.get_bool("kvq.calib.rot");
    if (!rot.ok()) return fail("kvq.calib.rot is not a bool");
    m.rot = *rot;
  }
  if (f.find("kvq.calib.norm_bits")) {
    auto nb = f.get_u64("kvq.calib.norm_bits");
    if (!nb.ok() || (*nb != 16 && *nb != 8)) return fail("kvq.calib.norm_bits must be 16 or 8");
    m.norm_bits = int(*nb);
  }
  m.loss = *loss;
  m.weighting = *w;
  m.n_windows = int(std::min<uint64_t>(windows, 1u << 30));
  m.window = int(std::min<uint64_t>(window, 1u << 30));
  m.sinks = int(std::min<uint64_t>(sinks, 1u << 30));
  const ModelConfig& mc = model.config();
  const std::string model_hash = hex64(gguf_tensor_table_hash(model.gguf()));
  if (m.model_arch != mc.arch || n_layers != uint64_t(mc.n_layers) || n_kv != uint64_t(mc.n_kv_heads) ||
      hd != uint64_t(mc.head_dim) || hash != model_hash) {
    return invalid_argument(path + " was calibrated for another model (" + printable(m.model_arch) + ", " +
                            std::to_string(n_layers) + " layers, " + std::to_string(n_kv) + " KV heads of " +
                            std::to_string(hd) + ", tensor table " + printable(hash) + "), not this one (" + mc.arch + ", " +
                            std::to_string(mc.n_layers) + " layers, " + std::to_string(mc.n_kv_heads) +
                            " KV heads of " + std::to_string(mc.head_dim) + ", tensor table " + model_hash + ")");
  }
  m.n_layers = uint32_t(n_layers);
  m.n_kv_heads = uint32_t(n_kv);
  m.head_dim = uint32_t(hd);
  const size_t row = size_t(mc.kv_dim());
  auto tensor = [&](const std::string& name, size_t n, std::vector<float>* out) -> Status {
    const GgufTensorInfo* t = f.find_tensor(name);
    if (!t) return fail("tensor '" + name + "' is missing");
    if (t->type != 0 || t->n_elems != n) {
      return fail("tensor '" + name + "' has " + std::to_string(t->n_elems) + " " + ggml_type_name(t->type) +
                  " values, expected " + std::to_string(n) + " F32");
    }
    out->resize(n);
    std::memcpy(out->data(), t->data, n * 4);
    for (float x : *out) {
      if (!std::isfinite(x)) return fail("tensor '" + name + "' holds a non-finite value");
    }
    return ok_status();
  };
  // 14 tensors per layer, nothing else: an extra tensor (another layer, a typo) means the file
  // is not what it claims to be.
  constexpr size_t kTensorsPerLayer = 2 + 3 * 4;
  if (f.tensors().size() != kTensorsPerLayer * size_t(mc.n_layers)) {
    return fail("holds " + std::to_string(f.tensors().size()) + " tensors, expected " +
                std::to_string(kTensorsPerLayer * size_t(mc.n_layers)) + " (" + std::to_string(kTensorsPerLayer) +
                " per layer)");
  }
  c.layers_.resize(size_t(mc.n_layers));
  for (int il = 0; il < mc.n_layers; ++il) {
    Layer& l = c.layers_[size_t(il)];
    KVQ_RETURN_IF_ERROR(tensor(tensor_name(il, "k_upper"), row, &l.k_upper));
    KVQ_RETURN_IF_ERROR(tensor(tensor_name(il, "k_lower"), row, &l.k_lower));
    for (int b = 2; b <= 4; ++b) {
      const size_t n = size_t(1) << b;
      KVQ_RETURN_IF_ERROR(tensor(tensor_name(il, "k_codebook", b), n, &l.k_centroids[size_t(b - 2)]));
      KVQ_RETURN_IF_ERROR(tensor(tensor_name(il, "v_codebook", b), n, &l.v_centroids[size_t(b - 2)]));
      KVQ_RETURN_IF_ERROR(tensor(tensor_name(il, "k_codebook_qnorm", b), n, &l.k_qnorm[size_t(b - 2)]));
      KVQ_RETURN_IF_ERROR(tensor(tensor_name(il, "v_codebook_qnorm", b), n, &l.v_qnorm[size_t(b - 2)]));
    }
    for (size_t i = 0; i < row; ++i) {
      if (!(l.k_upper[i] >= l.k_lower[i])) return fail("key thresholds of layer " + std::to_string(il) + " are inverted");
    }
  }
  KVQ_RETURN_IF_ERROR(c.read_mixed(f, path, mc));
  return c;
}

Status CalibrationFile::read_mixed(const GgufFile& f, const std::string& path, const ModelConfig& mc) {
  auto fail = [&](const std::string& m) { return data_loss(path + ": " + m); };
  static constexpr const char* kCommon[] = {"kvq.mixed.bits_budget", "kvq.mixed.context", "kvq.mixed.bits_per_value"};
  static constexpr const char* kLayer[] = {"kvq.mixed.k_bits", "kvq.mixed.v_bits", "kvq.mixed.k_error",
                                           "kvq.mixed.v_error"};
  static constexpr const char* kHead[] = {"kvq.mixed.k_head_bits", "kvq.mixed.v_head_bits",
                                          "kvq.mixed.k_head_error", "kvq.mixed.v_head_error"};
  int common = 0, layer = 0, head = 0;
  for (const char* k : kCommon) common += f.find(k) != nullptr;
  for (const char* k : kLayer) layer += f.find(k) != nullptr;
  for (const char* k : kHead) head += f.find(k) != nullptr;
  if (common + layer + head == 0) return ok_status();  // no widths (older files, or no --bits-budget)
  if (layer > 0 && head > 0) return fail("holds both per-layer and per-head widths (kvq.mixed.*)");
  const bool per_head = head > 0;
  const std::string kind = per_head ? "per-head" : "per-layer";
  if (common != int(std::size(kCommon)) || (per_head ? head : layer) != 4) {
    return fail(kind + " widths (kvq.mixed.*) are incomplete");
  }
  const char* const* names = per_head ? kHead : kLayer;
  auto budget = f.get_f64("kvq.mixed.bits_budget");
  auto context = f.get_u64("kvq.mixed.context");
  auto bpv = f.get_f64("kvq.mixed.bits_per_value");
  auto kb = f.get_i32_array(names[0]);
  auto vb = f.get_i32_array(names[1]);
  auto ke = f.get_f32_array(names[2]);
  auto ve = f.get_f32_array(names[3]);
  if (!budget.ok() || !context.ok() || !bpv.ok() || !kb.ok() || !vb.ok() || !ke.ok() || !ve.ok()) {
    return fail(kind + " widths (kvq.mixed.*) have the wrong types");
  }
  if (!std::isfinite(*budget) || *budget <= 0 || !std::isfinite(*bpv) || *bpv <= 0 || *context == 0 ||
      *context > (1u << 30)) {
    return fail("kvq.mixed.bits_budget, bits_per_value and context must be finite and positive");
  }
  const size_t heads = per_head ? size_t(mc.n_kv_heads) : 1, n = size_t(mc.n_layers) * heads;
  if (kb->size() != n || vb->size() != n || ke->size() != 3 * n || ve->size() != 3 * n) {
    return fail(per_head ? "per-head widths are not one per layer and KV head (" + std::to_string(mc.n_layers) +
                               " layers of " + std::to_string(mc.n_kv_heads) + " KV heads)"
                         : "per-layer widths are not one per layer (" + std::to_string(n) + " layers)");
  }
  MixedPlan plan;
  plan.per_head = per_head;
  plan.n_kv_heads = int(heads);
  plan.n_tokens = int64_t(*context);
  plan.bits_per_value = *bpv;
  for (size_t il = 0; il < n; ++il) {
    for (int32_t b : {(*kb)[il], (*vb)[il]}) {
      if (b < kMixedMinBits || b > kMixedMaxBits) {
        const std::string item = per_head ? "layer " + std::to_string(il / heads) + " KV head " + std::to_string(il % heads)
                                          : "layer " + std::to_string(il);
        return fail(item + " has a width of " + std::to_string(b) + " bits (2, 3 or 4)");
      }
    }
    plan.k_bits.push_back((*kb)[il]);
    plan.v_bits.push_back((*vb)[il]);
    std::array<double, 3> k{}, v{};
    for (size_t j = 0; j < 3; ++j) {
      k[j] = (*ke)[3 * il + j];
      v[j] = (*ve)[3 * il + j];
      if (!(k[j] >= 0) || !(v[j] >= 0) || !std::isfinite(k[j]) || !std::isfinite(v[j])) {
        return fail("kvq.mixed errors must be finite and non-negative");
      }
    }
    plan.k_error.push_back(k);
    plan.v_error.push_back(v);
    plan.error += k[size_t(plan.k_bits.back() - 2)] + v[size_t(plan.v_bits.back() - 2)];
  }
  if (f.find("kvq.mixed.r")) {
    auto r = f.get_u64("kvq.mixed.r");
    if (!r.ok() || *r == 0 || *r > (1u << 20)) return fail("kvq.mixed.r must be a window of 1 to 2^20 tokens");
    meta_.residual = int(*r);
  }
  meta_.bits_budget = *budget;
  meta_.budget_context = int(*context);
  mixed_ = std::move(plan);
  return ok_status();
}

StatusOr<KvquantParams> CalibrationFile::params(const KvquantOptions& o, bool keys) const {
  auto mismatch = [&](const std::string& what) {
    return invalid_argument("the calibration file was made with " + what + "; recalibrate with matching "
                            "'kvq calibrate' options or change the cache spec");
  };
  // The file stores the fractions as f32.
  const double file_outliers = keys ? meta_.outliers : meta_.v_outliers;
  if (std::fabs(o.outliers - file_outliers) > 1e-6) {
    return mismatch(std::string(meta_.outliers != meta_.v_outliers ? (keys ? "keys' " : "values' ") : "") + "outliers=" +
                    std::to_string(file_outliers) + " but the cache asks outliers=" + std::to_string(o.outliers) +
                    " for the " + (keys ? "keys" : "values"));
  }
  if (keys && o.pre_rope != meta_.pre_rope) return mismatch(std::string("prerope=") + (meta_.pre_rope ? "1" : "0"));
  if (o.sinks != meta_.sinks) return mismatch("sinks=" + std::to_string(meta_.sinks));
  if (o.rotate != (meta_.rot && (!keys || !meta_.pre_rope))) {
    return mismatch(std::string(keys ? "keys" : "values") + (o.rotate ? " not rotated (rot=0)" : " rotated (rot=1)"));
  }
  if (o.codebook != CodebookKind::kNuq && o.qnorm) {
    return unimplemented("qnorm with codebook=" + std::string(codebook_kind_name(o.codebook)) +
                         " needs its own Q-Norm fit: use --calib auto");
  }
  if (o.bits == 0 && !mixed_) {
    return invalid_argument("kvquant-mixed needs per-layer widths, and this calibration file has none: write one with "
                            "'kvq calibrate --bits-budget B'");
  }
  // The widths were chosen for the bits the file's norm allocates: another norm would spend
  // another budget than the file reports. (Uniform widths do not depend on it.)
  if (o.bits == 0 && !keys && o.norm_bits != meta_.norm_bits) {
    return invalid_argument("the per-layer widths were chosen for values with norm=" + std::to_string(meta_.norm_bits) +
                            " but the cache asks norm=" + std::to_string(o.norm_bits) +
                            "; recalibrate with 'kvq calibrate --norm " + std::to_string(o.norm_bits) +
                            "' or change the cache spec");
  }
  // Likewise the bytes of the fp16 window they were planned with.
  if (o.bits == 0 && o.window != meta_.residual) {
    return invalid_argument("the per-layer widths were chosen for an fp16 window of r=" + std::to_string(meta_.residual) +
                            " tokens but the cache asks r=" + std::to_string(o.window) +
                            "; recalibrate with 'kvq calibrate --r " + std::to_string(o.window) +
                            "' or change the cache spec");
  }
  KvquantParams p;
  for (size_t il = 0; il < layers_.size(); ++il) {
    const Layer& l = layers_[il];
    KvquantLayerParams lp;
    if (keys) {
      lp.upper = l.k_upper;
      lp.lower = l.k_lower;
    }
    // The layer's codebook at a width (one per layer and width, whatever the heads).
    auto codebook = [&](int bits) -> StatusOr<Codebook> {
      const size_t b = size_t(bits - 2);
      if (o.codebook == CodebookKind::kNf) return make_nf_codebook(bits);
      if (o.codebook != CodebookKind::kNuq) return make_uniform_codebook(bits);
      KVQ_ASSIGN_OR_RETURN(Codebook cb, make_codebook(bits, keys ? l.k_centroids[b] : l.v_centroids[b]));
      if (o.qnorm) {
        const auto& q = keys ? l.k_qnorm[b] : l.v_qnorm[b];
        std::copy(q.begin(), q.end(), cb.values.begin());
      }
      return cb;
    };
    // kvquant-mixed: the width chosen for this layer's (or each KV head's) keys or values.
    if (o.bits == 0 && mixed_->per_head) {
      for (int h = 0; h < mixed_->n_kv_heads; ++h) {
        KVQ_ASSIGN_OR_RETURN(Codebook cb, codebook(keys ? mixed_->k_width(int(il), h) : mixed_->v_width(int(il), h)));
        lp.head_codebooks.push_back(cb);
      }
      lp.codebook = lp.head_codebooks[0];
    } else {
      const int bits = o.bits != 0 ? o.bits : keys ? mixed_->k_bits[il] : mixed_->v_bits[il];
      KVQ_ASSIGN_OR_RETURN(lp.codebook, codebook(bits));
    }
    p.layers.push_back(std::move(lp));
  }
  return p;
}

StatusOr<KvActivations::ForSpec> CalibrationFile::for_spec(const CacheSpec& spec) const {
  return make_for_spec(
      spec, [&](const KvquantOptions& o) { return params(o, true); },
      [&](const KvquantOptions& o) { return params(o, false); });
}

std::string CalibrationFile::describe() const {
  char nums[256];
  char outliers[64];
  if (meta_.v_outliers == meta_.outliers) {
    std::snprintf(outliers, sizeof outliers, "%g", meta_.outliers);
  } else {
    std::snprintf(outliers, sizeof outliers, "%g (values %g)", meta_.outliers, meta_.v_outliers);
  }
  std::snprintf(nums, sizeof nums, "%d x %d tokens, seed %llu, outliers %s, sinks %d, prerope %d, rot %d, norm %d",
                meta_.n_windows, meta_.window, (unsigned long long)meta_.seed, outliers, meta_.sinks,
                int(meta_.pre_rope), int(meta_.rot), meta_.norm_bits);
  char loss[64];
  std::snprintf(loss, sizeof loss, "%.4f", meta_.loss);
  // The text and version come from the file: escaped, and not cut by a fixed buffer.
  std::string mixed;
  if (mixed_) {
    char m[160];
    std::snprintf(m, sizeof m, ", per-%s widths for --bits-budget %g (%.3f bits/value allocated at %d tokens): K ",
                  mixed_->per_head ? "head" : "layer", meta_.bits_budget, mixed_->bits_per_value, meta_.budget_context);
    mixed = m;
    mixed += widths_text(*mixed_, true) + " V " + widths_text(*mixed_, false);
  }
  return "file (kvq " + printable(meta_.kvq_version) + "): " + printable(meta_.text) + ", " + nums +
         ", k-means weights " + weighting_name(meta_.weighting) + ", calibration loss " + loss + mixed;
}

std::string CalibrationFile::describe_mixed() const {
  if (!mixed_) return "";
  std::string s;
  char line[200];
  std::snprintf(line, sizeof line, "  %-5s %6s %6s   %-34s %-34s\n", mixed_->per_head ? "l.h" : "layer", "K bits",
                "V bits", "K error at 2 / 3 / 4 bits", "V error at 2 / 3 / 4 bits");
  s += line;
  for (size_t i = 0; i < mixed_->k_bits.size(); ++i) {
    const auto& k = mixed_->k_error[i];
    const auto& v = mixed_->v_error[i];
    const size_t heads = size_t(mixed_->n_kv_heads);
    const std::string item = mixed_->per_head ? std::to_string(i / heads) + "." + std::to_string(i % heads) : std::to_string(i);
    std::snprintf(line, sizeof line, "  %-5s %6d %6d   %10.4g %10.4g %10.4g   %10.4g %10.4g %10.4g\n", item.c_str(),
                  mixed_->k_bits[i], mixed_->v_bits[i], k[0], k[1], k[2], v[0], v[1], v[2]);
    s += line;
  }
  const std::string window = meta_.residual > 0 ? ", fp16 window r=" + std::to_string(meta_.residual) : "";
  std::snprintf(line, sizeof line, "  total Fisher-weighted error %.4g; %.3f bits/value allocated at %d tokens (budget %g%s)\n",
                mixed_->error, mixed_->bits_per_value, meta_.budget_context, meta_.bits_budget, window.c_str());
  s += line;
  return s;
}

}  // namespace kvq
