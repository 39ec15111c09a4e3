// SPDX-License-Identifier: MIT
#include "io/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gguf_builder.h"
#include "io/gguf_writer.h"

namespace kvq {
namespace {

std::vector<uint8_t> sample_file() {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 3);
  w.add_f32("llama.rope.freq_base", 10000.0f);
  w.add_bool("tokenizer.ggml.add_bos_token", true);
  const float scores[] = {0.5f, -1.0f};
  w.add_f32_array("tokenizer.ggml.scores", scores);
  const std::string toks[] = {"<s>", "hello"};
  w.add_string_array("tokenizer.ggml.tokens", toks);
  std::vector<float> data(2 * 3);
  for (size_t i = 0; i < data.size(); ++i) data[i] = float(i);
  const uint64_t ne[] = {3, 2};
  w.add_tensor("t", ne, 0, {reinterpret_cast<const uint8_t*>(data.data()), data.size() * 4});
  return w.serialize();
}

StatusOr<std::unique_ptr<GgufFile>> parse(const std::vector<uint8_t>& b) {
  return GgufFile::parse(MappedFile::from_memory(b));
}

TEST(Gguf, ParsesMetadataAndTensors) {
  const auto bytes = sample_file();
  auto g = parse(bytes);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ((*g)->version(), 3u);
  EXPECT_EQ((*g)->get_string("general.architecture").value(), "llama");
  EXPECT_EQ((*g)->get_u64("llama.block_count").value(), 3u);
  EXPECT_FLOAT_EQ(float((*g)->get_f64("llama.rope.freq_base").value()), 10000.0f);
  EXPECT_TRUE((*g)->get_bool("tokenizer.ggml.add_bos_token").value());
  EXPECT_EQ((*g)->get_f32_array("tokenizer.ggml.scores").value()[1], -1.0f);
  EXPECT_EQ((*g)->get_string_array("tokenizer.ggml.tokens").value()[1], "hello");
  EXPECT_EQ((*g)->get_u64("missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*g)->get_string("llama.block_count").status().code(), StatusCode::kInvalidArgument);
  const GgufTensorInfo* t = (*g)->find_tensor("t");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape(), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(t->n_bytes, 24u);
  float v5;
  std::memcpy(&v5, t->data + 20, 4);
  EXPECT_EQ(v5, 5.0f);
}

// Every truncation of a valid file is an error, never a crash or an out-of-bounds read (ASan).
TEST(Gguf, EveryTruncationIsAnError) {
  const auto bytes = sample_file();
  for (size_t n = 0; n < bytes.size() - 1; ++n) {
    // Trailing alignment padding after the last tensor is not needed.
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    auto g = parse(cut);
    if (n < bytes.size() - 8) {
      EXPECT_FALSE(g.ok()) << "length " << n;
    }
    if (!g.ok()) {
      EXPECT_NE(g.status().code(), StatusCode::kOk);
      EXPECT_FALSE(g.status().message().empty());
    }
  }
}

// Single-byte corruptions anywhere in the header parse or fail cleanly.
TEST(Gguf, ByteFlipsNeverCrash) {
  const auto bytes = sample_file();
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      auto b = bytes;
      b[i] ^= x;
      auto g = parse(b);
      (void)g.ok();
    }
  }
}

TEST(Gguf, RejectsBadMagicAndVersion) {
  auto b = sample_file();
  b[0] = 'X';
  EXPECT_NE(parse(b).status().message().find("not a GGUF"), std::string::npos);
  b = sample_file();
  b[4] = 1;
  EXPECT_EQ(parse(b).status().code(), StatusCode::kUnimplemented);
  EXPECT_FALSE(parse({}).ok());
}

TEST(Gguf, HugeCountsAreRejectedWithoutAllocating) {
  auto b = sample_file();
  const uint64_t huge = ~uint64_t{0} / 2;
  std::memcpy(&b[16], &huge, 8);  // n_kv
  EXPECT_EQ(parse(b).status().code(), StatusCode::kDataLoss);
}

TEST(Gguf, OpensSharedModels) {
  const std::string path = std::string(KVQ_SHARED_DIR) + "/models/stories260K.gguf";
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.ok()) << g.status().to_string() << " (the shared/ folder must sit beside the repo)";
  EXPECT_EQ((*g)->get_string("general.architecture").value(), "llama");
  EXPECT_NE((*g)->find_tensor("token_embd.weight"), nullptr);
  EXPECT_EQ(GgufFile::open("/nonexistent.gguf").status().code(), StatusCode::kNotFound);
}


