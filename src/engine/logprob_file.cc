// SPDX-License-Identifier: MIT
#include "engine/logprob_file.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "base/printable.h"
#include "io/mapped_file.h"

namespace kvq {

namespace {
constexpr char kMagic[8] = {'K', 'V', 'Q', 'L', 'O', 'G', 'P', '1'};
// magic, version, n_vocab, n_rows, protocol, n_ctx, n_chunks, model_hash, tokens_hash, n_tokens
constexpr size_t kHeader = 8 + 4 + 4 + 8 + 4 + 4 + 4 + 8 + 8 + 8;

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}
}  // namespace

uint64_t hash_tokens(std::span<const int32_t> tokens) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t t : tokens) {
    for (int b = 0; b < 4; ++b) {
      h ^= (uint32_t(t) >> (8 * b)) & 0xff;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

Status write_logprob_file(OutputFile& out, const LogprobFile& f) {
  std::string header;
  header.append(kMagic, sizeof kMagic);
  put(header, kLogprobVersion);
  put(header, f.n_vocab);
  put(header, f.n_rows());
  put(header, f.protocol);
  put(header, f.n_ctx);
  put(header, f.n_chunks);
  put(header, f.model_hash);
  put(header, f.tokens_hash);
  put(header, f.n_tokens);
  return out.write([&](int fd) -> Status {
    KVQ_RETURN_IF_ERROR(write_all(fd, header.data(), header.size(), out.path()));
    KVQ_RETURN_IF_ERROR(write_all(fd, f.rows.data(), f.rows.size() * 4, out.path()));
    return write_all(fd, f.targets.data(), f.targets.size() * 4, out.path());
  });
}

StatusOr<LogprobFile> read_logprob_file(const std::string& path) {
  KVQ_ASSIGN_OR_RETURN(auto mf, MappedFile::open(path));
  return parse_logprob_file(mf->bytes(), path);
}

StatusOr<LogprobFile> parse_logprob_file(std::span<const uint8_t> b, const std::string& path) {
  const std::string name = printable(path);
  if (b.size() < 12 || std::memcmp(b.data(), kMagic, 8) != 0) {
    return data_loss(name + " is not a kvq log-prob file (saved with --save-logits)");
  }
  const uint32_t version = get<uint32_t>(b.data() + 8);
  if (version == 1) {
    return unimplemented(name + " is a version 1 log-prob file, which records no model or text: "
                         "save it again with this kvq (--save-logits)");
  }
  if (version != kLogprobVersion) {
    return unimplemented(name + ": log-prob file version " + std::to_string(version) +
                         " is not supported (this kvq reads version " + std::to_string(kLogprobVersion) + ")");
  }
  if (b.size() < kHeader) return data_loss(name + " is truncated or corrupt");
  LogprobFile f;
  f.n_vocab = get<uint32_t>(b.data() + 12);
  const uint64_t n_rows = get<uint64_t>(b.data() + 16);
  f.protocol = get<uint32_t>(b.data() + 24);
  f.n_ctx = get<uint32_t>(b.data() + 28);
  f.n_chunks = get<uint32_t>(b.data() + 32);
  f.model_hash = get<uint64_t>(b.data() + 36);
  f.tokens_hash = get<uint64_t>(b.data() + 44);
  f.n_tokens = get<uint64_t>(b.data() + 52);
  const uint64_t per_row = uint64_t(f.n_vocab) * 4 + 4;
  if (f.n_vocab == 0 || n_rows > (b.size() - kHeader) / per_row || kHeader + n_rows * per_row != b.size()) {
    return data_loss(name + " is truncated or corrupt");
  }
  if (f.protocol > 1 || f.n_ctx < 4 || f.n_chunks == 0 || f.n_tokens != uint64_t(f.n_chunks) * f.n_ctx) {
    return data_loss(name + " is corrupt: its run settings are impossible (protocol " + std::to_string(f.protocol) +
                     ", -c " + std::to_string(f.n_ctx) + ", " + std::to_string(f.n_chunks) + " chunks, " +
                     std::to_string(f.n_tokens) + " tokens)");
  }
  f.rows.resize(size_t(n_rows) * f.n_vocab);
  f.targets.resize(size_t(n_rows));
  std::memcpy(f.rows.data(), b.data() + kHeader, f.rows.size() * 4);
  std::memcpy(f.targets.data(), b.data() + kHeader + f.rows.size() * 4, f.targets.size() * 4);
  // A NaN would turn every statistic into NaN (or, clamped, into a false 0): refuse it here.
  for (size_t i = 0; i < f.rows.size(); ++i) {
    if (!std::isfinite(f.rows[i])) {
      return data_loss(name + " is corrupt: row " + std::to_string(i / f.n_vocab) + " holds a non-finite log-prob");
    }
  }
  for (size_t i = 0; i < f.targets.size(); ++i) {
    if (f.targets[i] < 0 || uint32_t(f.targets[i]) >= f.n_vocab) {
      return data_loss(name + " is corrupt: row " + std::to_string(i) + " scores token " +
                       std::to_string(f.targets[i]) + ", outside the vocabulary of " + std::to_string(f.n_vocab));
    }
  }
  return f;
}

Status check_same_run(const LogprobFile& base, const LogprobFile& run, const std::string& base_name) {
  std::string diff;
  auto add = [&](const std::string& what, const std::string& b, const std::string& r) {
    diff += (diff.empty() ? "" : "; ") + what + " " + b + " vs " + r + " now";
  };
  auto protocol = [](uint32_t p) { return std::string(p == 0 ? "llamacpp" : "full"); };
  if (base.model_hash != run.model_hash) add("model (content hash)", hex(base.model_hash), hex(run.model_hash));
  if (base.n_vocab != run.n_vocab) add("vocabulary", std::to_string(base.n_vocab), std::to_string(run.n_vocab));
  if (base.protocol != run.protocol) add("--protocol", protocol(base.protocol), protocol(run.protocol));
  if (base.n_ctx != run.n_ctx) add("-c", std::to_string(base.n_ctx), std::to_string(run.n_ctx));
  if (base.n_chunks != run.n_chunks) add("chunks", std::to_string(base.n_chunks), std::to_string(run.n_chunks));
  if (base.tokens_hash != run.tokens_hash || base.n_tokens != run.n_tokens) {
    add("text (tokens, hash)", std::to_string(base.n_tokens) + ", " + hex(base.tokens_hash),
        std::to_string(run.n_tokens) + ", " + hex(run.tokens_hash));
  }
  if (diff.empty()) return ok_status();
  return invalid_argument("--kl-base " + printable(base_name) + " was made from different tokens or settings: " + diff +
                          ": rerun both with the same -m, -f, -c, --chunks and --protocol");
}

}  // namespace kvq
