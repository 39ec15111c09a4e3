// SPDX-License-Identifier: MIT
#include "engine/logprob_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "io/mapped_file.h"

namespace kvq {

namespace {
constexpr char kMagic[8] = {'K', 'V', 'Q', 'L', 'O', 'G', 'P', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeader = 8 + 4 + 4 + 8 + 4 + 4;
}  // namespace

Status write_logprob_file(const std::string& path, const LogprobFile& f) {
  const std::string tmp = path + ".tmp";
  std::unique_ptr<FILE, int (*)(FILE*)> fp(std::fopen(tmp.c_str(), "wb"), std::fclose);
  if (!fp) return invalid_argument("cannot write " + tmp + ": " + std::strerror(errno));
  const uint64_t n_rows = f.n_rows();
  bool ok = std::fwrite(kMagic, 1, 8, fp.get()) == 8;
  ok = ok && std::fwrite(&kVersion, 4, 1, fp.get()) == 1;
  ok = ok && std::fwrite(&f.n_vocab, 4, 1, fp.get()) == 1;
  ok = ok && std::fwrite(&n_rows, 8, 1, fp.get()) == 1;
  ok = ok && std::fwrite(&f.protocol, 4, 1, fp.get()) == 1;
  ok = ok && std::fwrite(&f.n_ctx, 4, 1, fp.get()) == 1;
  ok = ok && std::fwrite(f.rows.data(), 4, f.rows.size(), fp.get()) == f.rows.size();
  ok = ok && std::fwrite(f.targets.data(), 4, f.targets.size(), fp.get()) == f.targets.size();
  ok = (std::fclose(fp.release()) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return data_loss("writing " + path + " failed");
  }
  return ok_status();
}

StatusOr<LogprobFile> read_logprob_file(const std::string& path) {
  KVQ_ASSIGN_OR_RETURN(auto mf, MappedFile::open(path));
  const auto b = mf->bytes();
  if (b.size() < kHeader || std::memcmp(b.data(), kMagic, 8) != 0) {
    return data_loss(path + " is not a kvq log-prob file (saved with --save-logits)");
  }
  uint32_t version;
  uint64_t n_rows;
  LogprobFile f;
  std::memcpy(&version, b.data() + 8, 4);
  std::memcpy(&f.n_vocab, b.data() + 12, 4);
  std::memcpy(&n_rows, b.data() + 16, 8);
  std::memcpy(&f.protocol, b.data() + 24, 4);
  std::memcpy(&f.n_ctx, b.data() + 28, 4);
  if (version != kVersion) return data_loss(path + ": unsupported log-prob file version");
  const uint64_t per_row = uint64_t(f.n_vocab) * 4 + 4;
  if (f.n_vocab == 0 || n_rows > (b.size() - kHeader) / per_row ||
      kHeader + n_rows * per_row != b.size()) {
    return data_loss(path + " is truncated or corrupt");
  }
  f.rows.resize(size_t(n_rows) * f.n_vocab);
  f.targets.resize(size_t(n_rows));
  std::memcpy(f.rows.data(), b.data() + kHeader, f.rows.size() * 4);
  std::memcpy(f.targets.data(), b.data() + kHeader + f.rows.size() * 4, f.targets.size() * 4);
  return f;
}

}  // namespace kvq
