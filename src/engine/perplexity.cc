// SPDX-License-Identifier: MIT
#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>

#include "base/printable.h"
#include "base/timer.h"
#include "engine/logprob_file.h"
#include "io/gguf.h"

namespace kvq {

const char* mode_name(PplMode m) { return m == PplMode::kDecode ? "decode" : "simulated"; }

const char* protocol_name(PplProtocol p) {
  return p == PplProtocol::kLlamaCpp ? "llamacpp" : "full";
}

namespace {

// log-softmax of one row into out (double accumulation, as llama-perplexity).
void log_softmax(const float* logits, int n, float* out) {
  float mx = logits[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(double(logits[i] - mx));
  const float lse = float(std::log(sum)) + mx;
  for (int i = 0; i < n; ++i) out[i] = logits[i] - lse;
}

Status compare_with_base(const LogprobFile& base, const LogprobFile& cur, const std::string& base_name,
                         PplResult* r) {
  // The identity was checked before the run; rows and targets follow from it, so a mismatch
  // here is a file that lies about its run.
  if (base.n_vocab != cur.n_vocab || base.n_rows() != cur.n_rows() || base.targets != cur.targets) {
    return data_loss("--kl-base " + printable(base_name) + " records this run's settings but holds other rows (" +
                     std::to_string(base.n_rows()) + " rows, " + std::to_string(cur.n_rows()) + " now)");
  }
  const size_t nv = cur.n_vocab;
  std::vector<double> kl(size_t(cur.n_rows()));
  double nll_base = 0.0, d_sum = 0.0, d_sum2 = 0.0;
  int64_t same_top = 0;
  for (size_t i = 0; i < kl.size(); ++i) {
    const float* pb = &base.rows[i * nv];
    const float* pc = &cur.rows[i * nv];
    double k = 0.0;
    for (size_t v = 0; v < nv; ++v) k += std::exp(double(pb[v])) * (double(pb[v]) - double(pc[v]));
    // max() would turn a NaN into a KL of 0: a non-finite KL is an error, not a result.
    if (!std::isfinite(k)) return data_loss("KL divergence of row " + std::to_string(i) + " is not finite");
    kl[i] = std::max(0.0, k);
    nll_base -= pb[size_t(cur.targets[i])];
    const double d = double(pb[size_t(cur.targets[i])]) - double(pc[size_t(cur.targets[i])]);
    d_sum += d;
    d_sum2 += d * d;
    same_top += (std::max_element(pb, pb + nv) - pb) == (std::max_element(pc, pc + nv) - pc);
  }
  double mean = 0.0, sum2 = 0.0;
  for (double k : kl) mean += k;
  r->has_kl = true;
  r->kl_mean = mean / double(kl.size());
  r->token_kl.assign(kl.begin(), kl.end());
  for (double k : kl) sum2 += (k - r->kl_mean) * (k - r->kl_mean);
  r->kl_stderr = kl.size() > 1 ? std::sqrt(sum2 / double(kl.size() - 1) / double(kl.size())) : 0.0;
  std::sort(kl.begin(), kl.end());
  r->kl_p99 = kl[std::min(kl.size() - 1, size_t(0.99 * double(kl.size())))];
  r->top1_agreement = double(same_top) / double(kl.size());
  r->base_ppl = std::exp(nll_base / double(kl.size()));
  r->delta_ppl = r->ppl - r->base_ppl;
  const double n = double(kl.size());
  const double d_var = std::max(0.0, d_sum2 / n - (d_sum / n) * (d_sum / n));
  r->delta_ppl_stderr = n > 1 ? r->ppl * std::sqrt(d_var / (n - 1)) : 0.0;
  return ok_status();
}

}  // namespace

StatusOr<LogprobFile> perplexity_run_header(const LlamaModel& model, std::span<const int32_t> tokens,
                                            const PplArgs& args) {
  const int n_ctx = args.n_ctx;
  if (n_ctx < 4) return invalid_argument("-c must be at least 4 for perplexity");
  if (args.n_chunks == 0 || args.n_chunks < -1) {
    return invalid_argument("--chunks must be at least 1 (or -1 for all), got " + std::to_string(args.n_chunks));
  }
  const int64_t available = int64_t(tokens.size()) / n_ctx;
  if (available == 0) {
    return invalid_argument("the text has " + std::to_string(tokens.size()) +
                            " tokens, fewer than one chunk of -c " + std::to_string(n_ctx));
  }
  LogprobFile h;
  h.n_chunks = uint32_t(args.n_chunks < 0 ? available : std::min<int64_t>(available, args.n_chunks));
  h.n_vocab = uint32_t(model.config().n_vocab);
  h.protocol = uint32_t(args.protocol);
  h.n_ctx = uint32_t(n_ctx);
  h.n_tokens = uint64_t(h.n_chunks) * uint64_t(n_ctx);
  h.model_hash = gguf_content_hash(model.gguf());
  h.tokens_hash = hash_tokens(tokens.first(size_t(h.n_tokens)));
  return h;
}

StatusOr<PplResult> run_perplexity(ExecContext& ctx, const LlamaModel& model,
                                   const CacheSpec& cache_spec, std::span<const int32_t> tokens,
                                   const PplArgs& args) {
  KVQ_ASSIGN_OR_RETURN(LogprobFile rows, perplexity_run_header(model, tokens, args));
  const int n_ctx = args.n_ctx;
  const int n_chunks = int(rows.n_chunks);
  const int n_vocab = model.config().n_vocab;
  const int first = args.protocol == PplProtocol::kLlamaCpp ? n_ctx / 2 : 0;
  // The rows to compare against must come from the same run: checked before any work.
  const LogprobFile* base = args.base;
  if (base) KVQ_RETURN_IF_ERROR(check_same_run(*base, rows, args.base_name));
  KVQ_ASSIGN_OR_RETURN(auto cache, make_cache(cache_spec, model.kv_shape(n_ctx), args.calibration));
  cache->set_eager(args.mode == PplMode::kSimulated);
  const bool batched = args.mode == PplMode::kSimulated || cache->batch_invariant();
  ForwardWorkspace ws;
  std::vector<float> logits(size_t(n_ctx) * n_vocab);
  std::vector<int32_t> chunk(static_cast<size_t>(n_ctx));
  const bool keep_rows = args.save_logits || base || args.rows_out;
  std::vector<float> lp(static_cast<size_t>(n_vocab));

  PplResult r;
  r.n_chunks = n_chunks;
  double nll = 0.0, nll2 = 0.0;
  Timer timer;
  if (args.progress) args.progress(0, n_chunks);
  for (int c = 0; c < n_chunks; ++c) {
    std::copy_n(tokens.begin() + int64_t(c) * n_ctx, n_ctx, chunk.begin());
    // llama-perplexity puts BOS at each chunk's start only for vocabularies that add one
    // (Qwen2's does not).
    if (args.protocol == PplProtocol::kLlamaCpp && model.tokenizer().add_bos()) chunk[0] = model.tokenizer().bos_id();
    cache->clear();
    if (batched) {
      KVQ_RETURN_IF_ERROR(prefill(ctx, model, chunk, *cache, ws, logits.data(), true, args.batch));
    } else {
      for (int i = 0; i < n_ctx - 1; ++i) {
        KVQ_RETURN_IF_ERROR(model.forward(ctx, std::span<const int32_t>(&chunk[size_t(i)], 1), *cache,
                                          ws, &logits[size_t(i) * n_vocab], false));
      }
    }
    r.cache_bytes = cache->bytes_used();
    r.cache_tokens = cache->n_tokens(0);
    for (int i = first; i < n_ctx - 1; ++i) {
      log_softmax(&logits[size_t(i) * n_vocab], n_vocab, lp.data());
      const int32_t target = chunk[size_t(i) + 1];
      const double v = -double(lp[size_t(target)]);
      nll += v;
      nll2 += v * v;
      ++r.n_scored;
      if (keep_rows) {
        rows.rows.insert(rows.rows.end(), lp.begin(), lp.end());
        rows.targets.push_back(target);
      }
    }
    if (args.progress) args.progress(c + 1, n_chunks);
  }
  r.seconds = timer.seconds();
  const double mean = nll / double(r.n_scored);
  const double var = nll2 / double(r.n_scored) - mean * mean;
  r.ppl = std::exp(mean);
  // llama-perplexity's uncertainty: PPL * sqrt(var / (n - 1)).
  r.ppl_stderr = r.n_scored > 1 ? r.ppl * std::sqrt(std::max(0.0, var) / double(r.n_scored - 1)) : 0.0;
  if (!std::isfinite(r.ppl) || !std::isfinite(r.ppl_stderr)) {
    return data_loss("perplexity is not finite (the model produced NaN or infinite logits)");
  }

  if (base) KVQ_RETURN_IF_ERROR(compare_with_base(*base, rows, args.base_name, &r));
  if (args.save_logits) KVQ_RETURN_IF_ERROR(write_logprob_file(*args.save_logits, rows));
  if (args.rows_out) *args.rows_out = std::move(rows);
  return r;
}

StatusOr<PairedDifference> paired_kl_difference(const PplResult& a, const PplResult& b) {
  if (!a.has_kl || !b.has_kl || a.token_kl.size() != b.token_kl.size() || a.token_kl.empty()) {
    return invalid_argument("a paired KL difference needs two results scored against the same base on the same tokens");
  }
  const size_t n = a.token_kl.size();
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += double(a.token_kl[i]) - double(b.token_kl[i]);
  PairedDifference d;
  d.mean = sum / double(n);
  double sum2 = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double e = double(a.token_kl[i]) - double(b.token_kl[i]) - d.mean;
    sum2 += e * e;
  }
  d.std_error = n > 1 ? std::sqrt(sum2 / double(n - 1) / double(n)) : 0.0;
  return d;
}

}  // namespace kvq
