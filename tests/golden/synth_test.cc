// SPDX-License-Identifier: MIT
// kvq synth: tiny synthetic models load back with the requested config and run; the file
// depends only on the seed and shape; bad options fail clearly and leave no file behind.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "engine/synth_model.h"
#include "engine/weight_types.h"
#include "io/gguf.h"
#include "kv/cache_spec.h"
#include "model/llama.h"
#include "shared_data.h"

namespace kvq {
namespace {

namespace fs = std::filesystem;
using testing::shared_path;

const std::string kSpm = shared_path("models/llama-spm-vocab-only.gguf");
const std::string kStories = shared_path("models/stories260K.gguf");

// A fresh directory per test, removed with everything in it.
class SynthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kvq_synth_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  size_t n_files() const { return size_t(std::distance(fs::directory_iterator(dir_), fs::directory_iterator())); }

  SynthOptions tiny(const std::string& vocab, const std::string& out) const {
    SynthOptions o;
    o.output = path(out);
    o.vocab_from = vocab;
    o.dim = 64;
    o.heads = 2;
    o.kv_heads = 1;
    o.layers = 2;
    o.ffn = 96;
    o.ctx = 256;
    o.seed = 7;
    return o;
  }
  fs::path dir_;
};

std::string file_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Loads the file, checks the config against the options and runs a short prompt.
void expect_loads_and_runs(const SynthOptions& o, int n_vocab) {
  auto m = LlamaModel::load(o.output);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const ModelConfig& c = (*m)->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_vocab, n_vocab);
  EXPECT_EQ(c.n_embd, o.dim);
  EXPECT_EQ(c.n_heads, o.heads);
  EXPECT_EQ(c.n_kv_heads, o.kv_heads);
  EXPECT_EQ(c.n_layers, o.layers);
  EXPECT_EQ(c.n_ff, o.ffn);
  EXPECT_EQ(c.head_dim, o.head_dim ? o.head_dim : o.dim / o.heads);
  EXPECT_EQ(c.rope_dim, c.head_dim);
  EXPECT_EQ(c.n_ctx_train, o.ctx);
  EXPECT_FLOAT_EQ(c.rope_freq_base, o.rope_base);
  EXPECT_FALSE((*m)->weights().output_tied);
  EXPECT_EQ((*m)->gguf().version(), 3u);
  EXPECT_EQ((*m)->gguf().alignment(), 32u);
  const auto toks = (*m)->tokenizer().encode("Once upon a time", true, true);
  ASSERT_GE(toks.size(), 2u);
  ExecContext ctx(2);
  auto cache = make_cache(parse_cache_spec("f16").value(), (*m)->kv_shape(64));
  ASSERT_TRUE(cache.ok());
  ForwardWorkspace ws;
  std::vector<float> logits(toks.size() * size_t(n_vocab));
  ASSERT_TRUE((*m)->forward(ctx, toks, **cache, ws, logits.data(), true).ok());
  float lo = logits[0], hi = logits[0];
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  // Unit-scale weights give logits of order one: not all equal, not exploding.
  EXPECT_GT(hi - lo, 0.1f);
  EXPECT_LT(hi - lo, 100.0f);
}

TEST_F(SynthTest, SpmVocabModelLoadsWithTheRequestedConfig) {
  const SynthOptions o = tiny(kSpm, "spm.gguf");
  auto r = synth_model(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->n_vocab, 32000);
  EXPECT_EQ(r->file_bytes, fs::file_size(o.output));
  expect_loads_and_runs(o, 32000);
  auto g = GgufFile::open(o.output);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->get_u64("general.file_type").value(), 1u);
  EXPECT_EQ((*g)->get_u64("llama.vocab_size").value(), 32000u);
  EXPECT_EQ((*g)->get_string("tokenizer.ggml.model").value(), "llama");
  EXPECT_EQ((*g)->find_tensor("blk.1.attn_k.weight")->ne, (std::vector<uint64_t>{64, 32}));
  EXPECT_EQ((*g)->find_tensor("blk.0.ffn_down.weight")->ne, (std::vector<uint64_t>{96, 64}));
  EXPECT_EQ((*g)->find_tensor("output_norm.weight")->type, uint32_t(GgmlType::kF32));
  EXPECT_EQ(n_files(), 1u);  // no temporary file left
}

TEST_F(SynthTest, EveryTypeFromStoriesVocabLoadsAndRuns) {
  for (const char* type : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}) {
    SCOPED_TRACE(type);
    SynthOptions o = tiny(kStories, std::string(type) + ".gguf");
    o.type = type;
    ASSERT_TRUE(synth_model(o).ok());
    expect_loads_and_runs(o, 512);
  }
}

