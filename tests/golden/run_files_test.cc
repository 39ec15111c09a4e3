// SPDX-License-Identifier: MIT
// The engine's guards against wrong numbers (issue 12, items 1, 6 and 7) on stories260K:
// calibration with every token a sink is an error (it crashed), --chunks 0 and NaN base rows
// are errors (they printed "PPL = -nan" and "KL 0"), and log-prob files carry their run's
// identity so that a base from another run is refused before any work, naming the difference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "engine/calibrate.h"
#include "engine/logprob_file.h"
#include "engine/perplexity.h"
#include "shared_data.h"

namespace kvq {
namespace {

using testing::read_text;
using testing::shared_path;

std::unique_ptr<LlamaModel> load(const char* name) {
  auto m = LlamaModel::load(shared_path(std::string("models/") + name));
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return std::move(*m);
}

std::vector<int32_t> text_tokens(const LlamaModel& m, size_t offset = 0) {
  return m.tokenizer().encode(read_text("text/tinystories/validation_head.txt").substr(offset, 20000), true, true);
}

TEST(RunGuards, SinksCoveringTheWindowAreAnErrorNotACrash) {
  auto model = load("stories260K.gguf");
  ExecContext ctx(1);
  CalibrationArgs ca;
  ca.n_windows = 1;
  ca.window = 16;
  auto acts = KvActivations::capture(ctx, *model, text_tokens(*model), ca);
  ASSERT_TRUE(acts.ok()) << acts.status().to_string();
  for (int sinks : {16, 17, 1000}) {
    KvquantOptions o;
    o.sinks = sinks;
    EXPECT_EQ(acts->key_params(o).status().code(), StatusCode::kInvalidArgument) << sinks;
    EXPECT_EQ(acts->value_params(o).status().code(), StatusCode::kInvalidArgument) << sinks;
  }
  KvquantOptions o;
  o.sinks = 8;  // half the window left for the statistics
  EXPECT_TRUE(acts->key_params(o).ok());
  EXPECT_TRUE(check_calibration_sinks(15, 16).ok());
  EXPECT_FALSE(check_calibration_sinks(16, 16).ok());
}

TEST(RunGuards, NoChunksAndNanBaseRowsAreErrors) {
  auto model = load("stories260K.gguf");
  ExecContext ctx(2);
  const auto tokens = text_tokens(*model);
  const CacheSpec f16 = parse_cache_spec("f16").value();
  PplArgs args;
  args.n_ctx = 64;
  args.n_chunks = 0;
  EXPECT_EQ(run_perplexity(ctx, *model, f16, tokens, args).status().code(), StatusCode::kInvalidArgument);
  args.n_chunks = 2;
  LogprobFile base;
  args.rows_out = &base;
  ASSERT_TRUE(run_perplexity(ctx, *model, f16, tokens, args).ok());
  args.rows_out = nullptr;
  base.rows[5] = std::nanf("");
  args.base = &base;
  const auto r = run_perplexity(ctx, *model, f16, tokens, args);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << (r.ok() ? std::to_string(r->kl_mean) : "");
}

TEST(RunGuards, BaseFromAnotherRunIsRefusedBeforeTheRunNamingTheDifference) {
  auto model = load("stories260K.gguf");
  ExecContext ctx(2);
  const auto tokens = text_tokens(*model);
  const CacheSpec f16 = parse_cache_spec("f16").value();
  PplArgs args;
  args.n_ctx = 64;
  args.n_chunks = 2;
  LogprobFile base;
  args.rows_out = &base;
  ASSERT_TRUE(run_perplexity(ctx, *model, f16, tokens, args).ok());
  args.rows_out = nullptr;
  args.base = &base;
  int progress_calls = 0;
  args.progress = [&](int, int) { ++progress_calls; };
  struct Case {
    std::vector<int32_t> tokens;
    int n_ctx, n_chunks;
    PplProtocol protocol;
    const char* needle;
  } cases[] = {
      {text_tokens(*model, 5000), 64, 2, PplProtocol::kLlamaCpp, "text (tokens, hash)"},
      {tokens, 64, 3, PplProtocol::kLlamaCpp, "chunks 2 vs 3 now"},
      {tokens, 32, 4, PplProtocol::kLlamaCpp, "-c 64 vs 32 now"},
      {tokens, 64, 2, PplProtocol::kFull, "--protocol llamacpp vs full now"},
  };
  for (const auto& c : cases) {
    PplArgs a = args;
    a.n_ctx = c.n_ctx;
    a.n_chunks = c.n_chunks;
    a.protocol = c.protocol;
    const Status st = run_perplexity(ctx, *model, f16, c.tokens, a).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find(c.needle), std::string::npos) << st.message();
  }
  EXPECT_EQ(progress_calls, 0);  // refused before the run started
  // Another model with the same vocabulary.
  auto other = load("tinystories-l6-d256-h64.gguf");
  const Status st = run_perplexity(ctx, *other, f16, tokens, args).status();
  EXPECT_NE(st.message().find("model (content hash)"), std::string::npos) << st.message();
}

std::vector<uint8_t> logprob_bytes(const LogprobFile& f) {
  const std::string path = ::testing::TempDir() + "/lp.kvql";
  auto out = OutputFile::prepare(path, "--save-logits");
  EXPECT_TRUE(out.ok());
  EXPECT_TRUE(write_logprob_file(*out, f).ok());
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(LogprobFile, RoundTripAndCorruptFiles) {
  LogprobFile f;
  f.n_vocab = 4;
  f.n_ctx = 8;
  f.n_chunks = 1;
  f.n_tokens = 8;
  f.model_hash = 0x1234;
  f.tokens_hash = 0x5678;
  f.rows = {-1.f, -2.f, -3.f, -4.f, -0.5f, -1.5f, -2.5f, -3.5f};
  f.targets = {1, 3};
  const auto good = logprob_bytes(f);
  auto back = parse_logprob_file(good, "good");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->rows, f.rows);
  EXPECT_EQ(back->targets, f.targets);
  EXPECT_EQ(back->tokens_hash, 0x5678u);
  EXPECT_TRUE(check_same_run(*back, f, "good").ok());

  auto with = [&](size_t at, const void* v, size_t n) {
    auto b = good;
    std::memcpy(&b[at], v, n);
    return parse_logprob_file(b, "bad").status();
  };
  const size_t header = good.size() - f.rows.size() * 4 - f.targets.size() * 4;
  const float nan = std::nanf("");
  EXPECT_NE(with(header + 8, &nan, 4).message().find("non-finite"), std::string::npos);
  const int32_t big = 4;
  EXPECT_NE(with(good.size() - 4, &big, 4).message().find("outside the vocabulary"), std::string::npos);
  const uint32_t v1 = 1;
  EXPECT_EQ(with(8, &v1, 4).code(), StatusCode::kUnimplemented);
  EXPECT_NE(with(8, &v1, 4).message().find("version 1"), std::string::npos);
  const uint32_t zero = 0;
  EXPECT_EQ(with(32, &zero, 4).code(), StatusCode::kDataLoss);  // no chunks
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(parse_logprob_file(std::span(good.data(), n), "cut").ok()) << n;
  }
}

}  // namespace
}  // namespace kvq
