// SPDX-License-Identifier: MIT
// Binds GGUF tensors to Matrix views with shape and type checks (model-internal: used by
// weights.cc and the per-architecture binders such as arch_phi3.cc).
#pragma once

#include <set>
#include <string>

#include "io/gguf.h"
#include "kvq/status.h"
#include "model/weights.h"

namespace kvq {

class TensorBinder {
 public:
  TensorBinder(const GgufFile& f, LlamaWeights* w) : f_(f), w_(w) {}

  // Binds tensor `name` expecting shape [rows, cols] (outermost first; a vector when rows is
  // 1). A missing optional tensor leaves *m absent (!present()) and is not an error. Vectors
  // in a format other than F32 are converted to f32 once, owned by the weights.
  Status bind(const std::string& name, int rows, int cols, Matrix* m, bool optional = false);
  // Whether a bind() found the tensor `name`: a tensor never bound is one kvq would ignore.
  bool was_bound(const std::string& name) const { return bound_.contains(name); }

 private:
  const GgufFile& f_;
  LlamaWeights* w_;
  std::set<std::string> bound_;
};

}  // namespace kvq
