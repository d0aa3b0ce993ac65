// NCCL result codes as absl::Status, for host code around NCCL calls (after NCCL's NCCLCHECK, but
// returning a Status instead of exiting; docs/architecture.md, "Errors").
//
//   DT_NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
//
// Non-blocking communicators (ncclConfig_t::blocking = 0) answer most calls with ncclInProgress,
// which is not an error: the caller polls ncclCommGetAsyncError until the state leaves
// ncclInProgress. Such calls must not go through DT_NCCL_RETURN_IF_ERROR, which treats
// ncclInProgress like any other non-success result.
//
// Thread-safe; needs no GPU (ncclGetErrorString and ncclGetLastError are host-only).
#pragma once

#include <nccl.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dstrain::comm {

// The Status code for an NCCL result (the codes' meanings: docs/architecture.md, "Errors"):
//   ncclSuccess                          -> kOk
//   ncclRemoteError, ncclSystemError     -> kAborted (a peer died or the network failed: the job
//                                           restarts from its last checkpoint)
//   ncclInvalidArgument                  -> kInvalidArgument
//   ncclInvalidUsage                     -> kFailedPrecondition (wrong call order or state)
//   ncclInProgress                       -> kUnavailable (not finished yet; poll again)
//   ncclUnhandledCudaError, ncclInternalError, anything else -> kInternal
absl::StatusCode NcclResultCode(ncclResult_t result);

// The enumerator's name, e.g. "ncclRemoteError"; "ncclResult(<n>)" for values this build does not
// know.
std::string NcclResultName(ncclResult_t result);

// OK for ncclSuccess. Otherwise a Status with NcclResultCode(result) whose message is
// "<file>:<line>: <what>: <name> (<ncclGetErrorString>)", followed by NCCL's last error text
// (ncclGetLastError(comm); comm may be null) when NCCL has one.
absl::Status NcclToStatus(ncclResult_t result, absl::string_view what, const char* file, int line,
                          ncclComm_t comm = nullptr);

}  // namespace dstrain::comm

// Evaluates `expr` (an ncclResult_t); returns the corresponding absl::Status when not ncclSuccess.
#define DT_NCCL_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                                  \
    const ncclResult_t dt_nccl_result_ = (expr);                                        \
    if (dt_nccl_result_ != ncclSuccess) {                                               \
      return ::dstrain::comm::NcclToStatus(dt_nccl_result_, #expr, __FILE__, __LINE__); \
    }                                                                                   \
  } while (0)
