// SPDX-License-Identifier: MIT
#include "engine/serve/sequence.h"

namespace kvq {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
    case FinishReason::kNone: break;
  }
  return "";
}

void SeqChannel::push_text(const std::string& text) {
  if (text.empty()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    pieces_.push_back(text);
  }
  cv_.notify_all();
}

void SeqChannel::count_token() {
  std::lock_guard<std::mutex> l(mu_);
  t_last_ = Clock::now();
  if (n_generated_++ == 0) t_first_ = t_last_;
}

void SeqChannel::finish(FinishReason r, const Status& error, int n_prompt, int n_generated) {
  {
    std::lock_guard<std::mutex> l(mu_);
    done_ = true;
    finish_ = r;
    error_ = error;
    n_prompt_ = n_prompt;
    n_generated_ = n_generated;
  }
  cv_.notify_all();
}

bool SeqChannel::wait(SeqUpdate* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, timeout, [&] { return !pieces_.empty() || (done_ && !delivered_done_); });
  *out = SeqUpdate{};
  if (!pieces_.empty()) {
    out->text = std::move(pieces_.front());
    pieces_.pop_front();
  }
  if (pieces_.empty() && done_ && !delivered_done_) {
    delivered_done_ = true;
    out->done = true;
    out->finish = finish_;
    out->error = error_;
    out->n_prompt = n_prompt_;
    out->n_generated = n_generated_;
  }
  return !out->text.empty() || out->done;
}

}  // namespace kvq
