// Status propagation macros for Abseil 20220623 (Debian 12), which lacks ABSL_RETURN_IF_ERROR and
// ABSL_ASSIGN_OR_RETURN. Same meaning; delete these once Abseil >= 20260526 is the baseline.
//
//   DT_RETURN_IF_ERROR(file.Sync());
//   DT_ASSIGN_OR_RETURN(std::unique_ptr<File> f, env.Open(path));
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DT_STATUS_CONCAT_INNER_(a, b) a##b
#define DT_STATUS_CONCAT_(a, b) DT_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function when not OK.
#define DT_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status dt_status_ = (expr);      \
    if (!dt_status_.ok()) return dt_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, else moves the value into
// `lhs` (a declaration or an existing variable).
#define DT_ASSIGN_OR_RETURN(lhs, rexpr) \
  DT_ASSIGN_OR_RETURN_IMPL_(DT_STATUS_CONCAT_(dt_statusor_, __LINE__), lhs, rexpr)

#define DT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)    \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

// Crashes with a message when `cond` is false: for true invariants only, never for input from a
// user, the network, the disk or another rank.
#define DT_CHECK(cond)                                                        \
  do {                                                                        \
    if (!(cond)) ::dstrain::internal::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)

namespace dstrain::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond);
}  // namespace dstrain::internal
