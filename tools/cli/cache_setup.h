// SPDX-License-Identifier: MIT
// --cache / --cache-k / --cache-v / --calib handling shared by run, ppl, info and bench:
// parses the specs and, when a kvquant cache needs it, calibrates (--calib auto).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/common.h"
#include "engine/calibrate.h"
#include "engine/calibration_file.h"
#include "engine/runtime.h"
#include "model/llama.h"

namespace kvq::cli {

struct CacheArgs {
  std::string cache = "f16";  // one spec, or a comma-separated list (ppl reports)
  std::string cache_k, cache_v;
  std::string calib;           // "auto" or a file
  std::string calib_text;      // default: ../text/tinystories/train_head.txt next to the model
  int calib_windows = 8;
  int calib_window = 0;        // default: min(512, context of the model)
  std::string calib_weighting = "none";  // auto: none, fisher or fisher-s2
};

// cache_help replaces --cache's help text when given.
void add_cache_flags(ArgParser& p, CacheArgs* a, bool allow_list, const std::string& cache_help = "");
// The specs named on the command line (several only for a --cache list).
StatusOr<std::vector<CacheSpec>> parse_cache_args(const CacheArgs& a);
// --calib given for caches none of which use calibration is refused (a calibration file would
// be ignored, and a corrupt one go unnoticed), as is --calib-text without --calib auto. Adds
// the calibration inputs (--calib FILE, the --calib auto text) to files.
Status check_calibration_args(const CacheArgs& a, const std::vector<CacheSpec>& specs,
                              const std::string& model_path, CommandFiles* files);

// Calibration shared by every spec of a run; created on first need.
class CalibrationContext {
 public:
  // batch: tokens per forward step of the --calib auto capture (-b).
  CalibrationContext(const CacheArgs& args, const std::string& model_path, std::string command, int batch)
      : args_(args), model_path_(model_path), command_(std::move(command)), batch_(batch) {}
  // Parameters for spec (empty for specs that need none). Logs what it calibrated on.
  StatusOr<KvActivations::ForSpec> for_spec(ExecContext& ctx, const LlamaModel& model, const CacheSpec& spec);
  // "auto: FILE, N x L tokens, seed S", or "" when no calibration was needed.
  const std::string& description() const { return description_; }

 private:
  CacheArgs args_;
  std::string model_path_, command_;
  int batch_;
  std::unique_ptr<KvActivations> acts_;
  std::unique_ptr<CalibrationFile> file_;
  CodebookWeighting weighting_ = CodebookWeighting::kNone;
  std::string description_;
};

}  // namespace kvq::cli
