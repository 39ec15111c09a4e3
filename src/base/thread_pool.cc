// SPDX-License-Identifier: MIT
#include "base/thread_pool.h"

#include "base/check.h"

#include <sched.h>

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVQ_CPU_RELAX() _mm_pause()
#else
#define KVQ_CPU_RELAX() std::this_thread::yield()
#endif

namespace kvq {

namespace {
// Spin this many times (tens of microseconds) before parking on a futex: decode steps call the
// pool hundreds of times per token, so a short spin avoids a futex round trip per matmul. A
// longer spin starves the other threads of an oversubscribed machine (issue 12, item 11).
constexpr int kSpinIterations = 2000;
}  // namespace

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(n_threads < 1 ? 1 : n_threads),
      // With more threads than CPUs a spinning thread holds the CPU a working one needs.
      spin_(n_threads_ <= available_cpus() ? kSpinIterations : 0) {
  threads_.reserve(n_threads_ - 1);
  for (int w = 1; w < n_threads_; ++w) threads_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::work(int worker) {
  for (;;) {
    const int64_t t = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (t >= n_tasks_) break;
    fn_(ctx_, t, worker);
  }
}

void ThreadPool::run(int64_t n_tasks, void* ctx, TaskFn fn) {
  ctx_ = ctx;
  fn_ = fn;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  n_done_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  work(0);
  const int n_workers = n_threads_ - 1;
  // Spin briefly, then park until the last worker wakes us.
  int done = n_done_.load(std::memory_order_acquire);
  for (int i = 0; done < n_workers && i < spin_; ++i) {
    KVQ_CPU_RELAX();
    done = n_done_.load(std::memory_order_acquire);
  }
  while (done < n_workers) {
    n_done_.wait(done, std::memory_order_acquire);
    done = n_done_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop(int worker) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 0; gen == seen && i < spin_; ++i) {
      KVQ_CPU_RELAX();
      gen = generation_.load(std::memory_order_acquire);
    }
    while (gen == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    work(worker);
    if (n_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_threads_ - 1) n_done_.notify_one();
  }
}

}  // namespace kvq
