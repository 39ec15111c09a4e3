// SPDX-License-Identifier: MIT
// The kvq binary's file handling (issue 12, items 3, 4, 8): every output flag against a missing
// directory, an unwritable directory, an existing directory, a FIFO without a reader, a
// character device, and an input; every input flag against a FIFO, a directory and a
// character device. Each bad case is one error line and exit 1 before any computation (the
// commands print progress once they start computing, so one line proves nothing ran), leaves
// no file behind and touches no input or device.
//
// The tests run as root in CI, and root writes into read-only directories, so "unwritable"
// is a regular file used as a directory (existing_file/x: ENOTDIR) and a /proc path.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "run_kvq.h"
#include "shared_data.h"

namespace kvq {
namespace {

namespace fs = std::filesystem;
using testing::run_kvq;
using testing::shared_path;

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class CliFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) / ("kvq_cli_files_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/existing_dir");
    // Copies, so that "no input touched" can be checked byte for byte.
    fs::copy_file(shared_path("models/stories260K.gguf"), model());
    std::ofstream(text()) << slurp(shared_path("text/tinystories/validation_head.txt")).substr(0, 60000);
    std::ofstream(dir_ + "/existing_file") << "x";
    EXPECT_EQ(::mkfifo(fifo().c_str(), 0600), 0);
    before_ = listing();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string model() const { return dir_ + "/model.gguf"; }
  std::string text() const { return dir_ + "/text.txt"; }
  std::string fifo() const { return dir_ + "/fifo"; }
  // name -> size and content of every regular file; the FIFO and directories by type.
  std::map<std::string, std::string> listing() const {
    std::map<std::string, std::string> m;
    for (const auto& e : fs::recursive_directory_iterator(dir_)) {
      const std::string k = e.path().string();
      m[k] = e.is_regular_file() ? slurp(k) : e.is_fifo() ? "<fifo>" : "<dir>";
    }
    return m;
  }
  // One error line with the needle, exit 1, and the folder exactly as it was.
  void expect_refused(const std::vector<std::string>& args, const std::string& needle) {
    const auto r = run_kvq(args, 60);
    std::string cmd;
    for (const auto& a : args) cmd += a + " ";
    EXPECT_EQ(r.exit_code, 1) << cmd << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << cmd << "\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << cmd << "\n" << r.output;
    EXPECT_TRUE(listing() == before_) << cmd << ": a file was left behind or an input changed";
    struct stat st {};
    ASSERT_EQ(::stat("/dev/null", &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << cmd << ": /dev/null was replaced";
  }

  std::string dir_;
  std::map<std::string, std::string> before_;
};

TEST_F(CliFiles, EveryOutputFlagAgainstBadPaths) {
  const std::vector<std::string> ppl = {"ppl", "-m", model(), "-f", text(), "-c", "64", "--chunks", "1"};
  const std::vector<std::string> cal = {"calibrate", "-m", model(), "-f", text(), "--windows", "1", "--window", "32"};
  struct Flag {
    std::vector<std::string> base;
    std::string flag;
  } flags[] = {{ppl, "--save-logits"}, {ppl, "--json"}, {ppl, "--plot"}, {cal, "-o"}};
  struct Bad {
    std::string path, needle;
  } bads[] = {
      {dir_ + "/missing_dir/out", "does not exist"},
      {dir_ + "/existing_file/out", "Not a directory"},
      {"/proc/kvq_cli_files_out", "cannot be created"},
      {dir_ + "/existing_dir", "it is a directory"},
      {fifo(), "FIFO with no reader"},
      {model(), "same file as model (-m)"},
      {text(), "same file as text file (-f)"},
      {"", "expects a file name"},
  };
  for (const auto& f : flags) {
    for (const auto& b : bads) {
      auto args = f.base;
      args.push_back(f.flag);
      args.push_back(b.path);
      if (f.flag == "--plot") args.insert(args.end(), {"--cache", "f16,int8"});
      expect_refused(args, b.needle);
    }
  }
  // Two outputs naming the same file.
  auto args = ppl;
  args.insert(args.end(), {"--cache", "f16,int8", "--json", dir_ + "/same", "--plot", dir_ + "/./same"});
  expect_refused(args, "same file as --json");
}

TEST_F(CliFiles, DevicesAndFifosAreWrittenNotReplaced) {
  const std::vector<std::string> ppl = {"ppl", "-m", model(), "-f", text(), "-c", "64", "--chunks", "1"};
  for (const char* flag : {"--json", "--save-logits"}) {
    auto args = ppl;
    args.insert(args.end(), {flag, "/dev/null"});
    const auto r = run_kvq(args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  const auto r = run_kvq({"calibrate", "-m", model(), "-f", text(), "--windows", "1", "--window", "32", "-o", "/dev/null"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  struct stat st {};
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  // A FIFO with a reader receives the JSON.
  std::string got;
  std::thread reader([&] { got = slurp(fifo()); });
  auto args = ppl;
  args.insert(args.end(), {"--json", fifo()});
  const auto w = run_kvq(args);
  reader.join();
  EXPECT_EQ(w.exit_code, 0) << w.output;
  EXPECT_NE(got.find("\"results\""), std::string::npos) << got;
  EXPECT_TRUE(fs::is_fifo(fifo()));
  EXPECT_TRUE(listing() == before_);
}

TEST_F(CliFiles, EveryInputFlagMustBeARegularFile) {
  const std::string calib = dir_ + "/c.kvqc";
  struct Special {
    std::string path, needle;
  } specials[] = {{fifo(), "is a FIFO"}, {dir_ + "/existing_dir", "is a directory"}, {"/dev/null", "is a character device"}};
  for (const auto& s : specials) {
    expect_refused({"run", "-m", s.path, "-p", "hi"}, s.needle);
    expect_refused({"info", "-m", s.path}, s.needle);
    expect_refused({"bench", "-m", s.path}, s.needle);
    expect_refused({"bench", "-m", model(), "-d", "8", "--text", s.path}, s.needle);
    expect_refused({"run", "-m", model(), "-f", s.path}, s.needle);
    expect_refused({"ppl", "-m", s.path, "-f", text()}, s.needle);
    expect_refused({"ppl", "-m", model(), "-f", s.path}, s.needle);
    expect_refused({"ppl", "-m", model(), "-f", text(), "--kl-base", s.path}, s.needle);
    expect_refused({"calibrate", "-m", model(), "-f", s.path, "-o", calib}, s.needle);
    expect_refused({"calibrate", "-m", s.path, "-f", text(), "-o", calib}, s.needle);
    expect_refused({"run", "-m", model(), "-p", "hi", "--cache", "kvquant-3", "--calib", s.path}, s.needle);
    expect_refused({"run", "-m", model(), "-p", "hi", "--cache", "kvquant-3", "--calib", "auto", "--calib-text", s.path},
                   s.needle);
  }
}

}  // namespace
}  // namespace kvq
