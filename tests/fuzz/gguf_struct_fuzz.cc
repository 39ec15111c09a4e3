// SPDX-License-Identifier: MIT
// libFuzzer target, structure-aware: the input bytes drive a generator that always writes a
// valid GGUF header and then chooses metadata and tensor tables with mutated counts, offsets
// (aligned, adjacent, overlapping, past the end), duplicate keys and tensor names, layer
// indices beyond block_count, nested arrays and bad types. Byte-level fuzzing (gguf_fuzz)
// rarely gets past the header with such files; this target reaches the structural checks and
// the model loader. Invariant: parse and load succeed or return a Status; never a crash, a
// leak or an out-of-bounds read (ASan/UBSan); a file that parses has no duplicate names and no
// overlapping tensors.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "../unit/io/gguf_builder.h"
#include "io/gguf.h"
#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace {

using kvq::testing::GgufBuilder;

constexpr const char* kKeys[] = {"general.architecture", "llama.block_count", "llama.embedding_length",
                                 "llama.attention.head_count", "llama.context_length", "general.alignment",
                                 "tokenizer.ggml.model", "tokenizer.ggml.tokens", "a", "b"};
constexpr const char* kNames[] = {"token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight",
                                  "blk.1.attn_q.weight", "blk.99.ffn_up.weight", "blk.x.w", "w", "v"};
constexpr uint32_t kTypes[] = {0, 1, 8, 30, 2, 99};

void value(FuzzedDataProvider& in, uint32_t type, int depth, std::vector<uint8_t>& out) {
  switch (type) {
    case 0: case 1: case 7: GgufBuilder::put<uint8_t>(out, in.ConsumeIntegral<uint8_t>()); break;
    case 2: case 3: GgufBuilder::put<uint16_t>(out, in.ConsumeIntegral<uint16_t>()); break;
    case 4: case 5: case 6: GgufBuilder::put<uint32_t>(out, in.ConsumeIntegralInRange<uint32_t>(0, 4096)); break;
    case 10: case 11: case 12: GgufBuilder::put<uint64_t>(out, in.ConsumeIntegral<uint64_t>()); break;
    case 8: GgufBuilder::put_str(out, in.ConsumeRandomLengthString(64)); break;
    case 9: {
      const uint32_t et = in.ConsumeIntegralInRange<uint32_t>(0, 13);
      const bool lie = in.ConsumeBool();  // a count larger than the elements that follow
      const uint64_t n = in.ConsumeIntegralInRange<uint64_t>(0, 4);
      GgufBuilder::put<uint32_t>(out, et);
      GgufBuilder::put<uint64_t>(out, lie ? in.ConsumeIntegral<uint64_t>() : n);
      for (uint64_t i = 0; i < n && depth < 4; ++i) value(in, et, depth + 1, out);
      break;
    }
    default: break;  // an unknown type: no value bytes
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  GgufBuilder b;
  const int n_kv = in.ConsumeIntegralInRange(0, 10);
  for (int i = 0; i < n_kv; ++i) {
    const std::string key = kKeys[in.ConsumeIntegralInRange<size_t>(0, std::size(kKeys) - 1)];
    const uint32_t type = in.ConsumeIntegralInRange<uint32_t>(0, 13);
    std::vector<uint8_t> v;
    value(in, type, 0, v);
    b.add_raw(key, type, v);
  }
  const int n_tensors = in.ConsumeIntegralInRange(0, 10);
  uint64_t next = 0, prev = 0;
  for (int i = 0; i < n_tensors; ++i) {
    std::vector<uint64_t> ne(in.ConsumeIntegralInRange<size_t>(0, 5));
    for (auto& d : ne) d = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 64) : in.ConsumeIntegral<uint64_t>();
    const uint32_t type = kTypes[in.ConsumeIntegralInRange<size_t>(0, std::size(kTypes) - 1)];
    uint64_t offset = next;
    switch (in.ConsumeIntegralInRange(0, 4)) {
      case 0: break;                              // adjacent
      case 1: offset = prev; break;               // the same as the previous
      case 2: offset = prev + 32; break;          // inside the previous (or adjacent)
      case 3: offset = in.ConsumeIntegral<uint64_t>(); break;
      case 4: offset = next + 1; break;           // misaligned
    }
    uint64_t bytes = 4;
    for (uint64_t d : ne) bytes = d < (1u << 16) ? bytes * d : bytes;
    prev = offset;
    next = offset + (bytes + 31) / 32 * 32;
    b.add_tensor(kNames[in.ConsumeIntegralInRange<size_t>(0, std::size(kNames) - 1)], ne, type, offset);
  }
  // Header counts that disagree with the tables.
  const uint64_t t_over = in.ConsumeBool() ? uint64_t(n_tensors + in.ConsumeIntegralInRange(-2, 2)) : ~0ull;
  const uint64_t kv_over = in.ConsumeBool() ? uint64_t(n_kv + in.ConsumeIntegralInRange(-2, 2)) : ~0ull;
  const std::vector<uint8_t> file = b.bytes(in.ConsumeIntegralInRange<size_t>(0, 8192), t_over, kv_over);

  auto g = kvq::GgufFile::parse(kvq::MappedFile::from_memory(file));
  if (!g.ok()) return 0;
  const kvq::GgufFile& f = **g;
  std::set<std::string_view> names, keys;
  for (const auto& kv : f.kvs()) {
    if (!keys.insert(kv.key).second) std::abort();  // a duplicate key got through
    (void)kvq::gguf_value_to_string(kv.value);
  }
  for (const auto& t : f.tensors()) {
    if (!names.insert(t.name).second) std::abort();  // a duplicate tensor name got through
  }
  (void)kvq::gguf_content_hash(f);
  auto config = kvq::read_model_config(f);
  if (config.ok()) (void)kvq::load_llama_weights(f, *config);
  (void)kvq::Tokenizer::from_gguf(f);
  return 0;
}
