// SPDX-License-Identifier: MIT
#include "engine/synth_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include "base/rng.h"
#include "base/thread_pool.h"
#include "engine/weight_types.h"
#include "io/gguf.h"
#include "io/gguf_stream.h"
#include "io/gguf_writer.h"

namespace kvq {

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kAlignment = 32;
// The bounds read_model_config accepts: a synthetic file must load back.
constexpr int kMaxDim = 1 << 20;
constexpr int kMaxLayers = 4096;
constexpr int kMaxVocab = kMaxDim * 16;
// Values per seeded random block and per written piece. Both follow from the shape only, never
// from the thread count, so the file is the same for any number of threads; a piece bounds
// memory (16 MiB of f32) whatever the tensor size.
constexpr int64_t kBlockValues = int64_t(1) << 16;
constexpr int64_t kPieceValues = int64_t(1) << 22;

struct TensorPlan {
  std::string name;
  int64_t rows = 1;
  int64_t cols = 0;
  float std = 0;  // 0: a norm weight, all ones, stored f32
};

Status check_range(const char* flag, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return ok_status();
  return invalid_argument(std::string(flag) + " " + std::to_string(v) + " is out of range [" + std::to_string(lo) +
                          ", " + std::to_string(hi) + "]");
}

Status check_shape(const SynthOptions& o) {
  KVQ_RETURN_IF_ERROR(check_range("--dim", o.dim, 1, kMaxDim));
  KVQ_RETURN_IF_ERROR(check_range("--heads", o.heads, 1, kMaxDim));
  KVQ_RETURN_IF_ERROR(check_range("--kv-heads", o.kv_heads, 1, kMaxDim));
  KVQ_RETURN_IF_ERROR(check_range("--layers", o.layers, 1, kMaxLayers));
  KVQ_RETURN_IF_ERROR(check_range("--ffn", o.ffn, 1, kMaxDim));
  KVQ_RETURN_IF_ERROR(check_range("--head-dim", o.head_dim, 0, kMaxDim));
  KVQ_RETURN_IF_ERROR(check_range("--ctx", o.ctx, 1, 1 << 30));
  KVQ_RETURN_IF_ERROR(check_range("--threads", o.n_threads, 1, 512));
  // kvq's loader derives the default head size from dim / heads, so it requires this even
  // when --head-dim is given.
  if (o.dim % o.heads != 0) {
    return invalid_argument("--heads " + std::to_string(o.heads) + " does not divide --dim " + std::to_string(o.dim));
  }
  if (o.heads % o.kv_heads != 0) {
    return invalid_argument("--kv-heads " + std::to_string(o.kv_heads) + " does not divide --heads " +
                            std::to_string(o.heads));
  }
  const int head_dim = o.head_dim ? o.head_dim : o.dim / o.heads;
  if (head_dim % 2 != 0) {
    return invalid_argument("head dimension " + std::to_string(head_dim) + " must be even (RoPE rotates pairs)");
  }
  if (int64_t(head_dim) * o.heads > kMaxDim) return invalid_argument("--heads x --head-dim is too large");
  if (!(o.rope_base > 1.0f && o.rope_base < 1e12f)) return invalid_argument("--rope-base must be in (1, 1e12)");
  if (!(o.rms_eps > 0.0f && o.rms_eps < 1.0f)) return invalid_argument("--rms-eps must be in (0, 1)");
  return ok_status();
}

// Everything about the paths that can be known before reading or writing a byte.
Status check_paths(const SynthOptions& o) {
  if (o.output.empty()) return invalid_argument("no output given: pass -o FILE");
  if (o.vocab_from.empty()) return invalid_argument("no vocabulary given: pass --vocab-from FILE.gguf");
  std::error_code ec;
  if (!fs::exists(o.vocab_from, ec)) return not_found("vocabulary file " + o.vocab_from + " does not exist");
  const fs::path out(o.output);
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec)) return invalid_argument("output directory " + dir.string() + " does not exist");
  if (fs::is_directory(out, ec)) return invalid_argument("output " + o.output + " is a directory");
  // equivalent() sees through other spellings of the path, symlinks and hard links.
  if (fs::exists(out, ec) && fs::equivalent(out, o.vocab_from, ec)) return invalid_argument("output " + o.output + " is the vocabulary file " + o.vocab_from);
  return ok_status();
}

