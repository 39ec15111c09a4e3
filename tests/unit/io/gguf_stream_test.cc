// SPDX-License-Identifier: MIT
// GgufWriter::add_value copies every value type; declared tensors streamed through GgufStream in
// pieces of any size give the same bytes as serialize(); an unfinished stream leaves no file.
#include "io/gguf_stream.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace kvq {
namespace {

namespace fs = std::filesystem;

StatusOr<std::unique_ptr<GgufFile>> parse(const std::vector<uint8_t>& b) {
  return GgufFile::parse(MappedFile::from_memory(b));
}

TEST(GgufWriter, AddValueRoundTripsEveryType) {
  GgufWriter w;
  w.add_u32("u32", 7);
  w.add_i32("i32", -7);
  w.add_u64("u64", uint64_t(1) << 40);
  w.add_f32("f32", 0.1f);
  w.add_bool("bool", true);
  w.add_string("str", "hello");
  const float f[] = {1.5f, -2.0f};
  w.add_f32_array("fa", f);
  const int32_t i[] = {3, -4, 5};
  w.add_i32_array("ia", i);
  const std::string s[] = {"a", "", "ccc"};
  w.add_string_array("sa", s);
  const auto src_bytes = w.serialize();
  auto src = parse(src_bytes);
  ASSERT_TRUE(src.ok()) << src.status().to_string();
  GgufWriter copy;
  for (const auto& kv : (*src)->kvs()) copy.add_value(kv.key, kv.value);
  EXPECT_EQ(copy.serialize(), src_bytes);
}

std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

class GgufStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string t = (fs::temp_directory_path() / "kvq_stream_XXXXXX").string();
    ASSERT_NE(mkdtemp(t.data()), nullptr);
    dir_ = t;
  }
  void TearDown() override { fs::remove_all(dir_); }
  size_t n_files() const { return size_t(std::distance(fs::directory_iterator(dir_), fs::directory_iterator())); }
  fs::path dir_;
};

TEST_F(GgufStreamTest, StreamedPiecesMatchSerialize) {
  // Sizes chosen so that tensors end off the alignment and one is empty.
  const std::vector<std::vector<uint64_t>> shapes = {{5, 3}, {0}, {7}, {2, 2, 2}};
  GgufWriter held, declared;
  held.add_string("general.architecture", "llama");
  declared.add_string("general.architecture", "llama");
  std::vector<uint8_t> all;
  for (size_t t = 0; t < shapes.size(); ++t) {
    uint64_t n = 1;
    for (uint64_t d : shapes[t]) n *= d;
    std::vector<uint8_t> data(n * 2);
    for (size_t k = 0; k < data.size(); ++k) data[k] = uint8_t(t * 31 + k);
    const std::string name = std::string("t").append(std::to_string(t));
    held.add_tensor(name, shapes[t], 1, data);
    ASSERT_TRUE(declared.declare_tensor(name, shapes[t], 1).ok());
    all.insert(all.end(), data.begin(), data.end());
  }
  const std::string path = (dir_ / "s.gguf").string();
  auto s = GgufStream::create(declared, path);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  for (size_t at = 0; at < all.size(); at += 3) {  // pieces straddle tensor boundaries
    ASSERT_TRUE((*s)->append(std::span(all).subspan(at, std::min<size_t>(3, all.size() - at))).ok());
  }
  EXPECT_FALSE((*s)->append(std::span(all).first(1)).ok());  // past the declared tensors
  ASSERT_TRUE((*s)->commit().ok());
  const auto want = held.serialize();
  EXPECT_EQ((*s)->total_bytes(), want.size());
  EXPECT_EQ(read_all(path), std::string(want.begin(), want.end()));
  EXPECT_EQ(n_files(), 1u);
}

TEST_F(GgufStreamTest, IncompleteStreamFailsAndLeavesNothing) {
  GgufWriter w;
  const uint64_t ne[] = {64};
  ASSERT_TRUE(w.declare_tensor("q", ne, 8).ok());  // Q8_0: 2 blocks, 68 bytes
  const uint64_t bad[] = {40};
  EXPECT_FALSE(w.declare_tensor("r", bad, 8).ok());
  const std::string path = (dir_ / "s.gguf").string();
  {
    auto s = GgufStream::create(w, path);
    ASSERT_TRUE(s.ok());
    const std::vector<uint8_t> some(30, 1);
    ASSERT_TRUE((*s)->append(some).ok());
    EXPECT_EQ((*s)->commit().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(n_files(), 0u);
  EXPECT_FALSE(GgufStream::create(w, (dir_ / "no/s.gguf").string()).ok());
}

}  // namespace
}  // namespace kvq
