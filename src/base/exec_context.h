// SPDX-License-Identifier: MIT
// Explicit execution context passed down to every op: the thread pool, the kernel path and
// per-worker scratch. No globals.
#pragma once

#include <memory>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/check.h"
#include "base/kernel_path.h"
#include "base/thread_pool.h"

namespace kvq {


class ExecContext {
 public:
  explicit ExecContext(int n_threads, KernelPath path = KernelPath::kSimd)
      : pool_(std::make_unique<ThreadPool>(n_threads)), path_(path), scratch_(pool_->n_threads()) {}

  ThreadPool& pool() { return *pool_; }
  int n_threads() const { return pool_->n_threads(); }
  KernelPath path() const { return path_; }

  // A float buffer of at least n values owned by `worker`; only that worker may call this
  // with its index while a parallel_for runs. Contents are unspecified.
  float* scratch(int worker, size_t n) {
    auto& b = scratch_[size_t(worker)];
    if (b.size() < n) KVQ_CHECK(b.resize(n), "scratch allocation of %zu floats failed", n);
    return b.data();
  }
  // A float buffer of at least n values that the calling thread fills before a parallel_for
  // whose tasks only read it (activations prepared once for every task); never called inside
  // a parallel_for. Contents are unspecified.
  float* shared_scratch(size_t n) {
    if (shared_.size() < n) KVQ_CHECK(shared_.resize(n), "scratch allocation of %zu floats failed", n);
    return shared_.data();
  }

 private:
  std::unique_ptr<ThreadPool> pool_;
  KernelPath path_;
  std::vector<AlignedBuffer<float>> scratch_;
  AlignedBuffer<float> shared_;
};

}  // namespace kvq
