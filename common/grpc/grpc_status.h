// absl::Status <-> grpc::Status at the gRPC boundary: the canonical codes are the same numbers in
// both, so a code crosses unchanged and the message travels as the gRPC status message.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dstrain {

inline absl::StatusCode FromGrpcCode(grpc::StatusCode code) {
  return static_cast<absl::StatusCode>(code);
}

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// `what` names the call for the reader of the message ("StoreService.Get 127.0.0.1:4000").
inline absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(FromGrpcCode(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

}  // namespace dstrain

// Returns a grpc::Status expression from the enclosing handler when it is not OK.
#define DT_GRPC_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    const ::grpc::Status dt_grpc_status_ = (expr);     \
    if (!dt_grpc_status_.ok()) return dt_grpc_status_; \
  } while (0)
