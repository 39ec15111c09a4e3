// SPDX-License-Identifier: MIT
// kvq: command-line front end; also an example of the library API.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {
constexpr const char* kUsage =
    "usage: kvq <command> [flags]\n"
    "commands:\n"
    "  run    generate text from a prompt\n"
    "  ppl    perplexity of a text file (llama.cpp or KVQuant protocol), KL against a saved run\n"
    "  frontier  quality-vs-bits tables and plot from kvq ppl --json files (paired KL differences)\n"
    "  info   model metadata, parameter count, KV cache bytes per token and memory for -c\n"
    "  bench  prefill and decode tokens/s (median of repetitions) for a cache type\n"
    "  bench attention  decode-attention time per token of one layer, per cache type and depth\n"
    "  bench session  session save and restore (--prompt-cache) against prefill, per cache type\n"
    "  calibrate  Fisher-weighted KVQuant calibration file for --calib FILE\n"
    "  serve  OpenAI-compatible HTTP server: many sequences batched over one KV budget\n"
    "  bench-serve  concurrent streaming clients against the serving engine, per cache type\n"
    "  synth  write a LLaMA GGUF of any shape with seeded random weights (speed work)\n"
    "run 'kvq <command> --help' for its flags\n";
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  // A closed pipe or FIFO reader is reported as a write error, not a silent death by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "run") return kvq::cli::cmd_run(args);
  if (cmd == "ppl") return kvq::cli::cmd_ppl(args);
  if (cmd == "info") return kvq::cli::cmd_info(args);
  if (cmd == "bench") return kvq::cli::cmd_bench(args);
  if (cmd == "calibrate") return kvq::cli::cmd_calibrate(args);
  if (cmd == "synth") return kvq::cli::cmd_synth(args);
  if (cmd == "serve") return kvq::cli::cmd_serve(args);
  if (cmd == "bench-serve") return kvq::cli::cmd_bench_serve(args);
  if (cmd == "frontier") return kvq::cli::cmd_frontier(args);
  std::fprintf(stderr, "kvq: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
