// SPDX-License-Identifier: MIT
// Pieces shared by the kvq subcommands: model/thread/kernel flags, memory checks, progress.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "base/exec_context.h"
#include "cli/args.h"
#include "engine/runtime.h"
#include "model/llama.h"

namespace kvq::cli {

struct CommonArgs {
  std::string model;
  int n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  std::string kernels = "simd";
};

void add_common_flags(ArgParser& p, CommonArgs* a);
StatusOr<KernelPath> parse_kernel_path(const std::string& s);
StatusOr<std::unique_ptr<LlamaModel>> load_model(const CommonArgs& a);
// MemAvailable from /proc/meminfo in bytes, or 0 when unknown.
double available_memory();
// Fails with a clear message when a cache of n_ctx tokens cannot fit in available memory.
Status check_cache_fits(const KvCache& cache, int n_ctx);
StatusOr<std::string> read_text_file(const std::string& path);
// The calibration text used when none is given: the shared TinyStories train text, found
// relative to the model's folder (../text/tinystories/train_head.txt next to ../models).
std::string default_calibration_text(const std::string& model_path);
std::string format_bytes(double bytes);
// Redraws a one-line progress bar on stderr (a plain line per 10% when stderr is not a tty).
void show_progress(const char* what, int done, int total, double elapsed_s);

// Runs a subcommand body, printing "kvq <cmd>: error: ..." and returning 1 on failure.
int report(const std::string& command, const Status& s);

}  // namespace kvq::cli
