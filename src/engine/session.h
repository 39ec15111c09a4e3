// SPDX-License-Identifier: MIT
// Session files (`kvq run --prompt-cache FILE`, the server's slot save/restore): one sequence's
// KV cache as it is in memory (packed pages, outliers, KIVI's window ring, sinks) and the token
// ids it holds, so a restore needs no prefill. A file is bound to the model (content hash), the
// cache spec (KvCache::name()), the shape and the calibrated parameters
// (KvCache::calibration_hash()); one made for anything else is refused with every difference
// named. Layout: docs/FILE_FORMAT.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "io/byte_stream.h"
#include "io/output_file.h"
#include "kv/kv_cache.h"
#include "kvq/status.h"
#include "model/llama.h"

namespace kvq {

// 4: KVQuant's outliers stored as corrections x - dense to their dense decode (KvquantStore);
// 3: KVQuant's full outlier pages sealed, CSR by KV head (quant/outlier_layout.h);
// 2: outlier pages in the narrow layout (uint8 indices, uint16 page-local pointers where they
// fit). Other versions are refused.
inline constexpr uint32_t kSessionVersion = 4;

// What a session is bound to besides the cache itself.
struct SessionBinding {
  uint64_t model_hash = 0;  // gguf_content_hash of the model
  uint32_t n_vocab = 0;     // token ids are checked against it
};
SessionBinding session_binding(const LlamaModel& model);

// The fixed header at the start of the file (little-endian); then the cache spec string
// (spec_bytes), the token ids (int32 [n_tokens]), the cache state (state_bytes, written by
// KvCache::write_state) and the checksum (uint64, Checksum64 of everything before it).
struct SessionHeader {
  char magic[8];  // "KVQSESS\x1a"
  uint32_t version;
  uint32_t spec_bytes;
  uint64_t model_hash;
  uint64_t calibration_hash;
  uint32_t n_layers, n_kv_heads, head_dim, n_vocab;
  uint64_t n_tokens;
  uint64_t state_bytes;
};
static_assert(sizeof(SessionHeader) == 64, "SessionHeader is a file layout");

// Writes cache, which holds tokens (every layer tokens.size() long), to w. Errors:
// kInvalidArgument when the lengths differ; w's write errors.
Status write_session(ByteWriter& w, const SessionBinding& b, const KvCache& cache, std::span<const int32_t> tokens);
// Through out (atomically for a regular file: io/output_file.h). Returns the bytes written.
StatusOr<uint64_t> save_session(OutputFile& out, const LlamaModel& model, const KvCache& cache,
                                std::span<const int32_t> tokens);
// The same for a path checked now (no other files of a command to compare it with).
StatusOr<uint64_t> save_session(const std::string& path, const LlamaModel& model, const KvCache& cache,
                                std::span<const int32_t> tokens);

// Replaces cache's contents with the session in bytes and returns its tokens. Everything is
// checked before the cache changes, and any error leaves it as it was: kDataLoss for a
// truncated or corrupt file (checksum, counts and sizes against the shape, outlier indices),
// kInvalidArgument for a file made for another model, cache spec, shape or calibration (every
// difference named) or one that holds more tokens than the cache's context, kUnimplemented
// for another version, kOutOfMemory when the cache's pool refuses. name is used in messages.
StatusOr<std::vector<int32_t>> parse_session(std::span<const uint8_t> bytes, const std::string& name,
                                             const SessionBinding& b, KvCache& cache);
// The same for a file (mapped, not copied). kNotFound when it does not exist.
StatusOr<std::vector<int32_t>> load_session(const std::string& path, const LlamaModel& model, KvCache& cache);

// Tokens a and b share from the start (the reuse below, and the server's choice of slot).
size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b);

// llama.cpp's --prompt-cache reuse: cache holds a restored session's tokens; keeps the longest
// prefix they share with prompt, short of the prompt's last token (generation needs its
// logits), by truncating the cache there, or, where the format cannot cut there (inside a KIVI
// key block), at the largest position below it that it can (0 at worst: prefill from scratch).
// Returns the tokens kept; note (may be null) says what was kept and why.
int keep_session_prefix(KvCache& cache, std::span<const int32_t> session, std::span<const int32_t> prompt,
                        std::string* note);

}  // namespace kvq
