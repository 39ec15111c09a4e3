// SPDX-License-Identifier: MIT
// Pieces shared by the kvq subcommands: model/thread/kernel flags, memory checks, progress.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

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
// -b/--batch-size: prompt tokens per forward step (engine/prefill.h), at least 1.
void add_batch_flag(ArgParser& p, int* batch);
StatusOr<KernelPath> parse_kernel_path(const std::string& s);
// Prints a note (not an error) when -t asks for more threads than the CPUs the process may use.
void note_thread_count(const std::string& command, const CommonArgs& a);
StatusOr<std::unique_ptr<LlamaModel>> load_model(const CommonArgs& a);
// MemAvailable from /proc/meminfo in bytes, or 0 when unknown.
double available_memory();
// The process's peak resident set (getrusage ru_maxrss) in bytes.
double peak_rss_bytes();
// The process's resident set now, after handing freed heap memory back to the system
// (malloc_trim), so that what is allocated next shows as growth.
double settled_rss_bytes();
// The middle of v's values (the upper one of the two middle ones for an even count); v non-empty.
double median(std::vector<double> v);
// Warns (never refuses, as llama.cpp does) when n_tokens positions go beyond the context the
// model was trained for; what names them in the message ("-c 8192").
void warn_beyond_training(const std::string& command, const LlamaModel& model, int64_t n_tokens,
                          const std::string& what);

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
// Fails, before the caches' storage is allocated (pages come on demand), when n_tokens of each
// of them, held at once, cannot fit in the memory available; the message states the bytes needed and available.
// what names the tokens in it ("-c 4096", "-d 100000 + -p 128 + -n 128").
Status check_cache_fits(const std::vector<const KvCache*>& caches, int n_tokens, const std::string& what);
// A regular file's bytes; what names it in errors (a flag).
StatusOr<std::string> read_text_file(const std::string& path, const std::string& what = "text file");
// Default texts of the shared folder, relative to its text/ folder: the calibration text
// (TinyStories train) and the long text that kvq bench -d replays (War and Peace).
inline constexpr char kCalibrationText[] = "tinystories/train_head.txt";
inline constexpr char kLongText[] = "long/war_and_peace.txt";
// A shared text found relative to the model's folder: ../text/REL next to ../models.
std::string shared_text_beside_model(const std::string& model_path, const std::string& rel);
// That path, or an error saying it was derived from the model's folder, is missing, and that
// flag names another text.
StatusOr<std::string> find_shared_text(const std::string& model_path, const std::string& rel, const std::string& flag);
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
