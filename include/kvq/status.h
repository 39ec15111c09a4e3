// SPDX-License-Identifier: MIT
// Status / StatusOr: recoverable errors returned across module boundaries (no exceptions).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace kvq {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad flag, bad spec string, bad shape
  kNotFound,         // missing file, missing tensor or key
  kUnimplemented,    // a valid but unsupported combination (named in the message)
  kOutOfMemory,      // an allocation the machine cannot satisfy
  kDataLoss,         // corrupt or truncated file
  kInternal,
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: <message>"
  std::string to_string() const;
  // Prepends context: "while loading X: <message>".
  Status with_context(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status ok_status() { return Status(); }
Status invalid_argument(std::string message);
Status not_found(std::string message);
Status unimplemented(std::string message);
Status out_of_memory(std::string message);
Status data_loss(std::string message);
Status internal_error(std::string message);

// Either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status) : v_(status) {  // NOLINT(google-explicit-constructor)
    if (status.ok()) {
      std::fprintf(stderr, "kvq: StatusOr constructed from an ok Status\n");
      std::abort();
    }
  }
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return get(); }
  const T& value() const& { return const_cast<StatusOr*>(this)->get(); }
  T&& value() && { return std::move(get()); }
  T& operator*() & { return get(); }
  const T& operator*() const& { return const_cast<StatusOr*>(this)->get(); }
  T* operator->() { return &get(); }
  const T* operator->() const { return &const_cast<StatusOr*>(this)->get(); }

 private:
  T& get() {
    if (!ok()) {
      std::fprintf(stderr, "kvq: value() on an error StatusOr: %s\n",
                   std::get<Status>(v_).to_string().c_str());
      std::abort();
    }
    return std::get<T>(v_);
  }
  std::variant<Status, T> v_;
};

}  // namespace kvq

#define KVQ_STATUS_CONCAT_INNER_(a, b) a##b
#define KVQ_STATUS_CONCAT_(a, b) KVQ_STATUS_CONCAT_INNER_(a, b)

#define KVQ_RETURN_IF_ERROR(expr)               \
  do {                                          \
    ::kvq::Status kvq_status_tmp_ = (expr);     \
    if (!kvq_status_tmp_.ok()) return kvq_status_tmp_; \
  } while (0)

#define KVQ_ASSIGN_OR_RETURN(lhs, expr) \
  KVQ_ASSIGN_OR_RETURN_IMPL_(KVQ_STATUS_CONCAT_(kvq_statusor_, __LINE__), lhs, expr)
#define KVQ_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
