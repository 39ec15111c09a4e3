// SPDX-License-Identifier: MIT
// Pieces shared by the kvq subcommands: model/thread/kernel flags, memory checks, progress.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "base/exec_context.h"
#include "base/thread_pool.h"
#include "io/output_file.h"
#include "cli/args.h"
#include "engine/runtime.h"
#include "model/llama.h"

namespace kvq::cli {

struct CommonArgs {
  std::string model;
  int n_threads = available_cpus();  // the CPUs this process may use (affinity)
  std::string kernels = "simd";
};

void add_common_flags(ArgParser& p, CommonArgs* a);
StatusOr<KernelPath> parse_kernel_path(const std::string& s);
// Prints a note (not an error) when -t asks for more threads than the CPUs the process may use.
void note_thread_count(const std::string& command, const CommonArgs& a);
StatusOr<std::unique_ptr<LlamaModel>> load_model(const CommonArgs& a);
// MemAvailable from /proc/meminfo in bytes, or 0 when unknown.
double available_memory();

// Every file a command names, checked before any computation: inputs must be regular files;
// outputs are prepared (io/output_file.h) and compared with the inputs and each other.
class CommandFiles {
 public:
  // An input named by flag (skipped when path is empty).
  Status add_input(const std::string& flag, const std::string& path);
  // An output named by flag, checked now against every input and earlier output.
  StatusOr<OutputFile> add_output(const std::string& flag, const std::string& path);

 private:
  std::vector<NamedPath> files_;
};
// Fails with a clear message when a cache of n_ctx tokens cannot fit in available memory.
Status check_cache_fits(const KvCache& cache, int n_ctx);
// A regular file's bytes; what names it in errors (a flag).
StatusOr<std::string> read_text_file(const std::string& path, const std::string& what = "text file");
// The calibration text used when none is given: the shared TinyStories train text, found
// relative to the model's folder (../text/tinystories/train_head.txt next to ../models).
std::string default_calibration_text(const std::string& model_path);
// That default, or an error saying it was derived from the model's folder and is missing.
StatusOr<std::string> find_default_calibration_text(const std::string& model_path, const std::string& flag);
// A warning line on stderr ("kvq <command>: warning: ...").
void warn(const std::string& command, const std::string& message);
std::string format_bytes(double bytes);
// "20GiB", "512MiB", "4GB", "1e9": a byte count (binary and decimal suffixes, case-insensitive);
// what names it in errors (a flag).
StatusOr<uint64_t> parse_bytes(const std::string& text, const std::string& what);
// Redraws a one-line progress bar on stderr (a plain line per 10% when stderr is not a tty).
void show_progress(const char* what, int done, int total, double elapsed_s);

// Runs a subcommand body, printing "kvq <cmd>: error: ..." and returning 1 on failure.
int report(const std::string& command, const Status& s);

}  // namespace kvq::cli
