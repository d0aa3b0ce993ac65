#include "worker/comm/nccl/nccl_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace dstrain::comm {

absl::StatusCode NcclResultCode(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return absl::StatusCode::kOk;
    case ncclRemoteError:
    case ncclSystemError:
      return absl::StatusCode::kAborted;
    case ncclInvalidArgument:
      return absl::StatusCode::kInvalidArgument;
    case ncclInvalidUsage:
      return absl::StatusCode::kFailedPrecondition;
    case ncclInProgress:
      return absl::StatusCode::kUnavailable;
    case ncclUnhandledCudaError:
    case ncclInternalError:
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string NcclResultName(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "ncclSuccess";
    case ncclUnhandledCudaError:
      return "ncclUnhandledCudaError";
    case ncclSystemError:
      return "ncclSystemError";
    case ncclInternalError:
      return "ncclInternalError";
    case ncclInvalidArgument:
      return "ncclInvalidArgument";
    case ncclInvalidUsage:
      return "ncclInvalidUsage";
    case ncclRemoteError:
      return "ncclRemoteError";
    case ncclInProgress:
      return "ncclInProgress";
    default:
      return absl::StrCat("ncclResult(", static_cast<int>(result), ")");
  }
}

absl::Status NcclToStatus(ncclResult_t result, absl::string_view what, const char* file, int line,
                          ncclComm_t comm) {
  if (result == ncclSuccess) return absl::OkStatus();
  std::string message = absl::StrCat(file, ":", line, ": ", what, ": ", NcclResultName(result),
                                     " (", ncclGetErrorString(result), ")");
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&message, ": ", last);
  return absl::Status(NcclResultCode(result), message);
}

}  // namespace dstrain::comm