// llama.cpp's tensor names; shapes [rows, cols] outermost first (ggml ne = [cols, rows]).
std::vector<TensorPlan> plan_tensors(const SynthOptions& o, int64_t head_dim, int64_t n_vocab) {
  const int64_t dim = o.dim, q = o.heads * head_dim, kv = o.kv_heads * head_dim, ffn = o.ffn;
  auto sd = [](int64_t cols) { return float(1.0 / std::sqrt(double(cols))); };
  std::vector<TensorPlan> p;
  p.push_back({"token_embd.weight", n_vocab, dim, 1.0f});
  for (int il = 0; il < o.layers; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    p.push_back({b + "attn_norm.weight", 1, dim, 0});
    p.push_back({b + "attn_q.weight", q, dim, sd(dim)});
    p.push_back({b + "attn_k.weight", kv, dim, sd(dim)});
    p.push_back({b + "attn_v.weight", kv, dim, sd(dim)});
    p.push_back({b + "attn_output.weight", dim, q, sd(q)});
    p.push_back({b + "ffn_norm.weight", 1, dim, 0});
    p.push_back({b + "ffn_gate.weight", ffn, dim, sd(dim)});
    p.push_back({b + "ffn_up.weight", ffn, dim, sd(dim)});
    p.push_back({b + "ffn_down.weight", dim, ffn, sd(ffn)});
  }
  p.push_back({"output_norm.weight", 1, dim, 0});
  p.push_back({"output.weight", n_vocab, dim, sd(dim)});
  return p;
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(1 << 30));
  return buf;
}

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Every (seed, tensor, block) gets its own stream, so blocks can be generated in any order.
uint64_t block_seed(uint64_t seed, size_t tensor, int64_t block) {
  return mix64(mix64(mix64(seed) ^ uint64_t(tensor)) ^ uint64_t(block));
}

// Box-Muller keeping both values of each pair (Rng::normal keeps one): half the log/sqrt calls.
void fill_normal(uint64_t seed, float sd, float* x, int64_t n) {
  Rng rng(seed);
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = std::max(rng.uniform(), 1e-300);
    const double r = double(sd) * std::sqrt(-2.0 * std::log(u1));
    const double t = 6.283185307179586 * rng.uniform();
    x[i] = float(r * std::cos(t));
    if (i + 1 < n) x[i + 1] = float(r * std::sin(t));
  }
}

struct Writer {
  GgufStream& stream;
  ThreadPool& pool;
  uint64_t seed;
  const SynthProgress& progress;
  std::vector<std::vector<float>> scratch;  // one per worker
  std::vector<uint8_t> piece;

  Status write(const TensorPlan& t, size_t index, const WeightType& type) {
    const GgmlBlockInfo b = ggml_block_info(uint32_t(type.ggml));
    const uint64_t row_bytes = uint64_t(t.cols) / b.block_elems * b.block_bytes;
    const int64_t block_rows = std::max<int64_t>(1, kBlockValues / t.cols);
    const int64_t n_blocks = (t.rows + block_rows - 1) / block_rows;
    const int64_t piece_blocks = std::max<int64_t>(1, kPieceValues / (block_rows * t.cols));
    for (auto& s : scratch) s.resize(size_t(block_rows * t.cols));
    for (int64_t b0 = 0; b0 < n_blocks; b0 += piece_blocks) {
      const int64_t nb = std::min(piece_blocks, n_blocks - b0);
      const int64_t r0 = b0 * block_rows, r1 = std::min(t.rows, (b0 + nb) * block_rows);
      piece.resize(size_t(r1 - r0) * row_bytes);
      pool.parallel_for(nb, [&](int64_t i, int worker) {
        const int64_t br0 = (b0 + i) * block_rows, br1 = std::min(t.rows, br0 + block_rows);
        const int64_t n = (br1 - br0) * t.cols;
        float* x = scratch[size_t(worker)].data();
        if (t.std == 0) {
          std::fill(x, x + n, 1.0f);
        } else {
          fill_normal(block_seed(seed, index, b0 + i), t.std, x, n);
        }
        // Blocks of the type never span rows (cols is a multiple of the block), so several
        // rows encode as one run.
        type.encode(x, n, piece.data() + size_t(br0 - r0) * row_bytes);
      });
      KVQ_RETURN_IF_ERROR(stream.append(piece));
      if (progress) progress(stream.written_bytes(), stream.total_bytes());
    }
    return ok_status();
  }
};

}  // namespace

