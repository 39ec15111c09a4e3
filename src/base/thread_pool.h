// SPDX-License-Identifier: MIT
// A small fork-join thread pool. The caller thread is worker 0 and takes part in the work.
// Tasks are fixed units handed out from an atomic counter; as long as a task's result does not
// depend on which worker ran it (per-worker scratch only), results are identical for any thread
// count. Not reentrant: one parallel_for at a time per pool.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace kvq {

// The CPUs this process may run on (sched_getaffinity: cgroups/taskset limits included), at
// least 1. The default thread count.
int available_cpus();

// Idle threads spin briefly, then park on a futex (std::atomic::wait), so a pool with more
// threads than CPUs, or sharing its machine, does not burn the CPUs others need.
class ThreadPool {
 public:
  // n_threads >= 1 counts the caller; n_threads - 1 worker threads are started.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Calls fn(task, worker) for every task in [0, n_tasks), worker in [0, n_threads()).
  template <typename Fn>
  void parallel_for(int64_t n_tasks, Fn&& fn) {
    if (n_tasks <= 0) return;
    if (n_threads_ == 1 || n_tasks == 1) {
      for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
      return;
    }
    using F = std::remove_reference_t<Fn>;
    run(n_tasks, const_cast<void*>(static_cast<const void*>(&fn)),
        [](void* ctx, int64_t task, int worker) { (*static_cast<F*>(ctx))(task, worker); });
  }

 private:
  using TaskFn = void (*)(void* ctx, int64_t task, int worker);
  void run(int64_t n_tasks, void* ctx, TaskFn fn);
  void worker_loop(int worker);
  void work(int worker);

  int n_threads_;
  int spin_;  // spin iterations before parking (0 when threads outnumber CPUs)
  std::vector<std::thread> threads_;
  // Job description, published by bumping generation_.
  void* ctx_ = nullptr;
  TaskFn fn_ = nullptr;
  int64_t n_tasks_ = 0;
  alignas(64) std::atomic<int64_t> next_task_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> n_done_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace kvq
