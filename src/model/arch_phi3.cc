// SPDX-License-Identifier: MIT
#include "model/arch_phi3.h"

namespace kvq {

Status check_phi3_tensors(const GgufFile& file) {
  for (const char* name : {"rope_factors_long.weight", "rope_factors_short.weight"}) {
    if (file.find_tensor(name)) {
      return unimplemented(std::string("tensor '") + name +
                           "': Phi-3's LongRoPE frequency factors (128K-context models) are not supported");
    }
  }
  return ok_status();
}

Status bind_phi3_fused(TensorBinder& b, const ModelConfig& c, const std::string& p, LayerWeights* l) {
  // Row ranges of the fused tensors are matrices in place: no copy, and each projection's rows
  // are the same bytes llama.cpp's views of the fused result come from.
  Matrix qkv;
  KVQ_RETURN_IF_ERROR(b.bind(p + "attn_qkv.weight", c.q_dim() + 2 * c.kv_dim(), c.n_embd, &qkv, true));
  if (qkv.present()) {
    l->wq = qkv.row_range(0, c.q_dim());
    l->wk = qkv.row_range(c.q_dim(), c.kv_dim());
    l->wv = qkv.row_range(c.q_dim() + c.kv_dim(), c.kv_dim());
  } else {
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_q.weight", c.q_dim(), c.n_embd, &l->wq));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_k.weight", c.kv_dim(), c.n_embd, &l->wk));
    KVQ_RETURN_IF_ERROR(b.bind(p + "attn_v.weight", c.kv_dim(), c.n_embd, &l->wv));
  }
  Matrix up;
  KVQ_RETURN_IF_ERROR(b.bind(p + "ffn_up.weight", 2 * c.n_ff, c.n_embd, &up));
  l->w_gate = up.row_range(0, c.n_ff);
  l->w_up = up.row_range(c.n_ff, c.n_ff);
  return ok_status();
}

}  // namespace kvq
