// SPDX-License-Identifier: MIT
#include "kvq/status.h"

#include <gtest/gtest.h>

namespace kvq {
namespace {

StatusOr<int> half(int x) {
  if (x % 2) return invalid_argument("odd");
  return x / 2;
}
StatusOr<int> quarter(int x) {
  KVQ_ASSIGN_OR_RETURN(int h, half(x));
  KVQ_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

TEST(Status, PropagatesErrors) {
  EXPECT_EQ(quarter(8).value(), 2);
  EXPECT_FALSE(quarter(6).ok());
  EXPECT_EQ(quarter(6).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(quarter(6).status().with_context("x").to_string(), "invalid argument: x: odd");
}

}  // namespace
}  // namespace kvq
