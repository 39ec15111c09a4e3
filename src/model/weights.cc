// SPDX-License-Identifier: MIT
#include "model/weights.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "base/printable.h"
#include "model/arch_phi3.h"
#include "model/tensor_binder.h"

namespace kvq {

namespace {

std::string shape_str(const std::vector<uint64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

Status TensorBinder::bind(const std::string& name, int rows, int cols, Matrix* m, bool optional) {
  const GgufTensorInfo* t = f_.find_tensor(name);
  if (!t) {
    if (optional) {
      *m = Matrix{};
      return ok_status();
    }
    return not_found("tensor '" + printable(name) + "' is missing");
  }
  const std::vector<uint64_t> want =
      rows == 1 ? std::vector<uint64_t>{uint64_t(cols)} : std::vector<uint64_t>{uint64_t(rows), uint64_t(cols)};
  if (t->shape() != want) {
    return invalid_argument("tensor '" + name + "' has shape " + shape_str(t->shape()) +
                            " but the model metadata implies " + shape_str(want));
  }
  const WeightFormat* fmt = find_weight_format(t->type);
  if (!fmt) {
    return unimplemented("tensor '" + name + "' has type " + ggml_type_name(t->type) +
                         "; kvq computes with " + weight_format_names() + " weights");
  }
  if (fmt->type == GgmlType::kF32 && reinterpret_cast<uintptr_t>(t->data) % alignof(float) != 0) {
    return data_loss("tensor '" + name + "' data is misaligned");
  }
  const size_t n = size_t(rows) * size_t(cols);
  bound_.insert(name);
  m->rows = rows;
  m->cols = cols;
  m->format = fmt;
  m->data = t->data;
  m->row_bytes = size_t(t->n_bytes / uint64_t(rows));
  w_->n_params += n;
  w_->mapped_bytes += size_t(t->n_bytes);
  if (rows > 1 || fmt->type == GgmlType::kF32) return ok_status();
  // A norm vector in another format: n_embd floats, converted once so rmsnorm reads f32.
  AlignedBuffer<float> buf;
  if (!buf.resize(n)) return out_of_memory("cannot allocate f32 copy of '" + name + "'");
  m->dequantize_row(0, buf.data(), KernelPath::kRef);
  *m = f32_matrix(buf.data(), 1, cols);
  w_->converted.push_back(std::move(buf));
  return ok_status();
}

Matrix f32_matrix(const float* data, int rows, int cols) {
  return {reinterpret_cast<const uint8_t*>(data), find_weight_format(uint32_t(GgmlType::kF32)), rows,
          cols, size_t(cols) * sizeof(float)};
}

StatusOr<std::unique_ptr<LlamaWeights>> load_llama_weights(const GgufFile& file,
                                                           const ModelConfig& c) {
  auto w = std::make_unique<LlamaWeights>();
  TensorBinder b(file, w.get());
  KVQ_RETURN_IF_ERROR(b.bind("token_embd.weight", c.n_vocab, c.n_embd, &w->token_embd));
  KVQ_RETURN_IF_ERROR(b.bind("output_norm.weight", 1, c.n_embd, &w->output_norm));
  KVQ_RETURN_IF_ERROR(b.bind("output.weight", c.n_vocab, c.n_embd, &w->output, true));
  if (!w->output.present()) {
    w->output = w->token_embd;
    w->output_tied = true;
  }
  Matrix freqs;
  KVQ_RETURN_IF_ERROR(b.bind("rope_freqs.weight", 1, c.rope_dim / 2, &freqs, true));
  if (freqs.present()) {
    w->rope_freqs.assign(freqs.f32(), freqs.f32() + freqs.cols);
    for (float f : w->rope_freqs) {
      if (!(f > 0.0f && std::isfinite(f))) {
        return data_loss("tensor 'rope_freqs.weight' has a factor that is not positive and finite");
      }
    }
  }
  if (c.arch == "phi3") KVQ_RETURN_IF_ERROR(check_phi3_tensors(file));
  w->layers.resize(size_t(c.n_layers));
  for (int il = 0; il < c.n_layers; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    LayerWeights& l = w->layers[size_t(il)];
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_norm.weight", 1, c.n_embd, &l.attn_norm));
    KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_norm.weight", 1, c.n_embd, &l.ffn_norm));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_output.weight", c.n_embd, c.q_dim(), &l.wo));
    KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_down.weight", c.n_embd, c.n_ff, &l.w_down));
    if (c.arch == "phi3") {
      KVQ_RETURN_IF_ERROR(bind_phi3_fused(b, c, p, &l));
    } else {
      KVQ_RETURN_IF_ERROR(b.bind(p + "attn_q.weight", c.q_dim(), c.n_embd, &l.wq));
      KVQ_RETURN_IF_ERROR(b.bind(p + "attn_k.weight", c.kv_dim(), c.n_embd, &l.wk));
      KVQ_RETURN_IF_ERROR(b.bind(p + "attn_v.weight", c.kv_dim(), c.n_embd, &l.wv));
      KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_gate.weight", c.n_ff, c.n_embd, &l.w_gate));
      KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_up.weight", c.n_ff, c.n_embd, &l.w_up));
    }
    // Biases are optional in every architecture, as in llama.cpp (Qwen2 has Q/K/V biases).
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_q.bias", 1, c.q_dim(), &l.bq, true));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_k.bias", 1, c.kv_dim(), &l.bk, true));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_v.bias", 1, c.kv_dim(), &l.bv, true));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_output.bias", 1, c.n_embd, &l.bo, true));
  }
  for (const auto& t : file.tensors()) {
    const std::string name = printable(t.name);
    // A layer the metadata does not have (llama.cpp refuses these too): the file is not the
    // model its block_count describes.
    if (name.starts_with("blk.")) {
      const size_t dot = name.find('.', 4);
      const std::string idx = name.substr(4, dot == std::string::npos ? std::string::npos : dot - 4);
      char* end = nullptr;
      const unsigned long long il = std::strtoull(idx.c_str(), &end, 10);
      if (idx.empty() || *end != '\0' || !std::isdigit(static_cast<unsigned char>(idx[0])) ||
          il >= uint64_t(c.n_layers)) {
        return data_loss("tensor '" + name + "' names a layer the model does not have (block_count " +
                         std::to_string(c.n_layers) + ")");
      }
    }
    // Anything else kvq would silently not compute with (norm biases, FFN biases, ...).
    if (!b.was_bound(name)) {
      return unimplemented("tensor '" + name + "' of a '" + printable(c.arch) +
                           "' model is not used by kvq's graph of that architecture");
    }
  }
  return w;
}

}  // namespace kvq
