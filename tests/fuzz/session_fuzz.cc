// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes as a session file (engine/session.h) for caches of several
// formats at a small shape. Invariant: a Status that leaves the cache empty, or a cache that
// holds the file's tokens in every layer, reads every token of every head in bounds (ASan),
// and goes on appending and flushing; never a crash, a leak or an out-of-bounds access.
// KVQ_SESSION_FUZZ_SEEDS=DIR writes a seed corpus (one file per cache, two lengths) and exits.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <memory>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "base/exec_context.h"
#include "base/hash.h"
#include "kernels/rope.h"
#include "engine/session.h"
#include "kv/cache_spec.h"
#include "quant/codebook.h"

namespace {

constexpr kvq::SessionBinding kBinding{0x5e55104f0221ull, 512};
constexpr kvq::KvCacheShape kShape{2, 1, 32, 160};
const char* const kSpecs[] = {"f16", "q4_0", "int4:rot=1", "kivi-2:g=8:r=16", "kvquant-3", "K=kvquant-2,V=kivi-4:g=8:r=16"};

kvq::KvquantParams params(int bits, bool keys) {
  kvq::KvquantParams p;
  for (int il = 0; il < kShape.n_layers; ++il) {
    kvq::KvquantLayerParams lp;
    lp.codebook = kvq::make_nf_codebook(bits);
    if (keys) {
      lp.upper.assign(kShape.row_values(), 1.5f);
      lp.lower.assign(kShape.row_values(), -1.5f);
    }
    p.layers.push_back(lp);
  }
  return p;
}

struct Fixture {
  std::vector<kvq::KvquantParams> params;  // kept alive for the caches
  std::vector<std::unique_ptr<kvq::KvCache>> caches;
};

// Built once per process (a fuzz harness, not library code).
Fixture& fixture() {
  static Fixture* f = [] {
    auto* x = new Fixture;
    x->params.reserve(2 * std::size(kSpecs));
    for (const char* text : kSpecs) {
      const std::string s = text;
      const size_t comma = s.find(",V=");
      auto spec = s.rfind("K=", 0) == 0 ? kvq::parse_cache_spec(s.substr(2, comma - 2), s.substr(comma + 3))
                                        : kvq::parse_cache_spec(s);
      if (!spec.ok()) std::abort();
      const bool kq = spec->k.kind == kvq::TensorKind::kKvquant, vq = spec->v.kind == kvq::TensorKind::kKvquant;
      x->params.push_back(kq ? params(spec->k.bits, true) : kvq::KvquantParams{});
      const kvq::KvquantParams* k = &x->params.back();
      x->params.push_back(vq ? params(spec->v.bits, false) : kvq::KvquantParams{});
      const kvq::KvquantParams* v = &x->params.back();
      auto c = kvq::make_cache(*spec, kShape, {k, v});
      if (!c.ok()) std::abort();
      x->caches.push_back(std::move(*c));
    }
    return x;
  }();
  return *f;
}

// n tokens of deterministic K/V (a few large values, so KVQuant keeps outliers), in steps.
// False when the cache refuses (a restored window of fuzzed non-finite values cannot flush).
bool fill(kvq::KvCache& c, int n, int step) {
  uint32_t s = 12345;
  for (int done = 0; done < n; done += step) {
    const int m = std::min(step, n - done);
    std::vector<float> k(size_t(m) * kShape.row_values()), v(k.size());
    for (auto* x : {&k, &v}) {
      for (float& f : *x) {
        s = s * 1664525u + 1013904223u;
        f = float(int(s >> 16) % 2001 - 1000) / (s % 37 == 0 ? 100.f : 500.f);
      }
    }
    for (int il = 0; il < kShape.n_layers; ++il) {
      if (!c.append(il, m, k.data(), v.data()).ok()) return false;
    }
    if (!c.end_step().ok()) return false;
  }
  return true;
}

void write_seeds(const std::string& dir) {
  Fixture& f = fixture();
  for (size_t i = 0; i < f.caches.size(); ++i) {
    for (int n : {3, 70}) {  // 70: a sealed outlier page and a growing one
      kvq::KvCache& c = *f.caches[i];
      c.clear();
      if (!fill(c, n, 24)) std::abort();
      std::vector<int32_t> tokens(static_cast<size_t>(n));
      for (int t = 0; t < n; ++t) tokens[size_t(t)] = t % int(kBinding.n_vocab);
      std::string bytes;
      kvq::ByteWriter w = kvq::ByteWriter::to_string(&bytes);
      if (!kvq::write_session(w, kBinding, c, tokens).ok()) std::abort();
      const std::string path = dir + "/seed_" + std::to_string(i) + "_" + std::to_string(n) + ".kvqs";
      FILE* out = std::fopen(path.c_str(), "wb");
      if (!out || std::fwrite(bytes.data(), 1, bytes.size(), out) != bytes.size() || std::fclose(out) != 0) std::abort();
      c.clear();
    }
  }
}

kvq::ExecContext& ctx() {
  static kvq::ExecContext* c = new kvq::ExecContext(1);
  return *c;
}
const kvq::Rope& rope() {
  static const kvq::Rope* r = new kvq::Rope(kShape.head_dim, kShape.head_dim, 10000.f);
  return *r;
}
kvq::AttentionParams attention_params() {
  kvq::AttentionParams p;
  p.n_heads = 2;
  p.n_kv_heads = kShape.n_kv_heads;
  p.head_dim = kShape.head_dim;
  p.scale = 0.17f;
  p.rope = &rope();
  return p;
}
std::vector<float>& query() {
  static auto* q = new std::vector<float>(2 * kShape.head_dim, 0.25f);
  return *q;
}
std::vector<float>& out() {
  static auto* o = new std::vector<float>(2 * kShape.head_dim);
  return *o;
}

// One input into every cache.
void load_everywhere(std::span<const uint8_t> bytes) {
  for (auto& cache : fixture().caches) {
    kvq::KvCache& c = *cache;
    const size_t empty = c.bytes_used();
    auto tokens = kvq::parse_session(bytes, "fuzz", kBinding, c);
    if (!tokens.ok()) {
      if (c.n_tokens(0) != 0 || c.bytes_used() != empty) std::abort();
      continue;
    }
    const int n = int(tokens->size());
    std::vector<float> k(size_t(n) * kShape.head_dim), v(k.size());
    for (int il = 0; il < kShape.n_layers; ++il) {
      if (c.n_tokens(il) != n) std::abort();
      for (int h = 0; h < kShape.n_kv_heads; ++h) c.read(il, h, 0, n, k.data(), v.data());
      // The attention kernels read the restored pages, outliers and windows in place.
      if (n > 0 && !kvq::attend(ctx(), attention_params(), c, il, query().data(), 1, n - 1, out().data()).ok()) {
        std::abort();
      }
    }
    // The restored state goes on: windows flush, pages and outlier pages grow.
    if (n + 20 <= kShape.n_ctx) (void)fill(c, 20, 7);
    c.clear();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("KVQ_SESSION_FUZZ_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  load_everywhere({data, size});
  // Almost every mutation breaks the checksum; the same bytes with it recomputed reach the
  // header binding and every store's validation.
  if (size >= sizeof(kvq::SessionHeader) + 8) {
    std::vector<uint8_t> fixed(data, data + size);
    kvq::Checksum64 sum;
    sum.update(fixed.data(), size - 8);
    const uint64_t h = sum.value();
    std::memcpy(fixed.data() + size - 8, &h, 8);
    load_everywhere(fixed);
  }
  return 0;
}
