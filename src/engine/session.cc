// SPDX-License-Identifier: MIT
#include "engine/session.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/hash.h"
#include "base/printable.h"
#include "io/gguf.h"
#include "io/mapped_file.h"

namespace kvq {

namespace {
constexpr char kMagic[8] = {'K', 'V', 'Q', 'S', 'E', 'S', 'S', '\x1a'};
// A spec string is a few dozen bytes; anything longer is not one.
constexpr uint32_t kMaxSpecBytes = 4096;

std::string hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

SessionHeader make_header(const SessionBinding& b, const KvCache& cache, uint64_t n_tokens) {
  SessionHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kSessionVersion;
  h.model_hash = b.model_hash;
  h.calibration_hash = cache.calibration_hash();
  h.n_layers = uint32_t(cache.shape().n_layers);
  h.n_kv_heads = uint32_t(cache.shape().n_kv_heads);
  h.head_dim = uint32_t(cache.shape().head_dim);
  h.n_vocab = b.n_vocab;
  h.n_tokens = n_tokens;
  return h;
}

// Every difference between what the file was made for and this run, or ok.
Status check_binding(const SessionHeader& f, const std::string& f_spec, const SessionHeader& now,
                     const std::string& now_spec, const std::string& name) {
  std::string diff;
  auto add = [&](const std::string& what, const std::string& a, const std::string& b) {
    if (!diff.empty()) diff += "; ";
    diff += what + " " + a + " in the file, " + b + " now";
  };
  auto num = [](uint64_t v) { return std::to_string(v); };
  auto quoted = [](std::string s) {
    s.insert(s.begin(), '\'');
    s.push_back('\'');
    return s;
  };
  if (f.model_hash != now.model_hash) add("model (content hash)", hex(f.model_hash), hex(now.model_hash));
  if (f_spec != now_spec) add("cache", quoted(printable(f_spec)), quoted(now_spec));
  if (f.n_layers != now.n_layers || f.n_kv_heads != now.n_kv_heads || f.head_dim != now.head_dim) {
    add("shape (layers x KV heads x head_dim)", num(f.n_layers) + "x" + num(f.n_kv_heads) + "x" + num(f.head_dim),
        num(now.n_layers) + "x" + num(now.n_kv_heads) + "x" + num(now.head_dim));
  }
  if (f.n_vocab != now.n_vocab) add("vocabulary", num(f.n_vocab), num(now.n_vocab));
  if (f.calibration_hash != now.calibration_hash) {
    add("calibration (hash of the kvquant codebooks and thresholds)", hex(f.calibration_hash),
        hex(now.calibration_hash));
  }
  if (diff.empty()) return ok_status();
  return invalid_argument(printable(name) + " was saved for a different model or cache: " + diff);
}
}  // namespace

SessionBinding session_binding(const LlamaModel& model) {
  SessionBinding b;
  b.model_hash = gguf_content_hash(model.gguf());
  b.n_vocab = uint32_t(model.config().n_vocab);
  return b;
}

Status write_session(ByteWriter& out, const SessionBinding& b, const KvCache& cache, std::span<const int32_t> tokens) {
  for (int il = 0; il < cache.shape().n_layers; ++il) {
    if (size_t(cache.n_tokens(il)) != tokens.size()) {
      return invalid_argument("cannot save a session of " + std::to_string(tokens.size()) + " tokens: layer " +
                              std::to_string(il) + " of the cache holds " + std::to_string(cache.n_tokens(il)));
    }
  }
  // The state's size is known only once written: count it with a first pass that writes
  // nothing (the stores' writers are cheap next to the bytes they copy).
  uint64_t state_bytes = 0;
  {
    ByteWriter counter([](const void*, size_t) { return ok_status(); }, 0);
    cache.write_state(counter);
    state_bytes = counter.bytes();
  }
  SessionHeader h = make_header(b, cache, tokens.size());
  const std::string spec = cache.name();
  h.spec_bytes = uint32_t(spec.size());
  h.state_bytes = state_bytes;
  // Everything goes through the checksum on its way out.
  Checksum64 sum;
  ByteWriter w(
      [&](const void* p, size_t n) {
        sum.update(p, n);
        out.write(p, n);
        return ok_status();
      },
      0);
  w.put(h);
  w.write(spec.data(), spec.size());
  w.write(tokens.data(), tokens.size_bytes());
  cache.write_state(w);
  KVQ_CHECK(w.bytes() == sizeof h + spec.size() + tokens.size_bytes() + state_bytes);
  out.put(sum.value());
  return out.finish();
}

StatusOr<uint64_t> save_session(OutputFile& out, const LlamaModel& model, const KvCache& cache,
                                std::span<const int32_t> tokens) {
  const SessionBinding b = session_binding(model);
  uint64_t bytes = 0;
  KVQ_RETURN_IF_ERROR(out.write([&](int fd) -> Status {
    ByteWriter w = ByteWriter::to_fd(fd, out.path());
    KVQ_RETURN_IF_ERROR(write_session(w, b, cache, tokens));
    bytes = w.bytes();
    return ok_status();
  }));
  return bytes;
}

StatusOr<uint64_t> save_session(const std::string& path, const LlamaModel& model, const KvCache& cache,
                                std::span<const int32_t> tokens) {
  KVQ_ASSIGN_OR_RETURN(OutputFile out, OutputFile::prepare(path, "session"));
  return save_session(out, model, cache, tokens);
}

StatusOr<std::vector<int32_t>> parse_session(std::span<const uint8_t> bytes, const std::string& name,
                                             const SessionBinding& b, KvCache& cache) {
  const std::string pname = printable(name);
  SessionHeader h;
  if (bytes.size() < 12 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return data_loss(pname + " is not a kvq session file (saved with --prompt-cache)");
  }
  std::memcpy(&h.version, bytes.data() + 8, 4);
  if (h.version != kSessionVersion) {
    return unimplemented(pname + ": session file version " + std::to_string(h.version) +
                         " is not supported (this kvq reads version " + std::to_string(kSessionVersion) + ")");
  }
  ByteReader r(bytes, name);
  KVQ_RETURN_IF_ERROR(r.get(&h, "the header"));
  // Sizes first (a truncated file says so), then the checksum (a corrupt one says so), then
  // what the file was made for, then the contents.
  const uint64_t n_ctx = uint64_t(cache.shape().n_ctx);
  if (h.spec_bytes > kMaxSpecBytes) return r.corrupt("a cache spec of " + std::to_string(h.spec_bytes) + " bytes");
  if (h.n_tokens > n_ctx) {
    return invalid_argument(pname + " holds " + std::to_string(h.n_tokens) + " tokens, more than this cache's context of " +
                            std::to_string(n_ctx) + " (-c)");
  }
  const uint64_t body = uint64_t(h.spec_bytes) + h.n_tokens * 4;
  if (h.state_bytes > bytes.size() || sizeof h + body + h.state_bytes + 8 != bytes.size()) {
    return data_loss(pname + " is truncated or corrupt: " + std::to_string(bytes.size()) + " bytes, its header says " +
                     std::to_string(sizeof h + body + 8) + " + " + std::to_string(h.state_bytes) + " of cache state");
  }
  Checksum64 sum;
  sum.update(bytes.data(), bytes.size() - 8);
  uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (stored != sum.value()) {
    return data_loss(pname + " is corrupt: its checksum " + hex(stored) + " does not match its contents (" +
                     hex(sum.value()) + ")");
  }
  KVQ_ASSIGN_OR_RETURN(auto spec_span, r.take(h.spec_bytes, "the cache spec"));
  const std::string spec(reinterpret_cast<const char*>(spec_span.data()), spec_span.size());
  KVQ_RETURN_IF_ERROR(check_binding(h, spec, make_header(b, cache, 0), cache.name(), name));
  std::vector<int32_t> tokens(size_t(h.n_tokens));
  KVQ_RETURN_IF_ERROR(r.read(tokens.data(), tokens.size() * 4, "the tokens"));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || uint32_t(tokens[i]) >= b.n_vocab) {
      return r.corrupt("token " + std::to_string(i) + " is " + std::to_string(tokens[i]) + ", outside the vocabulary of " +
                       std::to_string(b.n_vocab));
    }
  }
  KVQ_ASSIGN_OR_RETURN(auto state, r.take(size_t(h.state_bytes), "the cache state"));
  // The cache validates all of its state and installs it only then (byte offsets in its
  // messages count from the state's start).
  ByteReader sr(state, name + " (cache state)");
  KVQ_RETURN_IF_ERROR(cache.read_state(sr, int(h.n_tokens)));
  return tokens;
}

