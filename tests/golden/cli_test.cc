// SPDX-License-Identifier: MIT
// The kvq binary on bad input: one clear line on stderr, a non-zero exit, no crash, no partial
// output file. Also the happy paths of run / ppl / info.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "shared_data.h"

namespace kvq {
namespace {

using testing::shared_path;

struct Result {
  int exit_code;
  std::string output;  // stdout + stderr
};

Result kvq(const std::string& args) {
  const std::string cmd = std::string(KVQ_BIN_DIR) + "/kvq " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  Result r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

const std::string kModel = shared_path("models/stories260K.gguf");
const std::string kText = shared_path("text/tinystories/validation_head.txt");

// A failing command exits 1 (not a signal) and says what is wrong on one line.
void expect_error(const std::string& args, const std::string& needle) {
  const Result r = kvq(args);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
}

TEST(Cli, BadFlagsAndFiles) {
  EXPECT_EQ(kvq("").exit_code, 2);
  EXPECT_EQ(kvq("frobnicate").exit_code, 2);
  expect_error("run -m " + kModel + " --bogus", "unknown flag '--bogus'");
  expect_error("run -m " + kModel + " -n abc", "flag -n expects an integer");
  expect_error("run -m " + kModel + " -t 0", "flag -t expects an integer in [1, 512]");
  expect_error("run -m " + kModel + " --temp nan", "flag --temp expects a number");
  expect_error("run -m " + kModel + " -n", "flag -n needs a value");
  expect_error("run -m " + kModel + " --cache q9", "unknown cache type 'q9'");
  expect_error("run -m " + kModel + " --kernels gpu", "--kernels must be");
  expect_error("run -p hi", "no model given");
  expect_error("run -m /nonexistent/model.gguf", "no such file");
  expect_error("run -m " + kText, "not a GGUF file");
  expect_error("ppl -m " + kModel, "no text given");
  expect_error("ppl -m " + kModel + " -f /nonexistent.txt", "cannot open text file");
  expect_error("ppl -m " + kModel + " -f " + kText + " --protocol bogus", "--protocol must be");
  expect_error("run -m " + shared_path("models/tinystories-l6-d256-h64.gguf") +
                   " -c 16000000 --cache f32", "of memory is available");
  // A truncated model.
  const std::string cut = ::testing::TempDir() + "/cut.gguf";
  {
    std::ifstream in(kModel, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size() / 2));
  }
  expect_error("run -m " + cut, "truncated or corrupt");
}

TEST(Cli, CalibrateAndUseTheFile) {
  const std::string out = ::testing::TempDir() + "/cli.kvqc";
  std::filesystem::remove(out);
  expect_error("calibrate -m " + kModel, "no output given");
  expect_error("calibrate -m " + kModel + " -o " + out + " --weighting bogus", "weighting must be");
  expect_error("calibrate -m " + kModel + " -o " + out + " --outliers 2", "--outliers must be");
  expect_error("calibrate -m " + kModel + " -o " + out + " -f /nonexistent.txt", "cannot open text file");
  EXPECT_FALSE(std::filesystem::exists(out));
  Result r = kvq("calibrate -m " + kModel + " -f " + kText + " --windows 2 --window 64 -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("k-means weights fisher-s2"), std::string::npos) << r.output;
  r = kvq("info -m " + kModel + " -c 256 --cache kvquant-3 --calib " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("calibration: "), std::string::npos) << r.output;
  r = kvq("run -m " + kModel + " -p hi -n 5 --cache kvquant-3 --calib " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_error("run -m " + kModel + " -p hi -n 5 --cache kvquant-3", "needs calibration");
  expect_error("run -m " + kModel + " -p hi -n 5 --cache kvquant-3 --calib " + kModel, "not a kvq calibration file");
  expect_error("run -m " + shared_path("models/tinystories-l6-d256-h64.gguf") + " -p hi -n 5 --cache kvquant-3 --calib " + out,
               "calibrated for another model");
}

// kvq calibrate --bits-budget, and kvquant-mixed in info, run and ppl; the mismatches are errors.
TEST(Cli, MixedPrecisionCalibrationAndCache) {
  const std::string tb = shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string out = ::testing::TempDir() + "/cli_mixed.kvqc", plain = ::testing::TempDir() + "/cli_plain.kvqc";
  std::filesystem::remove(out);
  expect_error("calibrate -m " + tb + " -o " + out + " --bits-budget x", "--bits-budget must be");
  expect_error("calibrate -m " + tb + " -o " + out + " --bits-budget 1.5", "every layer at 2 bits");
  expect_error("calibrate -m " + tb + " -o " + out + " --bits-budget 3 --weighting none", "Fisher");
  expect_error("calibrate -m " + tb + " -o " + out + " --budget-ctx 64", "only with --bits-budget");
  EXPECT_FALSE(std::filesystem::exists(out));
  Result r = kvq("calibrate -m " + tb + " -f " + kText + " --windows 1 --window 128 --bits-budget 3.2 --width-per layer -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("per-layer widths for --bits-budget 3.2"), std::string::npos) << r.output;
  r = kvq("info -m " + tb + " --cache kvquant-mixed,kvquant-3 --calib " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("per-layer widths (kvquant-mixed)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("K error at 2 / 3 / 4 bits"), std::string::npos) << r.output;
  r = kvq("run -m " + tb + " -p hi -n 5 --cache kvquant-mixed --calib " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = kvq("ppl -m " + tb + " -f " + kText + " -c 128 --chunks 1 --cache-k kvquant-mixed --cache-v kvquant-3 --calib " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_error("info -m " + tb + " --cache kvquant-mixed", "--bits-budget");
  expect_error("run -m " + tb + " -p hi -n 5 --cache kvquant-mixed --calib auto", "--bits-budget");
  r = kvq("calibrate -m " + tb + " -f " + kText + " --windows 1 --window 128 -o " + plain);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_error("run -m " + tb + " -p hi -n 5 --cache kvquant-mixed --calib " + plain, "has none");
}

// The bits per value ("3.4xx") that kvq calibrate printed for its `which` ("per-layer",
// "per-head") plan at --bits-budget 3.5, or "" when it printed none.
std::string plan_bits_in(const std::string& output, const std::string& which) {
  const std::string tag = which + " widths for --bits-budget 3.5 (";
  const size_t at = output.find(tag);
  return at == std::string::npos ? std::string() : output.substr(at + tag.size(), 5);
}

// What expect_plan_accounted saw: kvq calibrate's output and kvq info's.
struct PlanOutputs {
  std::string calibrate, info;
};

// kvq calibrate on the testbed (one window of 128 tokens of kText) with flags, writing out; its
// `which` ("per-layer", "per-head") plan at --bits-budget 3.5 must be what kvq info -c 1024
// accounts for spec (the --cache flags and --calib FILE). Empty outputs after a failure.
PlanOutputs expect_plan_accounted(const std::string& flags, const std::string& out, const std::string& which,
                                  const std::string& spec) {
  const std::string tb = shared_path("models/tinystories-l6-d256-h64.gguf");
  Result r = kvq("calibrate -m " + tb + " -f " + kText + " --windows 1 --window 128 " + flags + " -o " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string plan_bits = plan_bits_in(r.output, which);
  EXPECT_FALSE(plan_bits.empty()) << r.output;
  if (r.exit_code != 0 || plan_bits.empty()) return {};
  Result info = kvq("info -m " + tb + " -c 1024" + spec);
  EXPECT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find(plan_bits + " bits/value"), std::string::npos) << plan_bits << "\n" << info.output;
  return {r.output, info.output};
}

// kvq calibrate --norm 8: the widths' bits per value is what kvq info accounts for the
// kvquant-mixed:norm=8 cache it serves; another value norm is refused with the fix.
TEST(Cli, MixedPrecisionPlannedForTheCacheNorm) {
  const std::string tb = shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string out = ::testing::TempDir() + "/cli_mixed_n8.kvqc";
  expect_error("calibrate -m " + tb + " -o " + out + " --norm 12 --bits-budget 3", "--norm must be 16 or 8");
  const PlanOutputs plan = expect_plan_accounted("--outliers 0 --norm 8 --bits-budget 3.5 --width-per layer", out,
                                                 "per-layer", " --cache kvquant-mixed:outliers=0:norm=8 --calib " + out);
  EXPECT_NE(plan.calibrate.find(", norm 8,"), std::string::npos) << plan.calibrate;
  // (info has printed the model by then: not one line, so not expect_error.)
  Result r = kvq("info -m " + tb + " -c 1024 --cache kvquant-mixed:outliers=0 --calib " + out);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chosen for values with norm=8 but the cache asks norm=16; recalibrate with 'kvq calibrate "
                          "--norm 16'"),
            std::string::npos)
      << r.output;
  expect_error("ppl -m " + tb + " -f " + kText + " -c 128 --chunks 1 --cache kvquant-mixed:outliers=0 --calib " + out,
               "--norm 16");
}

// kvq calibrate --width-per head (the default): both granularities from one Fisher pass; the per-head plan's
// bits per value is what kvq info accounts for the cache it serves, which runs; bad values are
// errors.
TEST(Cli, MixedPrecisionPerHead) {
  const std::string tb = shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string out = ::testing::TempDir() + "/cli_heads.kvqc";
  const std::string head = ::testing::TempDir() + "/cli_heads.fisher-s2.o0.head.kvqc";
  expect_error("calibrate -m " + tb + " -o " + out + " --bits-budget 3 --width-per kv", "--width-per must be layer or head");
  expect_error("calibrate -m " + tb + " -o " + out + " --width-per head", "only with --bits-budget");
  const std::string spec = " --cache kvquant-mixed:outliers=0:norm=8:sinks=0 --calib " + head;
  const PlanOutputs plan = expect_plan_accounted("--outliers 0 --norm 8 --sinks 0 --bits-budget 3.5 --width-per layer,head",
                                                 out, "per-head", spec);
  EXPECT_NE(plan.calibrate.find("per-layer widths for --bits-budget 3.5"), std::string::npos) << plan.calibrate;
  EXPECT_NE(plan.info.find("per-head widths (kvquant-mixed)"), std::string::npos) << plan.info;
  Result r = kvq("ppl -m " + tb + " -f " + kText + " -c 128 --chunks 1" + spec);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Per head is the default.
  r = kvq("calibrate -m " + tb + " -f " + kText + " --windows 1 --window 128 --outliers 0 --bits-budget 3.2 -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("per-head widths for --bits-budget 3.2"), std::string::npos) << r.output;
}

// --outliers-v: key outliers only; the file plans for the split and serves it, and a value
// spec with the keys' fraction is refused naming the values.
TEST(Cli, KeyOnlyOutliers) {
  const std::string tb = shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string out = ::testing::TempDir() + "/cli_kout.kvqc";
  expect_error("calibrate -m " + tb + " -o " + out + " --outliers-v 0.7", "--outliers-v must be");
  expect_error("calibrate -m " + tb + " -o " + out + " --outliers-v x", "--outliers-v must be");
  const std::string spec = " --cache-k kvquant-mixed:outliers=0.002:sinks=0 --cache-v kvquant-mixed:outliers=0:norm=8:sinks=0"
                           " --calib " + out;
  const PlanOutputs plan = expect_plan_accounted("--outliers 0.002 --outliers-v 0 --norm 8 --sinks 0 --bits-budget 3.5", out,
                                                 "per-head", spec);
  EXPECT_NE(plan.calibrate.find("outliers 0.002 (values 0)"), std::string::npos) << plan.calibrate;
  Result r = kvq("ppl -m " + tb + " -f " + kText + " -c 128 --chunks 1" + spec);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_error("ppl -m " + tb + " -f " + kText + " -c 128 --chunks 1 --cache kvquant-mixed:outliers=0.002:norm=8:sinks=0 --calib " + out,
               "values' outliers=0.000000");
}

// kvq calibrate --r: the widths are planned with the fp16 window's bytes, which kvq info accounts
// for the cache with that r=; a cache with another r is refused with the fix.
TEST(Cli, MixedPrecisionPlannedForTheWindow) {
  const std::string tb = shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string out = ::testing::TempDir() + "/cli_window.kvqc";
  expect_error("calibrate -m " + tb + " -o " + out + " --r 8", "--r is used only with --bits-budget");
  expect_error("calibrate -m " + tb + " -o " + out + " --r -1 --bits-budget 3", "--r");
  const std::string spec = " --cache kvquant-mixed:outliers=0:norm=8:sinks=0:r=16 --calib " + out;
  const PlanOutputs plan = expect_plan_accounted("--outliers 0 --norm 8 --sinks 0 --r 16 --bits-budget 3.5", out,
                                                 "per-head", spec);
  EXPECT_NE(plan.calibrate.find("fp16 window r=16"), std::string::npos) << plan.calibrate;
  EXPECT_NE(plan.info.find("kvquant-mixed:outliers=0:norm=8:sinks=0:r=16"), std::string::npos) << plan.info;
  Result r = kvq("ppl -m " + tb + " -f " + kText + " -c 128 --chunks 1" + spec);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_error("ppl -m " + tb + " -f " + kText + " -c 128 --chunks 1 --cache kvquant-mixed:outliers=0:norm=8:sinks=0 --calib " + out,
               "chosen for an fp16 window of r=16 tokens but the cache asks r=0; recalibrate with 'kvq calibrate --r 0'");
}

TEST(Cli, FailedRunLeavesNoOutputFile) {
  const std::string out = ::testing::TempDir() + "/never.kvql";
  std::filesystem::remove(out);
  // More context than the text has tokens: the run fails before anything is written.
  expect_error("ppl -m " + kModel + " -f " + shared_path("golden/tokenizer/mixed_unicode.txt") +
                   " -c 100000 --save-logits " + out,
               "fewer than one chunk");
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
}

TEST(Cli, RunPplInfoAndKlRoundTrip) {
  Result r = kvq("run -m " + kModel + " -p \"Once upon a time\" -n 20 --temp 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Once upon a time, there was a little girl named Lily."), std::string::npos);
  EXPECT_NE(r.output.find("decode:"), std::string::npos);
  r = kvq("info -m " + kModel + " -c 512");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("n_kv_heads 4, head_dim 8"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("640.0 bytes/token  16.000 bits/value"), std::string::npos) << r.output;

  const std::string base = ::testing::TempDir() + "/base.kvql";
  r = kvq("ppl -m " + kModel + " -f " + kText + " -c 128 --chunks 4 --save-logits " + base);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = kvq("ppl -m " + kModel + " -f " + kText + " -c 128 --chunks 4 --cache f32 --kl-base " + base);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("KL mean"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("top-1 agreement"), std::string::npos) << r.output;
  // A base made from other settings is refused.
  expect_error("ppl -m " + kModel + " -f " + kText + " -c 128 --chunks 3 --kl-base " + base,
               "different tokens");
  expect_error("ppl -m " + kModel + " -f " + kText + " -c 128 --kl-base " + kModel,
               "not a kvq log-prob file");
  // A report compares against f16 itself: a --kl-base there is refused, not ignored.
  expect_error("ppl -m " + kModel + " -f " + kText + " -c 128 --chunks 4 --cache f16,int8 --kl-base " + base,
               "--kl-base takes a single --cache");
}

// A report gives KL with its standard error and each row's paired KL difference to the first
// compared row; kvq frontier bins rows of several --json files by bits, pairs them across files
// (--token-kl), places llama.cpp's types beside them and marks the Pareto frontier.
TEST(Cli, PairedKlAndFrontier) {
  const std::string dir = ::testing::TempDir();
  const std::string a = dir + "/front_a.json", b = dir + "/front_b.json", other = dir + "/front_c.json";
  for (const auto& f : {a, b, other}) std::filesystem::remove(f);
  const std::string run = "ppl -m " + kModel + " -f " + kText + " -c 128 --chunks 2 --token-kl --json ";
  Result r = kvq(run + a + " --cache f16,int8,int4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("dKL vs int8 (± paired s.e.)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| (ref) |"), std::string::npos) << r.output;
  r = kvq(run + b + " --cache f16,int2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // llama.cpp's summaries of another model are refused; lines without a base PPL are taken.
  expect_error("frontier --json " + a + " --peers " + shared_path("golden/tinystories-l6-d256-h64.llamacpp-cache-types.txt"),
               "was scored on other tokens");
  const std::string peers = dir + "/front_peers.txt";
  std::ofstream(peers) << "f16: Final estimate: PPL = 4.6 +/- 0.1\n"
                          "q8_0: 99.0% KLD: 0.000336;Mean KLD: 0.000040 ± 0.000001;Same top p: 99.726 ± 0.073 %\n";
  r = kvq("frontier --json " + a + "," + b + " --budgets 2,4,8 --peers " + peers);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // int2 (about 3 bits with its scales on head_dim 8) and int4 share the 4-bit table; the
  // better of the two is the reference of the paired differences.
  EXPECT_NE(r.output.find("### ≈ 4 bits per value"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ΔKL vs int4 ± paired s.e."), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| llama.cpp q8_0 | 8.500 |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Pareto frontier"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("nan"), std::string::npos) << r.output;
  // Results of another run setting are not compared with these.
  r = kvq("ppl -m " + kModel + " -f " + kText + " -c 128 --chunks 3 --json " + other + " --cache f16,int8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_error("frontier --json " + a + "," + other, "is another run");
  expect_error("frontier --json " + a + " --budgets 2,x", "--budgets: 'x'");
  expect_error("frontier --json " + kText, "is not the JSON of `kvq ppl --json`");
  expect_error("frontier --json " + a + " --peers " + kText, "no 'name: ... Mean KLD: X' lines");
  expect_error("frontier", "no results given");
  // Fields of the wrong type read as absent, never as a crash.
  const std::string odd = dir + "/front_odd.json";
  const std::string odd_head = R"({"text":[1],"protocol":2,"mode":null,"n_ctx":"x","chunks":1,"scored_tokens":1,"model":7,"calibration":3,)";
  std::ofstream(odd) << odd_head << R"("results":[{"cache":5,"kl_mean":0.1,"bits_per_value":2,"token_kl":[1,"a"]}]})";
  expect_error("frontier --json " + odd, "token_kl holds a non-number");
  std::ofstream(odd) << odd_head << R"("results":[{"cache":5,"kl_mean":0.1,"bits_per_value":2,"token_kl":[0.1]},{"cache":"x"}]})";
  r = kvq("frontier --json " + odd);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| ? | 2.000 |"), std::string::npos) << r.output;
}

// -b splits prefills; bench -d fills the cache with replayed activations before measuring.
TEST(Cli, BatchSizeAndBenchDepth) {
  expect_error("run -m " + kModel + " -p hi -b 0", "flag -b expects an integer in [1,");
  expect_error("bench -m " + kModel + " --text " + kText, "--text is used only with -d");
  Result r = kvq("run -m " + kModel + " -p \"Once upon a time\" -n 20 --temp 0 -b 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Once upon a time, there was a little girl named Lily."), std::string::npos) << r.output;
  // -c beyond the model's context (stories260K: 2048) warns and runs.
  r = kvq("run -m " + kModel + " -p hi -n 2 -c 5000");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: -c 5000 exceeds the model's context of"), std::string::npos) << r.output;
  r = kvq("bench -m " + kModel + " -d 300 -p 8 -n 4 -r 1 -b 64 --text " + kText);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("tokens of replayed activations"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| f16 | "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" | 300 | "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("peak RSS"), std::string::npos) << r.output;
  // The default text (War and Peace beside the models); KIVI refills the depth each repetition.
  r = kvq("bench -m " + kModel + " -d 700 -p 4 -n 40 -r 2 --cache kivi-2:g=8:r=16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" | 700 | "), std::string::npos) << r.output;
  // The cache for the whole run is checked before anything is filled.
  r = kvq("bench -m " + shared_path("models/tinystories-l6-d256-h64.gguf") + " -d 200000000 --cache f32");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("-d 200000000 + -p 128 + -n 128: 200000256 tokens of f32 KV cache need"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("of memory is available"), std::string::npos) << r.output;
}

// A --cache list is measured in alternating rounds in one process: a row per cache, each one's
// speed over the first's round by round, and the memory of every cache (held at once, so RSS is
// not attributed to one); KIVI keeps refilling its depth each round. Together they must fit.
TEST(Cli, BenchCacheListInRounds) {
  Result r = kvq("bench -m " + kModel + " -d 300 -p 4 -n 6 -r 3 -t 1 --cache f16,int4,kivi-2:g=8:r=16 --text " + kText);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"| f16 | ", "| int4 | ", "| kivi-2:g=8:r=16 | "}) {
    EXPECT_NE(r.output.find(row), std::string::npos) << row << r.output;
  }
  EXPECT_NE(r.output.find("tg int4 / f16: median "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pp kivi-2:g=8:r=16 / f16: median "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" of 3 rounds ("), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("memory: KV cache of int4: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("RSS not compared: 3 caches held at once"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("kivi-2:g=8:r=16 cannot drop tokens back to -d 300"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("nan"), std::string::npos) << r.output;
  r = kvq("bench -m " + shared_path("models/tinystories-l6-d256-h64.gguf") + " -d 200000000 --cache f32,q4_0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("tokens of f32 + q4_0 KV caches (held at once) need"), std::string::npos) << r.output;
}

// kvq bench says how long the model took to load and, with --read-bandwidth, how fast decode
// is against the weight-streaming limit of this machine.
TEST(Cli, BenchLoadTimeAndStreamingLimit) {
  Result r = kvq("bench -m " + kModel + " -p 8 -n 4 -r 1 -t 1 --read-bandwidth");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("load: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("weight streaming: read bandwidth "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("weights read per token "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("nan"), std::string::npos) << r.output;
}

// kvq info's prediction is what the process really grows by: a cache filled to 400K tokens
// (-d replays activations) against peak RSS over the process before the fill (model, window,
// freed memory handed back). The cache allocates the prediction (also tested in kv/); RSS adds
// malloc's headers and the decode workspace: within 5%. Under AddressSanitizer RSS also holds
// its shadow memory (1/8 of the heap), redzones and quarantine (+31% measured), so there the
// allocation is checked against the prediction and RSS only for covering it.
#if defined(__SANITIZE_ADDRESS__)
#define KVQ_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVQ_TEST_ASAN 1
#endif
#endif
TEST(Cli, PeakRssGrowthMatchesThePrediction) {
  const std::string testbed = shared_path("models/tinystories-l6-d256-h64.gguf");
  for (const std::string cache : {"q4_0", "kivi-2"}) {
    Result r = kvq("bench -m " + testbed + " -d 400000 -p 1 -n 2 -r 1 -t 2 --cache " + cache);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    double allocated = 0, predicted = 0, grew = 0, off = 0, peak_grew = 0;
    const size_t at = r.output.find("memory: KV cache ");
    ASSERT_NE(at, std::string::npos) << r.output;
    ASSERT_EQ(std::sscanf(r.output.c_str() + at,
                          "memory: KV cache %lf bytes allocated for %*d tokens, %lf predicted (kvq info -c %*d); "
                          "RSS grew %lf bytes while it filled (%lf%% of the prediction); peak RSS grew %lf bytes",
                          &allocated, &predicted, &grew, &off, &peak_grew),
              5)
        << r.output;
    EXPECT_NEAR(allocated, predicted, 1e-3 * predicted) << cache << ": " << r.output;
    EXPECT_GE(peak_grew, grew) << cache << ": " << r.output;
#ifdef KVQ_TEST_ASAN
    EXPECT_GE(grew, allocated) << cache << ": " << r.output;
#else
    EXPECT_LT(std::fabs(off), 5.0) << cache << ": " << r.output;
#endif
  }
}

// Generation past a full context: pre-RoPE KVQuant keys and f16 keys shift (a page at a time,
// keeping the sinks / BOS); quantized post-RoPE keys are refused before anything runs.
TEST(Cli, ContextShift) {
  for (const std::string cache : {"f16", "kvquant-2 --calib auto"}) {
    Result r = kvq("run -m " + kModel + " -p \"Once upon a time\" -c 128 -n 300 --temp 0 --context-shift --cache " + cache);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("context shifted 3 times (192 tokens dropped after the first 1)"), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("decode: 300 tokens"), std::string::npos) << r.output;
  }
  Result r = kvq("run -m " + kModel + " -p hi -c 128 -n 300 --temp 0");
  EXPECT_NE(r.output.find("stopped: the context of 128 tokens is full"), std::string::npos) << r.output;
  const std::string testbed = shared_path("models/tinystories-l6-d256-h64.gguf");
  expect_error("run -m " + testbed + " -p hi -c 256 --context-shift --cache q4_0",
               "--context-shift: context shift with q4_0 keys: they are stored after RoPE and quantized");
  expect_error("run -m " + testbed + " -p hi -c 256 --context-shift --cache kivi-2", "context shift with kivi keys");
  expect_error("run -m " + kModel + " -p hi -c 64 --context-shift", "needs -c above 65");
}

// The attention microbenchmark needs no model: a tiny run prints the table and writes JSON.
TEST(Cli, BenchAttention) {
  const std::string json = ::testing::TempDir() + "/attn.json";
  std::filesystem::remove(json);
  Result r = kvq("bench attention --shapes llama3-8b --depths 64 --cache q4_0 -r 1 -t 1 --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| llama3-8b | 64 | f16 |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| llama3-8b | 64 | q4_0 |"), std::string::npos) << r.output;
  std::ifstream f(json);
  const std::string body((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(body.find("\"us_per_token\""), std::string::npos) << body;
  EXPECT_NE(body.find("\"read_gbps\""), std::string::npos) << body;
  expect_error("bench attention --shapes gpt2", "unknown shape 'gpt2'");
  expect_error("bench attention --depths 4k", "--depths expects");
  expect_error("bench attention --cache q9", "unknown cache type 'q9'");
}
// kvq bench-serve: one row per cache with the capacity the budget holds (as the scheduler
// reserves: KIVI's fp16 window makes a 96-token sequence dearer than f16's, page granularity
// both above 16 bits), every client run to its end, and a refusal before anything runs when
// the budget holds no sequence at all (one line, no empty table before it).
TEST(Cli, BenchServe) {
  const std::string testbed = shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string base = "bench-serve -m " + testbed + " --kv-budget 4MiB -c 96 -p 16 -t 2 ";
  Result r = kvq(base + "--clients 4 --cache f16,kivi-2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  long cap[2] = {0, 0};
  int admitted[2] = {0, 0};
  double bits[2] = {0, 0}, tps[2] = {0, 0};
  const char* const names[2] = {"{\"cache\":\"f16\"", "{\"cache\":\"kivi-2\""};
  for (int i = 0; i < 2; ++i) {
    const size_t at = r.output.find(names[i]);
    ASSERT_NE(at, std::string::npos) << r.output;
    const size_t c = r.output.find("\"capacity\":", at);
    ASSERT_EQ(std::sscanf(r.output.c_str() + c,
                          "\"capacity\":%ld,\"admitted\":%d,\"bits_per_value\":%lf,\"decode_tokens_per_s\":%lf",
                          &cap[i], &admitted[i], &bits[i], &tps[i]),
              4)
        << r.output;
    EXPECT_EQ(admitted[i], 4) << r.output;  // every client fits at once
    EXPECT_GT(tps[i], 0.0) << r.output;
  }
  // 96 tokens in pages of 64: 128 allocated, f16 at 16 * 128 / 96 bits; 4 MiB / 384 KiB = 10.
  EXPECT_NEAR(bits[0], 16.0 * 128 / 96, 1e-3) << r.output;
  EXPECT_EQ(cap[0], 10) << r.output;
  EXPECT_GT(bits[1], bits[0]) << r.output;
  EXPECT_LE(cap[1], cap[0]) << r.output;
  r = kvq(base + "--clients 0 --cache f16,kvquant-3:norm=8 --calib auto --calib-windows 1 --calib-window 64");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("kvquant-3:norm=8 "), std::string::npos) << r.output;
  expect_error("bench-serve -m " + testbed + " --kv-budget 10KiB --clients 2 -c 96",
               "the request needs 393216 bytes of f16 KV cache");
  expect_error("bench-serve -m " + testbed + " --kv-budget 0", "--kv-budget expects a size");
  expect_error("bench-serve -m " + testbed + " -p 200 -c 100", "-p must be below -c");
}
}  // namespace
}  // namespace kvq
