// SPDX-License-Identifier: MIT
// Decode-attention microbenchmark (`kvq bench attention`, issue 8 §6): the time one query token
// takes to attend a whole one-layer cache of a real model's attention shape, per cache type,
// next to the bytes that layer holds and the machine's read bandwidth measured in the same run.
// The cache is filled with synthetic activations (synthetic_kv.h), so no model is needed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/kernel_path.h"
#include "kv/cache_spec.h"
#include "kvq/status.h"

namespace kvq {

struct AttentionShape {
  std::string name;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
};

// "llama7b" (32 query and 32 KV heads of 128), "llama3-8b" (32 query, 8 KV heads of 128) or
// "testbed" (4 query, 2 KV heads of 64: the head_dim-64 test model's layer).
StatusOr<AttentionShape> attention_shape(std::string_view name);

struct AttentionBenchOptions {
  std::vector<AttentionShape> shapes;
  std::vector<int> depths;          // tokens in the cache when the query attends
  std::vector<CacheSpec> caches;    // f16 is measured too when missing (the speedup base)
  int n_threads = 1;
  KernelPath path = KernelPath::kSimd;
  int repetitions = 3;              // rounds over every cache; medians are reported
  double min_rep_seconds = 0.1;     // each repetition times enough decode calls to last this
  int pool_tokens = 2048;           // synthetic tokens generated once, appended cyclically
  int calib_windows = 2;            // kvquant calibration sample: windows x window tokens
  int calib_window = 512;
  size_t bandwidth_bytes = size_t(1) << 30;  // buffer of the read-bandwidth measurement
  int bandwidth_passes = 5;
  double available_memory = 0;      // bytes; 0 = unknown (no memory check)
  uint64_t seed = 1;
  // Progress of long phases (fill, calibration) and one-line notes; both may be empty.
  std::function<void(const std::string& what, int64_t done, int64_t total, double elapsed_s)> progress;
  std::function<void(const std::string& line)> log;
};

struct AttentionBenchRow {
  std::string shape;
  int depth = 0;
  std::string cache;
  double us_per_token = 0;   // median over repetitions of one decode call's time
  size_t bytes_read = 0;     // all K and V bytes of the layer: bytes_used() / layers
  double gbps = 0;           // bytes_read / time
  double read_gbps = 0;      // the machine's read bandwidth (same run)
  double bandwidth_fraction = 0;
  double speedup_vs_f16 = 0; // median over repetitions of f16's time / this time in the same
                             // repetition (same shape and depth; caches alternate within one)
  double fill_seconds = 0;   // appending (quantizing) the tokens added for this depth
};

struct AttentionBenchResult {
  std::vector<AttentionBenchRow> rows;
  double read_gbps = 0;
  std::string bandwidth_method;  // how read_gbps was measured
  std::string calibration_note;  // where kvquant parameters came from
  std::string simd_target;
};

// Runs every shape x cache x depth: a shape's caches are held at once, filled depth by depth,
// and timed in alternating repetitions. Errors: kInvalidArgument for bad options,
// kOutOfMemory (before anything is filled) when a shape's caches at the largest depth would
// not fit together.
StatusOr<AttentionBenchResult> run_attention_bench(const AttentionBenchOptions& opts);

}  // namespace kvq
