// SPDX-License-Identifier: MIT
// Tokenizer throughput on the 2.1 MB TinyStories head in one call: SentencePiece (the LLaMA
// vocabulary) and byte-level BPE (Llama-3, Qwen2, GPT-2 with their pre-tokenizers). The unit
// tests check that this input round-trips; its speed is measured here, not asserted there.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "io/gguf.h"
#include "tokenizer/tokenizer.h"

namespace kvq {
namespace {

const char* const kVocabs[] = {
    "models/llama-spm-vocab-only.gguf",
    "fixtures/bpe/vocab/ggml-vocab-llama-bpe.gguf",
    "fixtures/bpe/vocab/ggml-vocab-qwen2.gguf",
    "fixtures/bpe/vocab/ggml-vocab-gpt-2.gguf",
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void BM_Encode(benchmark::State& state) {
  const std::string path = std::string(KVQ_SHARED_DIR) + "/" + kVocabs[state.range(0)];
  auto file = GgufFile::open(path);
  if (!file.ok()) {
    state.SkipWithError(("cannot open " + path + ": " + file.status().to_string()).c_str());
    return;
  }
  auto tok = Tokenizer::from_gguf(**file);
  const std::string text = read_text(std::string(KVQ_SHARED_DIR) + "/text/tinystories/train_head.txt");
  if (!tok.ok() || text.empty()) {
    state.SkipWithError("cannot load the vocabulary or the text (../shared missing?)");
    return;
  }
  size_t n_tokens = 0;
  for (auto _ : state) {
    const auto ids = tok->encode(text, true, true);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetLabel(kVocabs[state.range(0)]);
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["tokens"] = double(n_tokens);
}
BENCHMARK(BM_Encode)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace kvq

BENCHMARK_MAIN();
