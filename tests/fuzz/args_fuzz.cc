// SPDX-License-Identifier: MIT
// libFuzzer target: NUL-separated argument lists through the kvq flag parser and the cache
// spec parser.
#include <cstdint>
#include <string>
#include <vector>

#include "cli/args.h"
#include "kv/cache_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.emplace_back();
    } else {
      args.back() += char(data[i]);
    }
  }
  std::string s, cache;
  int n = 0;
  float f = 0;
  bool b = false;
  uint64_t u = 0;
  kvq::ArgParser p("fuzz");
  p.add_string("-m,--model", &s, "");
  p.add_string("--cache", &cache, "");
  p.add_int("-c,--ctx-size", &n, 0, 1 << 24, "");
  p.add_float("--temp", &f, 0.0, 100.0, "");
  p.add_flag("--flag", &b, "");
  p.add_u64("--seed", &u, "");
  if (p.parse(args).ok()) (void)p.usage();
  (void)kvq::parse_cache_spec(cache);
  for (const auto& a : args) (void)kvq::parse_cache_spec(a);
  return 0;
}
