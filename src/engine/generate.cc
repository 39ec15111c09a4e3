// SPDX-License-Identifier: MIT
#include "engine/generate.h"

#include "base/timer.h"
#include "quant/bits_accounting.h"

namespace kvq {

StatusOr<std::vector<int32_t>> encode_prompt(const LlamaModel& model, const std::string& prompt, int n_ctx) {
  const Tokenizer& tok = model.tokenizer();
  std::vector<int32_t> ids = tok.encode(prompt, tok.add_bos(), true);
  if (ids.empty()) return invalid_argument("the prompt is empty and the model adds no BOS");
  if (int64_t(ids.size()) >= n_ctx) {
    return invalid_argument("the prompt has " + std::to_string(ids.size()) +
                            " tokens, which does not fit -c " + std::to_string(n_ctx) +
                            " with room to generate; raise -c");
  }
  return ids;
}

StatusOr<GenerateStats> generate(ExecContext& ctx, const LlamaModel& model, KvCache& cache,
                                 const GenerateArgs& args,
                                 const std::function<void(std::string_view)>& on_piece,
                                 std::vector<int32_t>* tokens_out) {
  const Tokenizer& tok = model.tokenizer();
  const int n_ctx = cache.shape().n_ctx;
  KVQ_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, encode_prompt(model, args.prompt, n_ctx));
  if (args.n_cached < 0 || size_t(args.n_cached) >= prompt.size() || cache.n_tokens(0) != args.n_cached) {
    return invalid_argument("generate needs a cache holding the prompt's first " + std::to_string(args.n_cached) +
                            " tokens, fewer than its " + std::to_string(prompt.size()) + "; it holds " +
                            std::to_string(cache.n_tokens(0)));
  }
  // Context shift keeps the first n_keep tokens and drops a page at a time after them.
  const int n_keep = args.n_keep >= 0 ? args.n_keep : std::max(cache.sink_tokens(), tok.add_bos() ? 1 : 0);
  if (args.context_shift) {
    if (n_keep + kKvPageTokens >= n_ctx) {
      return invalid_argument("context shift keeps " + std::to_string(n_keep) + " tokens and drops " +
                              std::to_string(kKvPageTokens) + " at a time, which needs -c above " +
                              std::to_string(n_keep + kKvPageTokens) + " (it is " + std::to_string(n_ctx) + ")");
    }
    KVQ_RETURN_IF_ERROR(cache.check_shift(n_keep, kKvPageTokens).with_context("--context-shift"));
  }
  GenerateStats st;
  st.n_keep = n_keep;
  st.n_prompt = int(prompt.size()) - args.n_cached;
  for (int32_t id : prompt) on_piece(tok.token_to_piece(id));
  if (tokens_out) *tokens_out = prompt;

  const int n_vocab = model.config().n_vocab;
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  ForwardWorkspace ws;
  Sampler sampler(args.sampling);
  Timer timer;
  KVQ_RETURN_IF_ERROR(prefill(ctx, model, std::span<const int32_t>(prompt).subspan(size_t(args.n_cached)), cache, ws,
                              logits.data(), false, args.batch));
  st.prefill_seconds = timer.seconds();
  if (args.after_prompt) KVQ_RETURN_IF_ERROR(args.after_prompt(prompt));
  timer.reset();
  for (int i = 0; args.n_predict < 0 || i < args.n_predict; ++i) {
    const int32_t next = sampler.sample(logits.data(), n_vocab);
    if (tok.is_eog(next)) break;
    on_piece(tok.token_to_piece(next));
    if (tokens_out) tokens_out->push_back(next);
    ++st.n_generated;
    if (args.n_predict >= 0 && i + 1 == args.n_predict) break;
    if (cache.n_tokens(0) >= n_ctx) {
      if (!args.context_shift) {
        st.context_full = true;
        break;
      }
      KVQ_RETURN_IF_ERROR(cache.shift(n_keep, kKvPageTokens, model.rope()));
      ++st.n_shifts;
      st.n_dropped += kKvPageTokens;
    }
    const int32_t one[1] = {next};
    KVQ_RETURN_IF_ERROR(model.forward(ctx, one, cache, ws, logits.data(), false));
  }
  st.decode_seconds = timer.seconds();
  return st;
}

}  // namespace kvq