// The K-quants and IQ4_XS need rows of 256: a 256-wide model (llama-quantize's general.file_type
// of a file all of that type: the _S mix for Q3_K-Q5_K).
TEST_F(SynthTest, EveryKQuantAndIq4TypeLoadsAndRuns) {
  const std::pair<const char*, uint32_t> types[] = {{"q2_k", 10}, {"q3_k", 11}, {"q4_k", 14},  {"q5_k", 16},
                                                    {"q6_k", 18}, {"iq4_nl", 25}, {"iq4_xs", 30}};
  for (const auto& [type, file_type] : types) {
    SCOPED_TRACE(type);
    SynthOptions o = tiny(kStories, std::string(type) + ".gguf");
    o.type = type;
    o.dim = 256;
    o.heads = 4;
    o.kv_heads = 2;
    o.ffn = 512;
    o.layers = 1;
    auto r = synth_model(o);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    expect_loads_and_runs(o, 512);
    auto g = GgufFile::open(o.output);
    ASSERT_TRUE(g.ok());
    EXPECT_EQ((*g)->get_u64("general.file_type").value(), file_type);
    const auto expected = (*find_weight_type(type))->ggml;
    EXPECT_EQ((*g)->find_tensor("blk.0.ffn_down.weight")->type, uint32_t(expected));
    EXPECT_EQ((*g)->find_tensor("token_embd.weight")->type, uint32_t(expected));
  }
}

TEST_F(SynthTest, HeadDimAndRopeBaseOptions) {
  SynthOptions o = tiny(kStories, "hd.gguf");
  o.head_dim = 16;  // q: 2 x 16 = 32 rows, narrower than dim
  o.rope_base = 500000.0f;
  ASSERT_TRUE(synth_model(o).ok());
  expect_loads_and_runs(o, 512);
}

TEST_F(SynthTest, WeightsHaveTheDocumentedScale) {
  SynthOptions o = tiny(kStories, "w.gguf");
  o.type = "f32";
  ASSERT_TRUE(synth_model(o).ok());
  auto m = LlamaModel::load(o.output);
  ASSERT_TRUE(m.ok());
  auto rms = [](const Matrix& w) {
    double s = 0;
    const float* data = w.f32();
    for (int i = 0; i < w.rows * w.cols; ++i) s += double(data[i]) * data[i];
    return std::sqrt(s / (double(w.rows) * w.cols));
  };
  const LlamaWeights& w = (*m)->weights();
  EXPECT_NEAR(rms(w.token_embd), 1.0, 0.03);
  EXPECT_NEAR(rms(w.layers[0].wq), 1.0 / 8, 0.01);
  EXPECT_NEAR(rms(w.layers[1].w_down), 1.0 / std::sqrt(96.0), 0.01);
  EXPECT_EQ(rms(w.layers[1].attn_norm), 1.0);
  EXPECT_EQ(rms(w.output_norm), 1.0);
}

TEST_F(SynthTest, SameSeedSameBytesAnyThreadCountOtherSeedDiffers) {
  // The 32000-token embedding spans many random blocks, so threads really split the work.
  SynthOptions a = tiny(kSpm, "a.gguf");
  SynthOptions b = tiny(kSpm, "b.gguf");
  SynthOptions c = tiny(kSpm, "c.gguf");
  a.n_threads = 1;
  b.n_threads = 3;
  c.seed = a.seed + 1;
  ASSERT_TRUE(synth_model(a).ok());
  ASSERT_TRUE(synth_model(b).ok());
  ASSERT_TRUE(synth_model(c).ok());
  const std::string ba = file_bytes(a.output);
  EXPECT_EQ(ba, file_bytes(b.output));
  const std::string bc = file_bytes(c.output);
  EXPECT_EQ(ba.size(), bc.size());
  EXPECT_NE(ba, bc);
}

TEST_F(SynthTest, BadOptionsFailClearlyAndLeaveNoFile) {
  struct Case {
    const char* what;
    std::function<void(SynthOptions&)> edit;
    const char* needle;
  };
  const std::string copy = path("vocab.gguf");
  fs::copy_file(kStories, copy);
  const std::vector<Case> cases = {
      {"heads", [](SynthOptions& o) { o.heads = 3; }, "--heads 3 does not divide --dim 64"},
      {"kv heads", [](SynthOptions& o) { o.kv_heads = 2; o.heads = 1; }, "--kv-heads 2 does not divide --heads 1"},
      {"odd head", [](SynthOptions& o) { o.dim = 66; o.heads = 2; o.kv_heads = 1; }, "must be even"},
      {"vocab", [&](SynthOptions& o) { o.vocab_from = path("nope.gguf"); }, "does not exist"},
      {"not gguf", [&](SynthOptions& o) { o.vocab_from = path("."); }, "--vocab-from"},
      {"same", [&](SynthOptions& o) { o.output = copy; o.vocab_from = copy; }, "is the vocabulary file"},
      {"same via ..", [&](SynthOptions& o) { o.output = copy; o.vocab_from = path("../" + dir_.filename().string() + "/vocab.gguf"); },
       "is the vocabulary file"},
      {"dir", [&](SynthOptions& o) { o.output = path("missing/out.gguf"); }, "output directory"},
      {"is dir", [&](SynthOptions& o) { o.output = dir_.string(); }, "is a directory"},
      {"type", [](SynthOptions& o) { o.type = "iq2_xxs"; }, "unknown weight type 'iq2_xxs'"},
      {"q8_0 width", [](SynthOptions& o) { o.type = "q8_0"; o.ffn = 100; }, "multiple of 32"},
      {"q4_k width", [](SynthOptions& o) { o.type = "q4_k"; }, "multiple of 256"},
      {"layers", [](SynthOptions& o) { o.layers = 0; }, "--layers 0 is out of range"},
      {"disk", [](SynthOptions& o) { o.dim = 1 << 20; o.heads = 1; o.kv_heads = 1; o.ffn = 1 << 20; o.layers = 4096; },
       "free"},
  };
  const std::string vocab_before = file_bytes(copy);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    SynthOptions o = tiny(kStories, "out.gguf");
    c.edit(o);
    auto r = synth_model(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().to_string().find(c.needle), std::string::npos) << r.status().to_string();
    EXPECT_EQ(n_files(), 1u);  // only the vocabulary copy
  }
  EXPECT_EQ(file_bytes(copy), vocab_before);
}

