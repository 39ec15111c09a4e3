// SPDX-License-Identifier: MIT
#include "model/weights.h"

#include <cctype>
#include <cstdlib>
#include <cstring>

#include "base/printable.h"

namespace kvq {

namespace {

std::string shape_str(const std::vector<uint64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

class Binder {
 public:
  Binder(const GgufFile& f, LlamaWeights* w) : f_(f), w_(w) {}

  // Binds tensor `name` expecting shape [rows, cols] (outermost first); cols only for vectors.
  Status bind(const std::string& name, int rows, int cols, Matrix* m, bool optional = false,
              bool* found = nullptr) {
    const GgufTensorInfo* t = f_.find_tensor(name);
    if (found) *found = t != nullptr;
    if (!t) {
      if (optional) return ok_status();
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

 private:
  const GgufFile& f_;
  LlamaWeights* w_;
};

}  // namespace

Matrix f32_matrix(const float* data, int rows, int cols) {
  return {reinterpret_cast<const uint8_t*>(data), find_weight_format(uint32_t(GgmlType::kF32)), rows,
          cols, size_t(cols) * sizeof(float)};
}

StatusOr<std::unique_ptr<LlamaWeights>> load_llama_weights(const GgufFile& file,
                                                           const ModelConfig& c) {
  auto w = std::make_unique<LlamaWeights>();
  Binder b(file, w.get());
  KVQ_RETURN_IF_ERROR(b.bind("token_embd.weight", c.n_vocab, c.n_embd, &w->token_embd));
  KVQ_RETURN_IF_ERROR(b.bind("output_norm.weight", 1, c.n_embd, &w->output_norm));
  bool has_output = false;
  KVQ_RETURN_IF_ERROR(b.bind("output.weight", c.n_vocab, c.n_embd, &w->output, true, &has_output));
  if (!has_output) {
    w->output = w->token_embd;
    w->output_tied = true;
  }
  w->layers.resize(size_t(c.n_layers));
  for (int il = 0; il < c.n_layers; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    LayerWeights& l = w->layers[size_t(il)];
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_norm.weight", 1, c.n_embd, &l.attn_norm));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_q.weight", c.q_dim(), c.n_embd, &l.wq));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_k.weight", c.kv_dim(), c.n_embd, &l.wk));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_v.weight", c.kv_dim(), c.n_embd, &l.wv));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_output.weight", c.n_embd, c.q_dim(), &l.wo));
    KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_norm.weight", 1, c.n_embd, &l.ffn_norm));
    KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_gate.weight", c.n_ff, c.n_embd, &l.w_gate));
    KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_up.weight", c.n_ff, c.n_embd, &l.w_up));
    KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_down.weight", c.n_embd, c.n_ff, &l.w_down));
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
    if (name.ends_with("attn_q.bias") || name.ends_with("attn_k.bias") || name.ends_with("attn_v.bias")) {
      return unimplemented("tensor '" + name + "': attention biases are not supported");
    }
    if (name == "rope_freqs.weight") {
      return unimplemented("tensor 'rope_freqs.weight': per-dimension RoPE frequencies are not supported");
    }
  }
  return w;
}

}  // namespace kvq
