// Local stand-ins for Abseil's status matchers (absent from Abseil 20220623).
//   EXPECT_THAT(s, IsOk());
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zero_optimization")));
//   ASSERT_OK_AND_ASSIGN(auto x, FunctionReturningStatusOr());  // fails the test on an error
#pragma once

#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace dstrain::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

}  // namespace dstrain::testing

#define DT_MATCHERS_CONCAT_INNER(a, b) a##b
#define DT_MATCHERS_CONCAT(a, b) DT_MATCHERS_CONCAT_INNER(a, b)
// Evaluates `expr` (an absl::StatusOr), fails the test with its status unless OK, and declares
// or assigns `lhs` from its value.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(DT_MATCHERS_CONCAT(dt_status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(var, lhs, expr)        \
  auto var = (expr);                                     \
  ASSERT_TRUE(var.ok()) << "status is " << var.status(); \
  lhs = std::move(var).value()