StatusOr<SynthResult> synth_model(const SynthOptions& o, const SynthProgress& progress) {
  KVQ_RETURN_IF_ERROR(check_shape(o));
  KVQ_ASSIGN_OR_RETURN(const WeightType* type, find_weight_type(o.type));
  KVQ_ASSIGN_OR_RETURN(const WeightType* f32, find_weight_type("f32"));
  KVQ_RETURN_IF_ERROR(check_paths(o));
  auto vocab_or = GgufFile::open(o.vocab_from);
  if (!vocab_or.ok()) return vocab_or.status().with_context("--vocab-from");
  const GgufFile& vocab = **vocab_or;
  auto tokens = vocab.get_string_array("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status().with_context("--vocab-from " + o.vocab_from + " has no vocabulary");
  SynthResult result;
  result.n_vocab = int(std::min<size_t>(tokens->size(), size_t(kMaxVocab) + 1));
  KVQ_RETURN_IF_ERROR(check_range("vocabulary size", result.n_vocab, 1, kMaxVocab));

  const int head_dim = o.head_dim ? o.head_dim : o.dim / o.heads;
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", "kvq-synth");
  w.add_string("general.description", "random weights from kvq synth, seed " + std::to_string(o.seed));
  w.add_u32("general.alignment", kAlignment);
  w.add_u32("general.file_type", type->file_type);
  w.add_u32("llama.context_length", uint32_t(o.ctx));
  w.add_u32("llama.embedding_length", uint32_t(o.dim));
  w.add_u32("llama.block_count", uint32_t(o.layers));
  w.add_u32("llama.feed_forward_length", uint32_t(o.ffn));
  w.add_u32("llama.attention.head_count", uint32_t(o.heads));
  w.add_u32("llama.attention.head_count_kv", uint32_t(o.kv_heads));
  if (head_dim != o.dim / o.heads) {
    w.add_u32("llama.attention.key_length", uint32_t(head_dim));
    w.add_u32("llama.attention.value_length", uint32_t(head_dim));
  }
  w.add_u32("llama.rope.dimension_count", uint32_t(head_dim));
  w.add_f32("llama.rope.freq_base", o.rope_base);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", o.rms_eps);
  w.add_u32("llama.vocab_size", uint32_t(result.n_vocab));
  for (const GgufKv& kv : vocab.kvs()) {
    if (kv.key.starts_with("tokenizer.")) w.add_value(kv.key, kv.value);
  }

  const std::vector<TensorPlan> plan = plan_tensors(o, head_dim, result.n_vocab);
  for (const TensorPlan& t : plan) {
    const WeightType& tt = t.std == 0 ? *f32 : *type;
    std::vector<uint64_t> ne = {uint64_t(t.cols)};
    if (t.rows > 1 || t.std != 0) ne.push_back(uint64_t(t.rows));
    if (Status s = w.declare_tensor(t.name, ne, uint32_t(tt.ggml)); !s.ok()) {
      return invalid_argument("--type " + o.type + " needs every matrix width (--dim, --ffn, heads x head_dim) to be a multiple of " +
                              std::to_string(ggml_block_info(uint32_t(tt.ggml)).block_elems) + ": " + s.message());
    }
    result.n_params += uint64_t(t.rows) * uint64_t(t.cols);
  }
  // The exact file size, checked against the disk before anything is written.
  uint64_t total = w.serialize_header(kAlignment).size();
  for (uint64_t n : w.tensor_bytes()) {
    if (__builtin_add_overflow(total, (n + kAlignment - 1) / kAlignment * kAlignment, &total)) {
      return invalid_argument("the model is too large to describe");
    }
  }
  std::error_code ec;
  const fs::path dir = fs::path(o.output).has_parent_path() ? fs::path(o.output).parent_path() : fs::path(".");
  const fs::space_info space = fs::space(dir, ec);
  if (!ec && space.available < total) {
    return out_of_memory("the model needs " + gib(total) + " but " + dir.string() + " has only " +
                         gib(space.available) + " free");
  }

  KVQ_ASSIGN_OR_RETURN(std::unique_ptr<GgufStream> stream, GgufStream::create(w, o.output, kAlignment));
  ThreadPool pool(o.n_threads);
  Writer writer{*stream, pool, o.seed, progress, std::vector<std::vector<float>>(size_t(pool.n_threads())), {}};
  for (size_t i = 0; i < plan.size(); ++i) {
    KVQ_RETURN_IF_ERROR(writer.write(plan[i], i, plan[i].std == 0 ? *f32 : *type));
  }
  KVQ_RETURN_IF_ERROR(stream->commit());
  result.file_bytes = total;
  return result;
}

}  // namespace kvq