// Structural corruption llama.cpp's loader refuses is refused here too (issue 12, item 5):
// with first-wins lookups a duplicate would silently hide (or be hidden by) the other copy.
TEST(Gguf, RejectsDuplicateKeysAndTensorNamesAndOverlaps) {
  using testing::GgufBuilder;
  {
    GgufBuilder b;
    b.add_u32("a", 1);
    b.add_u32("a", 2);
    const auto st = parse(b.bytes(0)).status();
    EXPECT_EQ(st.code(), StatusCode::kDataLoss);
    EXPECT_NE(st.message().find("duplicate key 'a'"), std::string::npos) << st.message();
  }
  {
    GgufBuilder b;
    b.add_f32_tensor("w", 8, 0);
    b.add_f32_tensor("w", 8, 32);
    const auto st = parse(b.bytes(64)).status();
    EXPECT_NE(st.message().find("duplicate tensor name 'w'"), std::string::npos) << st.message();
  }
  {
    GgufBuilder b;  // 16 floats = 64 bytes at 0, the next starts inside them
    b.add_f32_tensor("a", 16, 0);
    b.add_f32_tensor("b", 8, 32);
    const auto st = parse(b.bytes(96)).status();
    EXPECT_NE(st.message().find("overlap"), std::string::npos) << st.message();
  }
  {
    GgufBuilder b;  // the same offset twice, listed out of order
    b.add_f32_tensor("a", 8, 32);
    b.add_f32_tensor("b", 8, 0);
    b.add_f32_tensor("c", 8, 32);
    EXPECT_FALSE(parse(b.bytes(96)).ok());
  }
  {
    GgufBuilder b;  // adjacent, out of order: fine
    b.add_f32_tensor("a", 8, 32);
    b.add_f32_tensor("b", 8, 0);
    EXPECT_TRUE(parse(b.bytes(64)).ok());
  }
}

// GGUF spec: an array of arrays stores each element as element type + count + elements, with
// no type tag of its own (issue 12, item 10: kvq used to expect one).
TEST(Gguf, NestedArraysFollowTheSpec) {
  using testing::GgufBuilder;
  std::vector<uint8_t> v;
  GgufBuilder::put<uint32_t>(v, 9);  // elements are arrays
  GgufBuilder::put<uint64_t>(v, 2);
  for (uint32_t n : {2u, 3u}) {      // [[1, 2], [1, 2, 3]] of u32
    GgufBuilder::put<uint32_t>(v, 4);
    GgufBuilder::put<uint64_t>(v, n);
    for (uint32_t i = 1; i <= n; ++i) GgufBuilder::put<uint32_t>(v, i);
  }
  GgufBuilder b;
  b.add_raw("nested", 9, v);
  b.add_u32("after", 7);
  const auto bytes = b.bytes(0);  // the parsed file points into it
  auto g = parse(bytes);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  const GgufValue* n = (*g)->find("nested");
  ASSERT_NE(n, nullptr);
  ASSERT_EQ(n->arrays.size(), 2u);
  EXPECT_EQ(n->arrays[1].n_elems, 3u);
  EXPECT_EQ((*g)->get_u64("after").value(), 7u);  // the reader ended the array where it ends
}

// Names from the file reach messages escaped: no raw ESC, and a NUL does not cut the message.
TEST(Gguf, MessagesEscapeFileBytes) {
  using testing::GgufBuilder;
  GgufBuilder b;
  b.add_f32_tensor(std::string("x\x1b[31m\0y", 8), 8, 0);
  b.add_f32_tensor(std::string("x\x1b[31m\0y", 8), 8, 32);
  const std::string m = parse(b.bytes(64)).status().message();
  EXPECT_EQ(m.find('\x1b'), std::string::npos) << m;
  EXPECT_EQ(m.find('\0'), std::string::npos);
  EXPECT_NE(m.find("x\\x1b[31m\\x00y'"), std::string::npos) << m;
}

}  // namespace
}  // namespace kvq
