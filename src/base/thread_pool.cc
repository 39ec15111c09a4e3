// SPDX-License-Identifier: MIT
#include "base/thread_pool.h"

#include "base/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVQ_CPU_RELAX() _mm_pause()
#else
#define KVQ_CPU_RELAX() std::this_thread::yield()
#endif

namespace kvq {

namespace {
// Spin this many times before sleeping on the generation counter: decode steps call the pool
// hundreds of times per token, so a short spin avoids a futex round trip per matmul.
constexpr int kSpinIterations = 20000;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
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
  // Spin briefly, then yield: on an oversubscribed machine a worker may be waiting for a core,
  // and spinning here would keep it off the one we hold.
  for (int i = 0; n_done_.load(std::memory_order_acquire) < n_workers; ++i) {
    if (i < kSpinIterations / 8) {
      KVQ_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::worker_loop(int worker) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 0; gen == seen && i < kSpinIterations; ++i) {
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
    n_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

}  // namespace kvq
