// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes through the --kl-base (log-prob file) reader. Invariant: a
// Status, or rows that are all finite, targets inside the vocabulary and consistent run
// settings; never a crash, a leak or an out-of-bounds read.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "engine/logprob_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = kvq::parse_logprob_file({data, size}, "fuzz");
  if (!f.ok()) return 0;
  for (float x : f->rows) {
    if (!std::isfinite(x)) std::abort();
  }
  for (int32_t t : f->targets) {
    if (t < 0 || uint32_t(t) >= f->n_vocab) std::abort();
  }
  if (f->rows.size() != f->targets.size() * f->n_vocab) std::abort();
  if (!kvq::check_same_run(*f, *f, "fuzz").ok()) std::abort();
  return 0;
}
