// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes as a calibration file for stories260K (the GGUF container,
// then every setting and tensor check of CalibrationFile::from_gguf), then the parameters for
// several cache specs and describe(). Invariant: a Status or a file whose every value is finite
// and whose key thresholds are ordered; never a crash, a leak or an out-of-bounds read.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "engine/calibration_file.h"
#include "io/gguf.h"

namespace {
// Loaded once per process (a fuzz harness, not library code).
const kvq::LlamaModel& model() {
  static const std::unique_ptr<kvq::LlamaModel> m = [] {
    auto r = kvq::LlamaModel::load(std::string(KVQ_SHARED_DIR) + "/models/stories260K.gguf");
    if (!r.ok()) std::abort();
    return std::move(*r);
  }();
  return *m;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto g = kvq::GgufFile::parse(kvq::MappedFile::from_memory({data, size}));
  if (!g.ok()) return 0;
  auto c = kvq::CalibrationFile::from_gguf(**g, "fuzz", model());
  if (!c.ok()) return 0;
  if (!std::isfinite(c->meta().outliers) || !std::isfinite(c->meta().loss)) std::abort();
  (void)c->describe();
  for (const char* spec : {"kvquant-2", "kvquant-3:qnorm=1", "kvquant-4:outliers=0", "kvquant-3:codebook=nf"}) {
    auto s = kvq::parse_cache_spec(spec);
    if (s.ok()) (void)c->for_spec(*s);
  }
  return 0;
}