StatusOr<std::vector<int32_t>> load_session(const std::string& path, const LlamaModel& model, KvCache& cache) {
  KVQ_ASSIGN_OR_RETURN(auto mf, MappedFile::open(path));
  return parse_session(mf->bytes(), path, session_binding(model), cache);
}

size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

int keep_session_prefix(KvCache& cache, std::span<const int32_t> session, std::span<const int32_t> prompt,
                        std::string* note) {
  const size_t common = common_prefix(session, prompt);
  const int want = int(std::min(common, prompt.empty() ? size_t(0) : prompt.size() - 1));
  int kept = want;
  while (kept > 0 && !cache.truncate(kept).ok()) --kept;
  if (kept == 0) cache.clear();
  if (note) {
    *note = "kept " + std::to_string(kept) + " of " + std::to_string(session.size()) + " restored tokens";
    if (kept == want) {
      *note += want < int(common) ? " (the prompt's last token is evaluated again for its logits)"
                                  : " (the prefix they share with the prompt)";
    } else {
      *note += " (the prefix shared with the prompt is " + std::to_string(want) + " tokens, but the " + cache.name() +
               " cache cannot be cut there" + (kept == 0 ? ": prefilling from scratch)" : ")");
    }
  }
  return kept;
}

}  // namespace kvq
