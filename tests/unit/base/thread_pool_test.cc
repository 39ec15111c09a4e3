// SPDX-License-Identifier: MIT
#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace kvq {
namespace {

TEST(ThreadPool, RunsEveryTaskOnce) {
  for (int n_threads : {1, 2, 3, 5}) {
    ThreadPool pool(n_threads);
    for (int n_tasks : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(n_tasks);
      pool.parallel_for(n_tasks, [&](int64_t t, int w) {
        EXPECT_GE(w, 0);
        EXPECT_LT(w, n_threads);
        hits[t].fetch_add(1);
      });
      for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    }
  }
}

TEST(ThreadPool, ManyBackToBackCalls) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int i = 0; i < 20000; ++i) pool.parallel_for(3, [&](int64_t t, int) { sum += t; });
  EXPECT_EQ(sum.load(), 20000 * 3);
}

}  // namespace
}  // namespace kvq
