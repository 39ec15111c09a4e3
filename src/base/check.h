// SPDX-License-Identifier: MIT
// Invariant checks: always-on KVQ_CHECK, debug-only KVQ_DCHECK. For programmer errors only;
// anything a user or a file can cause is a returned Status.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace kvq::detail {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
[[noreturn]] void check_failed(const char* file, int line, const char* cond);
}  // namespace kvq::detail

#define KVQ_CHECK(cond, ...)                                                      \
  do {                                                                            \
    if (__builtin_expect(!(cond), 0)) {                                           \
      ::kvq::detail::check_failed(__FILE__, __LINE__, #cond __VA_OPT__(, ) __VA_ARGS__); \
    }                                                                             \
  } while (0)

#ifdef NDEBUG
#define KVQ_DCHECK(cond, ...) \
  do {                        \
  } while (0)
#else
#define KVQ_DCHECK(cond, ...) KVQ_CHECK(cond __VA_OPT__(, ) __VA_ARGS__)
#endif

#define KVQ_UNREACHABLE() ::kvq::detail::check_failed(__FILE__, __LINE__, "unreachable")