std::pair<int, std::string> kvq(const std::string& args) {
  FILE* p = popen((std::string(KVQ_BIN_DIR) + "/kvq " + args + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  for (size_t n; p && (n = fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
  const int st = p ? pclose(p) : -1;
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

TEST_F(SynthTest, Cli) {
  const std::string out = path("cli.gguf");
  auto ok = kvq("synth -o " + out + " --dim 64 --heads 4 --kv-heads 2 --layers 1 --ffn 64 --type q8_0 --seed 3 -t 2 --vocab-from " + kStories);
  EXPECT_EQ(ok.first, 0) << ok.second;
  EXPECT_NE(ok.second.find("wrote " + out), std::string::npos) << ok.second;
  auto info = kvq("info -m " + out);
  EXPECT_EQ(info.first, 0) << info.second;
  EXPECT_NE(info.second.find("n_heads 4, n_kv_heads 2"), std::string::npos) << info.second;
  auto bad = kvq("synth -o " + path("x.gguf") + " --dim 64 --heads 5 --layers 1 --ffn 64 --vocab-from " + kStories);
  EXPECT_EQ(bad.first, 1);
  EXPECT_NE(bad.second.find("kvq synth: error: invalid argument: --heads 5 does not divide --dim 64"), std::string::npos)
      << bad.second;
  auto missing = kvq("synth -o " + path("x.gguf") + " --heads 4 --layers 1 --ffn 64 --vocab-from " + kStories);
  EXPECT_EQ(missing.first, 1);
  EXPECT_NE(missing.second.find("missing --dim"), std::string::npos) << missing.second;
  EXPECT_FALSE(fs::exists(path("x.gguf")));
  EXPECT_NE(kvq("--help").second.find("synth"), std::string::npos);
}

// The byte-level BPE vocabularies of the fixtures have no weights; synth makes runnable models of
// them, so the Llama-3 and Qwen2 tokenizers load through the model and `kvq run` / `kvq info`.
TEST_F(SynthTest, BpeVocabModelsLoadAndRun) {
  const std::pair<const char*, int> vocabs[] = {{"llama-bpe", 128256}, {"qwen2", 151936}};
  for (const auto& [name, n_vocab] : vocabs) {
    SCOPED_TRACE(name);
    SynthOptions o = tiny(shared_path(std::string("fixtures/bpe/vocab/ggml-vocab-") + name + ".gguf"),
                          std::string(name) + ".gguf");
    o.type = "q8_0";
    auto r = synth_model(o);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->n_vocab, n_vocab);
    expect_loads_and_runs(o, n_vocab);
    auto m = LlamaModel::load(o.output);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ((*m)->tokenizer().model(), "gpt2");
    // The prompt prints back through the BPE pieces (Llama-3's BOS prints nothing).
    auto run = kvq("run -m " + o.output + " -p 'Hello world' -n 3 --temp 0 -t 2");
    EXPECT_EQ(run.first, 0) << run.second;
    EXPECT_NE(run.second.find("Hello world"), std::string::npos) << run.second;
    auto info = kvq("info -m " + o.output);
    EXPECT_EQ(info.first, 0) << info.second;
    // The vocabulary file itself: its tokenizer loads, and there is nothing to run.
    auto vocab = kvq("info -m " + o.vocab_from);
    EXPECT_EQ(vocab.first, 1) << vocab.second;
    EXPECT_NE(vocab.second.find("is a vocabulary-only GGUF (its \"gpt2\" tokenizer of " +
                                std::to_string(n_vocab) + " tokens loads"),
              std::string::npos)
        << vocab.second;
  }
}

}  // namespace
}  // namespace kvq
