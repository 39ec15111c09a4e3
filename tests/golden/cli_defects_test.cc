// SPDX-License-Identifier: MIT
// Regression tests for the defects of issue 12 ("Hardening") as a hostile user meets them:
// the crash with sinks >= window, gnuplot/shell injection through --plot and model names,
// invalid JSON, wrong numbers printed as results, a --kl-base from another run, raw bytes from
// files on the terminal, and the smaller ones (item numbers in the test names' comments).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "run_kvq.h"
#include "shared_data.h"

namespace kvq {
namespace {

namespace fs = std::filesystem;
using testing::run_kvq;
using testing::shared_path;

const std::string kModel = shared_path("models/stories260K.gguf");
const std::string kText = shared_path("text/tinystories/validation_head.txt");

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class CliDefects : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) / ("kvq_cli_defects_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void expect_error(const std::vector<std::string>& args, const std::string& needle) {
    const auto r = run_kvq(args);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  std::string dir_;
};

// Item 1: both commands exited 139 (SIGSEGV).
TEST_F(CliDefects, SinksCoveringTheWindowAreAnError) {
  expect_error({"run", "-m", kModel, "-p", "Once upon a time", "-n", "4", "--cache", "kvquant-3:sinks=512", "--calib",
                "auto"},
               "leaves no token");
  expect_error({"calibrate", "-m", kModel, "-f", kText, "--windows", "2", "--window", "128", "--sinks", "128", "-o",
                dir_ + "/x.kvqc"},
               "leaves no token");
  EXPECT_FALSE(fs::exists(dir_ + "/x.kvqc"));
}

// Item 2: the model's name went into the gnuplot script and the plot path into a shell command.
TEST_F(CliDefects, PlotRunsNoCommandFromFileNames) {
  if (system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed";
  // Run in dir_, so that a command that got through would create its file there.
  const std::string model = "m'; system \"touch PWNED\"; print '\n`touch PWNED3`.gguf";
  fs::copy_file(kModel, dir_ + "/" + model);
  const std::string plot = "x';touch PWNED2;'";
  const auto r = run_kvq({"ppl", "-m", model, "-f", kText, "-c", "64", "--chunks", "1", "--cache", "f16,int8,int4:g=8",
                          "--plot", plot}, 120, dir_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"/PWNED", "/PWNED2", "/PWNED3"}) EXPECT_FALSE(fs::exists(dir_ + f)) << f;
  EXPECT_EQ(slurp(dir_ + "/" + plot).substr(1, 3), "PNG");
  // A plain apostrophe in a name just works.
  const std::string plain = dir_ + "/it's.png";
  EXPECT_EQ(run_kvq({"ppl", "-m", kModel, "-f", kText, "-c", "64", "--chunks", "1", "--cache", "f16,int8", "--plot",
                     plain}).exit_code, 0);
  EXPECT_EQ(slurp(plain).substr(1, 3), "PNG");
}

// Item 6: quotes in paths, a header over 1,023 bytes and NaN made invalid JSON.
TEST_F(CliDefects, JsonIsValidWhateverThePaths) {
  std::string deep = dir_;
  for (int i = 0; i < 12; ++i) deep += "/a folder with \"quotes\" and a long name, number " + std::to_string(i);
  fs::create_directories(deep);
  const std::string model = deep + "/model \"x\".gguf";
  fs::copy_file(kModel, model);
  const std::string json = deep + "/out \"1\".json";
  const auto r = run_kvq({"ppl", "-m", model, "-f", kText, "-c", "64", "--chunks", "2", "--cache", "f16,int8", "--json",
                          json});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(slurp(json), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << slurp(json);
  EXPECT_EQ(j["model"], model);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_TRUE(j["results"][0]["kl_mean"].is_null());  // the base has no KL
  EXPECT_TRUE(j["results"][1]["kl_mean"].is_number());
  EXPECT_TRUE(j["results"][1]["ppl"].is_number());
}

// Item 6: "PPL = -nan" with exit 0, and "KL mean 0" from NaN base rows.
TEST_F(CliDefects, NoWrongNumbers) {
  expect_error({"ppl", "-m", kModel, "-f", kText, "-c", "64", "--chunks", "0"}, "--chunks must be at least 1");
  const std::string base = dir_ + "/base.kvql";
  ASSERT_EQ(run_kvq({"ppl", "-m", kModel, "-f", kText, "-c", "64", "--chunks", "2", "--save-logits", base}).exit_code, 0);
  std::string bytes = slurp(base);
  const float nan = std::nanf("");
  std::memcpy(&bytes[bytes.size() / 2 & ~size_t(3)], &nan, 4);
  std::ofstream(base, std::ios::binary) << bytes;
  expect_error({"ppl", "-m", kModel, "-f", kText, "-c", "64", "--chunks", "2", "--kl-base", base}, "non-finite");
}

// Item 7: a base from another text was refused only after the run, naming no difference.
TEST_F(CliDefects, KlBaseFromAnotherRunIsRefusedUpFront) {
  const std::string other = dir_ + "/other.txt";
  std::ofstream(other) << slurp(kText).substr(100000, 60000);
  const std::string base = dir_ + "/base.kvql";
  ASSERT_EQ(run_kvq({"ppl", "-m", kModel, "-f", other, "-c", "64", "--chunks", "2", "--save-logits", base}).exit_code, 0);
  // One line: refused before the run printed anything.
  expect_error({"ppl", "-m", kModel, "-f", kText, "-c", "64", "--chunks", "2", "--kl-base", base}, "text (tokens, hash)");
  expect_error({"ppl", "-m", shared_path("models/tinystories-l6-d256-h64.gguf"), "-f", other, "-c", "64", "--chunks", "2",
                "--kl-base", base},
               "model (content hash)");
}

// Item 9: ANSI escapes from a calibration text's name reached the terminal raw.
TEST_F(CliDefects, FileBytesAreEscapedOnTheTerminal) {
  const std::string text = dir_ + "/\x1b[31mred\x07.txt";
  std::ofstream(text) << slurp(kText).substr(0, 60000);
  const std::string cal = dir_ + "/c.kvqc";
  auto r = run_kvq({"calibrate", "-m", kModel, "-f", text, "--windows", "1", "--window", "64", "-o", cal});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos);
  r = run_kvq({"info", "-m", kModel, "--cache", "kvquant-3", "--calib", cal});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\\x1b[31mred\\x07.txt"), std::string::npos) << r.output;
  // An error quoting a NUL and an escape from a spec stays whole and on one line.
  expect_error({"run", "-m", kModel, "--cache", std::string("q9\x1b[2J\nx")}, "q9\\x1b[2J\\x0ax");
}

// Item 10, the smaller ones.
TEST_F(CliDefects, SmallerOnes) {
  expect_error({"run", "-m", kModel, "-p", "hi", "--calib", kModel}, "no cache here uses calibration");
  expect_error({"run", "-m", kModel, "-p", "hi", "--calib-text", kText}, "--calib-text is used only with --calib auto");
  // The prompt is checked before --calib auto calibrates (one line: no "calibrating on").
  expect_error({"run", "-m", kModel, "-c", "8", "-p", "Once upon a time there was a girl", "--cache", "kvquant-3",
                "--calib", "auto"},
               "does not fit -c 8");
  expect_error({"run", "-m", kModel, "-p", "hi", "--cache", "kivi-2:g=32:g=64"}, "option 'g' is given twice");
  expect_error({"run", "-m", kModel, "-f", ""}, "flag -f expects a file name");
  // The default text is derived from the model's folder; the message says so.
  const std::string lone = dir_ + "/lone.gguf";
  fs::copy_file(kModel, lone);
  expect_error({"calibrate", "-m", lone, "-o", dir_ + "/c.kvqc"}, "derived from the model's folder");
  expect_error({"run", "-m", lone, "-p", "hi", "--cache", "kvquant-3", "--calib", "auto"}, "derived from the model's folder");
  // Warnings, not errors: windows and benchmarks beyond the model's context (2048 here).
  auto r = run_kvq({"bench", "-m", kModel, "-p", "2040", "-n", "16", "-r", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: -p 2040 + -n 16 = 2056 tokens exceeds the model's context of 2048"),
            std::string::npos) << r.output;
}

// Item 11: -t beyond the CPUs this process may use is allowed, with a note.
TEST_F(CliDefects, ThreadsBeyondTheCpusAreNoted) {
  const auto r = run_kvq({"run", "-m", kModel, "-p", "hi", "-n", "4", "-t", "64"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("note: -t 64 is more threads than the"), std::string::npos) << r.output;
}

// Item 12: info reported KIVI's bits just after a window flush, ppl the peak. KIVI's window is
// now a ring of fixed capacity, so allocation only grows: info -c N is what a cache holding N
// tokens allocates, and ppl -c 256 reports its cache at 255 tokens.
TEST_F(CliDefects, InfoReportsThePeakBitsPplMeasures) {
  auto r = run_kvq({"info", "-m", kModel, "-c", "255", "--cache", "kivi-4:g=8:r=64"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t at = r.output.find(" bits/value");
  ASSERT_NE(at, std::string::npos) << r.output;
  const double info_bits = std::stod(r.output.substr(r.output.rfind(' ', at - 1) + 1));
  r = run_kvq({"ppl", "-m", kModel, "-f", kText, "-c", "256", "--chunks", "1", "--cache", "kivi-4:g=8:r=64"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t p = r.output.find(" bits/value, ");
  ASSERT_NE(p, std::string::npos) << r.output;
  const double ppl_bits = std::stod(r.output.substr(r.output.rfind(' ', p - 1) + 1));
  // The accounting counts expected sizes, the cache its allocation: equal to rounding.
  EXPECT_NEAR(info_bits, ppl_bits, 0.05) << r.output;
}

}  // namespace
}  // namespace kvq
