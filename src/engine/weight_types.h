// SPDX-License-Identifier: MIT
// Weight types a GGUF writer can produce from f32 rows. One table entry per type: adding a type
// (q4_k etc. from src/quant's reference quantizers) is one encode function and one row here.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "io/gguf.h"
#include "kvq/status.h"

namespace kvq {

struct WeightType {
  const char* name;       // as given on the command line: "f16"
  GgmlType ggml;          // tensor type id in the file
  uint32_t file_type;     // general.file_type (llama.cpp's llama_ftype) of a file mostly of it
  // Encodes n values (a multiple of the type's block, see ggml_block_info) into the type's
  // bytes. Pure: the output depends only on the input, so files are reproducible.
  void (*encode)(const float* x, int64_t n, uint8_t* out);
};

std::span<const WeightType> weight_types();
// kInvalidArgument listing the known names for anything else.
StatusOr<const WeightType*> find_weight_type(std::string_view name);
std::string weight_type_names();  // "f32, f16, bf16, q8_0"

}  // namespace kvq
