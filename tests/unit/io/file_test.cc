// SPDX-License-Identifier: MIT
// Input and output file handling (issue 12, items 3, 4 and 8): inputs must be regular files
// (refused by type, never opened when they are FIFOs); outputs are checked before any work,
// written atomically when regular, in place when a device or FIFO, never over an input.
// Runs as root in CI, so "unwritable" is a file used as a directory or a /proc path, not a
// read-only mode (root writes through those).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "io/input_file.h"
#include "io/mapped_file.h"
#include "io/output_file.h"

namespace kvq {
namespace {

namespace fs = std::filesystem;

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("kvq_file_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& body) const { std::ofstream(path(name)) << body; }
  std::string read(const std::string& name) const {
    std::ifstream f(path(name));
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  // Names in the folder besides the ones a test made: temporary files left behind.
  size_t n_entries() const { return size_t(std::distance(fs::directory_iterator(dir_), fs::directory_iterator())); }
  fs::path dir_;
};

TEST_F(FileTest, InputsMustBeRegularFiles) {
  write("t.txt", "hello");
  EXPECT_EQ(read_input_file(path("t.txt"), "-f").value(), "hello");
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  // Neither blocks on the FIFO (no writer ever comes).
  for (const std::string& p : {path("fifo"), dir_.string(), std::string("/dev/null")}) {
    const Status st = check_input_file(p, "-f");
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << p;
    EXPECT_NE(st.message().find("not a regular file"), std::string::npos) << st.message();
    EXPECT_EQ(read_input_file(p, "-f").status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(MappedFile::open(p).status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_NE(check_input_file(path("fifo"), "-f").message().find("is a FIFO"), std::string::npos);
  EXPECT_NE(check_input_file(dir_.string(), "-f").message().find("is a directory"), std::string::npos);
  EXPECT_EQ(check_input_file(path("missing"), "-f").code(), StatusCode::kNotFound);
  EXPECT_EQ(check_input_file("", "-f").code(), StatusCode::kInvalidArgument);
}

TEST_F(FileTest, RegularOutputsAreWrittenAtomically) {
  write("old", "old contents");
  auto out = OutputFile::prepare(path("old"), "--json");
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(n_entries(), 1u);  // the probe left nothing
  ASSERT_TRUE(out->write("new").ok());
  EXPECT_EQ(read("old"), "new");
  // A failing body leaves the old file as it was and no temporary file.
  auto again = OutputFile::prepare(path("old"), "--json");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->write([](int fd) { return data_loss("disk on fire"); }).ok());
  EXPECT_EQ(read("old"), "new");
  EXPECT_EQ(n_entries(), 1u);
  // A new file; a symbolic link is written through, not replaced.
  ASSERT_TRUE(OutputFile::prepare(path("fresh"), "--json")->write("x").ok());
  EXPECT_EQ(read("fresh"), "x");
  fs::create_symlink(path("fresh"), path("link"));
  ASSERT_TRUE(OutputFile::prepare(path("link"), "--json")->write("y").ok());
  EXPECT_TRUE(fs::is_symlink(path("link")));
  EXPECT_EQ(read("fresh"), "y");
}

TEST_F(FileTest, BadOutputPathsFailAtPrepare) {
  write("file", "x");
  struct Case {
    std::string path, needle;
  } cases[] = {
      {path("missing_dir/x.json"), "does not exist"},
      {path("file/x.json"), "Not a directory"},  // unwritable even for root
      {"/proc/kvq_cannot_create.json", "cannot"},
      {dir_.string(), "directory"},
      {"", "needs a file name"},
  };
  for (const auto& c : cases) {
    const auto st = OutputFile::prepare(c.path, "--json").status();
    EXPECT_FALSE(st.ok()) << c.path;
    EXPECT_NE(st.message().find(c.needle), std::string::npos) << c.path << ": " << st.message();
  }
  EXPECT_EQ(read("file"), "x");
  EXPECT_EQ(n_entries(), 1u);
}

TEST_F(FileTest, OutputsThatAreInputsAreRefused) {
  write("model.gguf", "weights");
  fs::create_symlink(path("model.gguf"), path("alias"));
  const NamedPath inputs[] = {{"-m", path("model.gguf")}};
  for (const std::string& p : {path("model.gguf"), path("alias"), dir_.string() + "/./model.gguf"}) {
    const auto st = OutputFile::prepare(p, "-o", inputs).status();
    EXPECT_NE(st.message().find("same file as -m"), std::string::npos) << p << ": " << st.message();
  }
  // Two outputs naming one new file.
  const NamedPath outputs[] = {{"--json", path("new.json")}};
  EXPECT_FALSE(OutputFile::prepare(path("./new.json"), "--plot", outputs).ok());
  EXPECT_EQ(read("model.gguf"), "weights");
}

TEST_F(FileTest, DevicesAndFifosAreWrittenInPlace) {
  // /dev/null stays a character device (the old PATH.tmp + rename replaced it).
  auto null_out = OutputFile::prepare("/dev/null", "--json");
  ASSERT_TRUE(null_out.ok()) << null_out.status().to_string();
  EXPECT_TRUE(null_out->direct());
  ASSERT_TRUE(null_out->write("discarded").ok());
  struct stat st {};
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));

  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  // No reader: an error now, not a hang later.
  EXPECT_NE(OutputFile::prepare(path("fifo"), "--json").status().message().find("no reader"), std::string::npos);
  std::string got;
  std::thread reader([&] {
    std::ifstream f(path("fifo"));
    got.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  });
  StatusOr<OutputFile> fifo_out = invalid_argument("not yet");
  for (int i = 0; i < 500 && !fifo_out.ok(); ++i) {  // until the reader has opened its end
    fifo_out = OutputFile::prepare(path("fifo"), "--json");
    if (!fifo_out.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(fifo_out.ok()) << fifo_out.status().to_string();
  ASSERT_TRUE(fifo_out->write("through the pipe").ok());
  reader.join();
  EXPECT_EQ(got, "through the pipe");
  EXPECT_TRUE(fs::is_fifo(path("fifo")));
}

}  // namespace
}  // namespace kvq
