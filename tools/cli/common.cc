// SPDX-License-Identifier: MIT
#include "cli/common.h"

#include <sys/resource.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/printable.h"
#include "io/input_file.h"

namespace kvq::cli {

void add_common_flags(ArgParser& p, CommonArgs* a) {
  p.add_path("-m,--model", &a->model, "GGUF model file (required)");
  p.add_int("-t,--threads", &a->n_threads, 1, 512, "threads (default: the CPUs this process may use)");
  p.add_string("--kernels", &a->kernels, "simd (default) or ref: scalar reference kernels");
}

void add_batch_flag(ArgParser& p, int* batch) {
  p.add_int("-b,--batch-size", batch, 1, 1 << 24,
            "prompt tokens per forward step (default 512): bounds activation memory; the same results "
            "for every cache but KIVI's windows, which flush after each step");
}

StatusOr<KernelPath> parse_kernel_path(const std::string& s) {
  if (s == "simd") return KernelPath::kSimd;
  if (s == "ref") return KernelPath::kRef;
  return invalid_argument("--kernels must be 'simd' or 'ref', got '" + s + "'");
}

void note_thread_count(const std::string& command, const CommonArgs& a) {
  const int cpus = available_cpus();
  if (a.n_threads > cpus) {
    std::fprintf(stderr, "kvq %s: note: -t %d is more threads than the %d CPUs this process may use; "
                 "they will take turns\n", command.c_str(), a.n_threads, cpus);
  }
}

Status CommandFiles::add_input(const std::string& flag, const std::string& path) {
  if (path.empty()) return ok_status();
  KVQ_RETURN_IF_ERROR(check_input_file(path, flag));
  files_.push_back({flag, path});
  return ok_status();
}

StatusOr<OutputFile> CommandFiles::add_output(const std::string& flag, const std::string& path) {
  KVQ_ASSIGN_OR_RETURN(OutputFile out, OutputFile::prepare(path, flag, files_));
  files_.push_back({flag, path});
  return out;
}

void warn(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "kvq %s: warning: %s\n", command.c_str(), printable(message).c_str());
}

StatusOr<std::unique_ptr<LlamaModel>> load_model(const CommonArgs& a) {
  if (a.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  auto model = LlamaModel::load(a.model);
  if (model.ok()) return model;
  // A vocabulary-only GGUF (llama.cpp's ggml-vocab-*.gguf) has a tokenizer and no tensors: say
  // so, and whether its tokenizer loads, rather than name the first missing tensor.
  auto file = GgufFile::open(a.model);
  if (!file.ok() || !(*file)->tensors().empty() || !(*file)->find("tokenizer.ggml.model")) {
    return model;
  }
  auto tok = Tokenizer::from_gguf(**file);
  if (!tok.ok()) return tok.status().with_context(a.model + " (a vocabulary-only GGUF)");
  return invalid_argument(a.model + " is a vocabulary-only GGUF (its \"" +
                          std::string(tok->model()) + "\" tokenizer of " +
                          std::to_string(tok->n_vocab()) +
                          " tokens loads, but there are no weights to run); kvq synth "
                          "--vocab-from makes a random-weight model with that tokenizer");
}

double available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb;
  std::string unit;
  while (f >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  return 0.0;
}

double settled_rss_bytes() {
  malloc_trim(0);
  std::ifstream f("/proc/self/statm");
  double size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0.0;
  return resident * double(sysconf(_SC_PAGESIZE));
}

double peak_rss_bytes() {
  struct rusage ru {};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
  return double(ru.ru_maxrss) * 1024.0;  // Linux reports KiB
}

void warn_beyond_training(const std::string& command, const LlamaModel& model, int64_t n_tokens,
                          const std::string& what) {
  const int trained = model.config().n_ctx_train;
  if (n_tokens <= trained) return;
  warn(command, what + " exceeds the model's context of " + std::to_string(trained) +
                    " tokens: positions beyond it were never trained");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Status check_cache_fits(const std::vector<const KvCache*>& caches, int n_tokens, const std::string& what) {
  double need = 0;
  std::string names;
  for (const KvCache* c : caches) {
    need += double(c->bytes_for(n_tokens));
    names += (names.empty() ? "" : " + ") + c->name();
  }
  const double avail = available_memory();
  // 10% is left for the weights, activations and everything else of the process.
  if (avail > 0 && need > 0.9 * avail) {
    return out_of_memory(what + ": " + std::to_string(n_tokens) + " tokens of " + names + " KV cache" +
                         (caches.size() > 1 ? "s (held at once)" : "") + " need " + format_bytes(need) +
                         ", but only " + format_bytes(avail) +
                         " of memory is available (MemAvailable): use fewer tokens or a smaller cache type");
  }
  return ok_status();
}

StatusOr<std::string> read_text_file(const std::string& path, const std::string& what) {
  return read_input_file(path, what);
}

StatusOr<std::string> find_shared_text(const std::string& model_path, const std::string& rel, const std::string& flag) {
  const std::string text = shared_text_beside_model(model_path, rel);
  struct stat st {};
  if (::stat(text.c_str(), &st) != 0) {
    return not_found("no " + flag + " given, and the default text " + text +
                     ", derived from the model's folder (../text/" + rel + " next to the model), does not exist: pass " +
                     flag + " FILE");
  }
  return text;
}

std::string shared_text_beside_model(const std::string& model_path, const std::string& rel) {
  return (std::filesystem::path(model_path).parent_path() / "../text" / rel).lexically_normal().string();
}

StatusOr<uint64_t> parse_bytes(const std::string& text, const std::string& what) {
  const auto bad = [&] {
    return invalid_argument(what + " expects a size such as 20GiB, 512MiB or 4e9 bytes, not '" + printable(text) + "'");
  };
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str()) return bad();
  std::string unit(end);
  for (auto& ch : unit) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1},           {"b", 1},          {"k", 1024.0},     {"kib", 1024.0},   {"kb", 1e3},
      {"m", 1048576.0},  {"mib", 1048576.0}, {"mb", 1e6},      {"g", 1073741824.0}, {"gib", 1073741824.0},
      {"gb", 1e9},       {"t", 1099511627776.0}, {"tib", 1099511627776.0}, {"tb", 1e12}};
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    const double bytes = v * scale;
    if (!(bytes >= 1) || bytes > 1.8e19) return bad();
    return uint64_t(bytes);
  }
  return bad();
}

std::string format_bytes(double b) {
  char buf[64];
  if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

void show_progress(const char* what, int done, int total, double elapsed) {
  const double eta = done > 0 ? elapsed * (total - done) / done : 0.0;
  if (isatty(STDERR_FILENO)) {
    const int width = 30, filled = total > 0 ? width * done / total : width;
    std::fprintf(stderr, "\r[%.*s%*s] %d/%d %s, %.1fs elapsed, ETA %.1fs ", filled,
                 "##############################", width - filled, "", done, total, what, elapsed, eta);
    if (done == total) std::fputc('\n', stderr);
  } else if (total <= 10 || done == total || (done * 10 / total) != ((done - 1) * 10 / total)) {
    std::fprintf(stderr, "progress: %d/%d %s, %.1fs elapsed, ETA %.1fs\n", done, total, what, elapsed, eta);
  }
  std::fflush(stderr);
}

int report(const std::string& command, const Status& s) {
  if (s.ok()) return 0;
  // Escaped as a whole: a byte from a file must not reach the terminal raw or cut the line.
  std::fprintf(stderr, "kvq %s: error: %s\n", command.c_str(), printable(s.to_string()).c_str());
  return 1;
}

}  // namespace kvq::cli
