// SPDX-License-Identifier: MIT
// Session files (engine/session.h) on the head_dim-64 testbed: for every cache spec, a cache
// saved after a prefill and restored into a fresh cache reads back bit for bit, costs the same
// bytes_used() and gives the same next-token logits; truncated, flipped, foreign (model, spec,
// calibration) and oversized files are errors naming the problem that leave the cache as it
// was; prefix reuse keeps what the format can cut.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "engine/prefill.h"
#include "engine/session.h"
#include "model_fixture.h"
#include "run_kvq.h"

namespace kvq {
namespace {

constexpr int kTokens = 200, kCtx = 256;

using testing::ModelFixture;

ModelFixture& fixture() {
  static ModelFixture f = [] {
    ModelFixture x = testing::load_model_fixture("models/tinystories-l6-d256-h64.gguf", 20000, 2, 128);
    EXPECT_GE(x.text.size(), size_t(kCtx));
    return x;
  }();
  return f;
}

// "SPEC" or "K=SPEC,V=SPEC"; calibrated when it needs it. perturb: shift one key threshold
// (another calibration).
std::unique_ptr<KvCache> new_cache(const std::string& text, bool perturb = false) {
  ModelFixture& f = fixture();
  const size_t comma = text.find(",V=");
  const CacheSpec spec = text.rfind("K=", 0) == 0 ? parse_cache_spec(text.substr(2, comma - 2), text.substr(comma + 3)).value()
                                                  : parse_cache_spec(text).value();
  auto cal = f.acts->for_spec(spec);
  EXPECT_TRUE(cal.ok()) << cal.status().to_string();
  if (perturb) cal->k->layers[0].upper[0] += 0.25f;
  auto cache = make_cache(spec, f.model->kv_shape(kCtx), cal->calibration());
  EXPECT_TRUE(cache.ok()) << text << ": " << cache.status().to_string();
  return cache.ok() ? std::move(*cache) : nullptr;
}

std::vector<float> contents(const KvCache& c) {
  for (int il = 1; il < c.shape().n_layers; ++il) EXPECT_EQ(c.n_tokens(il), c.n_tokens(0));
  return read_all(c);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::span<const int32_t> prompt(int n = kTokens) { return {fixture().text.data(), size_t(n)}; }

void prefill_into(KvCache& c, int n = kTokens) {
  ExecContext ctx(2);
  ForwardWorkspace ws;
  ASSERT_TRUE(prefill(ctx, *fixture().model, prompt(n), c, ws, nullptr, false, 64).ok());
}

// The logits of the next token (the text's token n) after the cache.
std::vector<float> next_logits(KvCache& c, int n = kTokens) {
  ModelFixture& f = fixture();
  ExecContext ctx(2);
  ForwardWorkspace ws;
  std::vector<float> logits(static_cast<size_t>(f.model->config().n_vocab));
  const int32_t one[1] = {f.text[size_t(n)]};
  EXPECT_TRUE(f.model->forward(ctx, one, c, ws, logits.data(), false).ok());
  return logits;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

Status parse(const std::vector<uint8_t>& b, KvCache& c) {
  return parse_session(b, "s.kvqs", session_binding(*fixture().model), c).status();
}

TEST(Session, EverySpecRestoresBitForBitWithTheSameLogits) {
  ModelFixture& f = fixture();
  ASSERT_TRUE(f.model && f.acts);
  for (const char* spec :
       {"f32", "f16", "q8_0", "q4_0", "int4", "kivi-2", "kivi-4", "kivi-2:g=8:r=16", "kvquant-2", "kvquant-3",
        "kvquant-2:outliers=0", "kvquant-3:outliers=0", "q4_0:rot=1", "int4:rot=1", "kivi-2:rot=1",
        "kvquant-3:prerope=0:rot=1", "K=kvquant-3,V=f16", "K=q8_0,V=kivi-4", "K=f16,V=kvquant-3:rot=1"}) {
    SCOPED_TRACE(spec);
    auto a = new_cache(spec);
    ASSERT_TRUE(a);
    prefill_into(*a);
    const std::string path = temp_path("every.kvqs");
    auto bytes = save_session(path, *f.model, *a, prompt());
    ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
    auto b = new_cache(spec);
    auto tokens = load_session(path, *f.model, *b);
    ASSERT_TRUE(tokens.ok()) << tokens.status().to_string();
    EXPECT_TRUE(std::equal(tokens->begin(), tokens->end(), prompt().begin(), prompt().end()));
    EXPECT_EQ(b->bytes_used(), a->bytes_used());
    EXPECT_TRUE(same_bits(contents(*a), contents(*b)));
    EXPECT_TRUE(same_bits(next_logits(*a), next_logits(*b)));
    std::printf("%-28s bytes_used %8zu file %8llu ratio %.4f\n", a->name().c_str(), a->bytes_used(),
                (unsigned long long)*bytes, double(*bytes) / double(a->bytes_used()));
  }
}

struct Saved {
  std::unique_ptr<KvCache> cache;
  std::vector<uint8_t> bytes;
};

Saved saved(const char* spec, int n = kTokens) {
  Saved s;
  s.cache = new_cache(spec);
  prefill_into(*s.cache, n);
  const std::string path = temp_path("bad.kvqs");
  EXPECT_TRUE(save_session(path, *fixture().model, *s.cache, prompt(n)).ok());
  s.bytes = file_bytes(path);
  return s;
}

// The target: empty, or holding 10 tokens of the text; errors must leave it so.
struct Target {
  std::unique_ptr<KvCache> cache;
  std::vector<float> before;
  size_t used;
  explicit Target(const char* spec, int n) : cache(new_cache(spec)) {
    if (n > 0) prefill_into(*cache, n);
    before = contents(*cache);
    used = cache->bytes_used();
  }
  void expect_unchanged() const {
    EXPECT_EQ(cache->bytes_used(), used);
    EXPECT_TRUE(same_bits(contents(*cache), before));
  }
};

TEST(Session, TruncatedAndFlippedFilesAreErrorsThatChangeNothing) {
  for (const char* spec : {"f16", "kivi-2:g=8:r=16", "kvquant-3"}) {
    SCOPED_TRACE(spec);
    const Saved s = saved(spec, 70);
    for (int held : {0, 10}) {
      Target t(spec, held);
      // Every length inside the header and the spec, then a sweep through the state.
      for (size_t cut = 0; cut < s.bytes.size(); cut += cut < 160 ? 1 : 1021) {
        const std::vector<uint8_t> b(s.bytes.begin(), s.bytes.begin() + ptrdiff_t(cut));
        const Status st = parse(b, *t.cache);
        ASSERT_EQ(st.code(), StatusCode::kDataLoss) << cut << ": " << st.to_string();
      }
      for (size_t at = 0; at < s.bytes.size(); at += at < 160 ? 3 : 1999) {
        std::vector<uint8_t> b = s.bytes;
        b[at] ^= 0x10;
        const Status st = parse(b, *t.cache);
        ASSERT_FALSE(st.ok()) << at;
        EXPECT_NE(st.code(), StatusCode::kInternal) << st.to_string();
      }
      t.expect_unchanged();
    }
  }
}

TEST(Session, ForeignFilesNameWhatDiffers) {
  ModelFixture& f = fixture();
  const Saved s = saved("kvquant-3", 40);
  struct Case {
    const char* spec;
    bool perturb;
    const char* needle;
  } cases[] = {
      {"kvquant-2", false, "cache 'kvquant-3"},
      {"f16", false, "'f16' now"},
      {"kvquant-3", true, "calibration"},
  };
  for (const auto& c : cases) {
    auto cache = new_cache(c.spec, c.perturb);
    const Status st = parse(s.bytes, *cache);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find(c.needle), std::string::npos) << st.message();
    EXPECT_EQ(cache->n_tokens(0), 0);
  }
  // Another model: its hash, shape and vocabulary are named.
  auto other = LlamaModel::load(testing::shared_path("models/stories260K.gguf"));
  ASSERT_TRUE(other.ok());
  const CacheSpec f16 = parse_cache_spec("f16").value();
  auto small = make_cache(f16, (*other)->kv_shape(kCtx)).value();
  const Saved g = saved("f16", 40);
  const Status st = parse_session(g.bytes, "s.kvqs", session_binding(**other), *small).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("model (content hash)"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("shape"), std::string::npos) << st.message();
  EXPECT_EQ(small->n_tokens(0), 0);
  (void)f;
}

void put_u64(std::vector<uint8_t>& b, size_t off, uint64_t v) { std::memcpy(b.data() + off, &v, 8); }

TEST(Session, HugeCountsAndOtherVersionsAreRefusedBeforeAllocating) {
  const Saved s = saved("q4_0", 40);
  Target t("q4_0", 10);
  std::vector<uint8_t> b = s.bytes;
  put_u64(b, offsetof(SessionHeader, n_tokens), uint64_t(1) << 40);
  Status st = parse(b, *t.cache);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("more than this cache's context"), std::string::npos) << st.message();
  b = s.bytes;
  put_u64(b, offsetof(SessionHeader, state_bytes), uint64_t(1) << 62);
  EXPECT_EQ(parse(b, *t.cache).code(), StatusCode::kDataLoss);
  b = s.bytes;
  const uint32_t big = 1u << 31;
  std::memcpy(b.data() + offsetof(SessionHeader, spec_bytes), &big, 4);
  EXPECT_EQ(parse(b, *t.cache).code(), StatusCode::kDataLoss);
  // The version before the narrow outlier layout, and the next one.
  for (uint8_t v : {uint8_t(kSessionVersion - 1), uint8_t(kSessionVersion + 1)}) {
    b = s.bytes;
    b[8] = v;
    st = parse(b, *t.cache);
    EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
    EXPECT_NE(st.message().find("version " + std::to_string(v) + " is not supported"), std::string::npos) << st.message();
  }
  b = s.bytes;
  b[0] = 'X';
  EXPECT_EQ(parse(b, *t.cache).code(), StatusCode::kDataLoss);
  EXPECT_EQ(parse({}, *t.cache).code(), StatusCode::kDataLoss);
  t.expect_unchanged();
  EXPECT_EQ(load_session(temp_path("missing.kvqs"), *fixture().model, *t.cache).status().code(), StatusCode::kNotFound);
}

// keep_session_prefix: the shared prefix, short of the prompt's last token; a KIVI key cache
// cut inside its quantized blocks falls back to what it can keep, and says so.
TEST(Session, PrefixReuseKeepsWhatTheFormatCanCut) {
  const std::vector<int32_t> session(fixture().text.begin(), fixture().text.begin() + kTokens);
  std::vector<int32_t> longer(fixture().text.begin(), fixture().text.begin() + kTokens + 20);
  std::string note;
  auto c = new_cache("f16");
  prefill_into(*c);
  EXPECT_EQ(keep_session_prefix(*c, session, longer, &note), kTokens);
  EXPECT_EQ(c->n_tokens(0), kTokens);
  // The same prompt: its last token is evaluated again.
  EXPECT_EQ(keep_session_prefix(*c, session, session, &note), kTokens - 1);
  EXPECT_NE(note.find("evaluated again"), std::string::npos) << note;
  std::vector<int32_t> diverging = longer;
  diverging[150] = diverging[150] == 1 ? 2 : 1;
  auto k = new_cache("kivi-2");  // keys flushed 128 at a time: after 200 tokens, [0, 128) quantized
  prefill_into(*k);
  EXPECT_EQ(keep_session_prefix(*k, session, diverging, &note), 150);
  diverging[150] = longer[150];
  diverging[100] = diverging[100] == 1 ? 2 : 1;
  auto k2 = new_cache("kivi-2");
  prefill_into(*k2);
  EXPECT_EQ(keep_session_prefix(*k2, session, diverging, &note), 0);
  EXPECT_NE(note.find("cannot be cut there: prefilling from scratch"), std::string::npos) << note;
  EXPECT_EQ(k2->n_tokens(0), 0);
}

// kvq run --prompt-cache, llama.cpp's way: a first run saves its prompt, a second with the
// prompt extended restores it, prefills only the new tokens and generates what a run without
// the cache generates.
std::string generated(const testing::KvqResult& r, const std::string& prompt) {
  const size_t at = r.output.find(prompt);
  if (at == std::string::npos) return "<no output>\n" + r.output;
  return r.output.substr(at, r.output.find('\n', at) - at);
}

TEST(SessionCli, PromptCacheReusesThePrefixAndGeneratesTheSame) {
  const std::string model = testing::shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string first = "Once upon a time, there was a little girl named Lily.";
  const std::string second = first + " She went to the park with her mom and saw a big dog.";  // 16, 34 tokens
  for (const char* spec : {"f16", "q4_0", "kivi-2", "kvquant-3"}) {
    SCOPED_TRACE(spec);
    const std::string file = temp_path(std::string("cli_") + spec + ".kvqs");
    std::remove(file.c_str());
    std::vector<std::string> base = {"run", "-m", model, "-n", "24", "--temp", "0", "--cache", spec};
    if (std::string(spec).rfind("kvquant", 0) == 0) {
      base.insert(base.end(), {"--calib", "auto", "--calib-windows", "1", "--calib-window", "64"});
    }
    auto with = [&](std::vector<std::string> extra) {
      std::vector<std::string> a = base;
      a.insert(a.end(), extra.begin(), extra.end());
      return testing::run_kvq(a);
    };
    const auto plain = with({"-p", second});
    ASSERT_EQ(plain.exit_code, 0) << plain.output;
    const auto r1 = with({"-p", first, "--prompt-cache", file});
    ASSERT_EQ(r1.exit_code, 0) << r1.output;
    EXPECT_NE(r1.output.find("does not exist: a new session is saved there"), std::string::npos) << r1.output;
    EXPECT_NE(r1.output.find("kvq run: saved 16 tokens to"), std::string::npos) << r1.output;
    const auto r2 = with({"-p", second, "--prompt-cache", file});
    ASSERT_EQ(r2.exit_code, 0) << r2.output;
    EXPECT_NE(r2.output.find("kvq run: restored 16 tokens from"), std::string::npos) << r2.output;
    EXPECT_NE(r2.output.find("kept 16 of 16 restored tokens"), std::string::npos) << r2.output;
    EXPECT_EQ(generated(r2, second), generated(plain, second));
    // Read-only: restores, never writes; -all saves the prompt and the output.
    const auto size_before = file_bytes(file).size();
    const auto r3 = with({"-p", second, "--prompt-cache", file, "--prompt-cache-ro"});
    ASSERT_EQ(r3.exit_code, 0) << r3.output;
    EXPECT_EQ(generated(r3, second), generated(plain, second));
    EXPECT_EQ(r3.output.find("saved"), std::string::npos) << r3.output;
    EXPECT_EQ(file_bytes(file).size(), size_before);
    const auto r4 = with({"-p", second, "--prompt-cache", file, "--prompt-cache-all"});
    ASSERT_EQ(r4.exit_code, 0) << r4.output;
    EXPECT_EQ(generated(r4, second), generated(plain, second));
    // The same prompt again: its last token is evaluated again; then 24 tokens are generated,
    // of which the last is never fed to the cache.
    EXPECT_NE(r4.output.find("kept 33 of 34"), std::string::npos) << r4.output;
    EXPECT_NE(r4.output.find("kvq run: saved 57 tokens"), std::string::npos) << r4.output;
  }
}

TEST(SessionCli, BadFilesAreClearErrors) {
  const std::string model = testing::shared_path("models/tinystories-l6-d256-h64.gguf");
  const std::string file = temp_path("cli_bad.kvqs");
  std::remove(file.c_str());
  auto run = [&](const char* cache, const char* prompt) {
    return testing::run_kvq({"run", "-m", model, "-n", "4", "--temp", "0", "--cache", cache, "-p", prompt,
                             "--prompt-cache", file});
  };
  ASSERT_EQ(run("f16", "Once upon a time").exit_code, 0);
  const auto other = run("q8_0", "Once upon a time");
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.output.find("cache 'f16' in the file, 'q8_0' now"), std::string::npos) << other.output;
  std::vector<uint8_t> b = file_bytes(file);
  b.resize(b.size() / 2);
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  const auto cut = run("f16", "Once upon a time");
  EXPECT_NE(cut.exit_code, 0);
  EXPECT_NE(cut.output.find("is truncated or corrupt"), std::string::npos) << cut.output;
  EXPECT_EQ(file_bytes(file).size(), b.size());  // a failed run leaves the file as it was
  std::ofstream(file, std::ios::trunc) << "not a session";
  const auto junk = run("f16", "Once upon a time");
  EXPECT_NE(junk.exit_code, 0);
  EXPECT_NE(junk.output.find("is not a kvq session file"), std::string::npos) << junk.output;
  const auto flags = testing::run_kvq({"run", "-m", model, "-p", "x", "--prompt-cache-ro"});
  EXPECT_NE(flags.output.find("need --prompt-cache FILE"), std::string::npos) << flags.output;
}

}  // namespace
}  // namespace kvq
