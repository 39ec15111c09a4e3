// SPDX-License-Identifier: MIT
// Synthetic LLaMA models for speed work at real shapes: a GGUF v3 file with llama.cpp's tensor
// names, shapes and metadata, the tokenizer copied from another GGUF, and seeded random weights.
// Weights (docs/SYNTH.md): every matrix [rows, cols] ~ N(0, 1/cols) so that each layer keeps
// unit-RMS activations; token_embd ~ N(0, 1) so the residual stream starts at unit RMS like the
// block outputs added to it; norms = 1. The file is streamed (a tensor is generated and written
// a few MiB at a time), so memory stays small whatever the model size.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kvq/status.h"

namespace kvq {

struct SynthOptions {
  std::string output;      // file to write (replaced atomically when it exists)
  std::string vocab_from;  // GGUF whose tokenizer.* metadata is copied; it sets n_vocab
  int dim = 0;
  int heads = 0;
  int kv_heads = 0;
  int layers = 0;
  int ffn = 0;
  int head_dim = 0;  // 0: dim / heads
  int ctx = 4096;    // llama.context_length
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
  std::string type = "f16";  // matrices; norms are always f32 (as llama.cpp writes them)
  uint64_t seed = 0;
  int n_threads = 1;  // the file does not depend on it
};

struct SynthResult {
  uint64_t file_bytes = 0;
  uint64_t n_params = 0;
  int n_vocab = 0;
};

// Called after each piece written: bytes of the file done so far and in all.
using SynthProgress = std::function<void(uint64_t done, uint64_t total)>;

// Checks every option, the vocabulary file, the output directory and the free disk space before
// writing anything. Errors: kInvalidArgument for bad shapes or paths, kNotFound for a missing
// vocabulary file, kOutOfMemory when the disk cannot hold the file, kDataLoss on write errors;
// on any error no output (and no temporary file) is left behind.
StatusOr<SynthResult> synth_model(const SynthOptions& options, const SynthProgress& progress = {});

}  // namespace kvq
