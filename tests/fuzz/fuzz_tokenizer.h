// SPDX-License-Identifier: MIT
// Vocabulary loading for the tokenizer fuzz targets.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace kvq {

// The tokenizer of a shared GGUF (path relative to ../shared); a fuzz target cannot run
// without it, so a failure aborts with the reason.
inline std::unique_ptr<Tokenizer> load_tokenizer_or_abort(const std::string& shared_rel) {
  const std::string path = std::string(KVQ_SHARED_DIR) + "/" + shared_rel;
  auto file = GgufFile::open(path);
  if (!file.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), file.status().to_string().c_str());
    std::abort();
  }
  auto tok = Tokenizer::from_gguf(**file);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), tok.status().to_string().c_str());
    std::abort();
  }
  return std::make_unique<Tokenizer>(std::move(*tok));
}

}  // namespace kvq
