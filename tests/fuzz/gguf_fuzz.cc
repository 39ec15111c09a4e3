// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes through the GGUF reader, every typed getter, the model
// config reader and the tokenizer loader. Any input must parse or fail with a Status: never a
// crash, a leak or a read outside the buffer (ASan/UBSan).
#include <cstdint>
#include <span>

#include "io/gguf.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto g = kvq::GgufFile::parse(kvq::MappedFile::from_memory({data, size}));
  if (!g.ok()) return 0;
  const kvq::GgufFile& f = **g;
  for (const auto& kv : f.kvs()) {
    (void)kvq::gguf_value_to_string(kv.value);
    (void)f.get_u64(kv.key);
    (void)f.get_i64(kv.key);
    (void)f.get_f64(kv.key);
    (void)f.get_string(kv.key);
    (void)f.get_f32_array(kv.key);
    (void)f.get_i32_array(kv.key);
    (void)f.get_string_array(kv.key);
  }
  for (const auto& t : f.tensors()) {
    // Touch the first and last byte the reader says the tensor has.
    if (t.data && t.n_bytes) {
      volatile uint8_t x = t.data[0];
      x = t.data[t.n_bytes - 1];
      (void)x;
    }
  }
  (void)kvq::read_model_config(f);
  auto tok = kvq::Tokenizer::from_gguf(f);
  if (tok.ok()) (void)tok->decode(tok->encode("Once upon a time <s>", true, true));
  return 0;
}
