// The device probe and the CUDA error adapter. Runs everywhere: on a machine without a GPU or
// driver the probe must say so, not crash.
#include "kernels/cuda_common/device.h"

#include <string>

#include "gtest/gtest.h"
#include "kernels/cuda_common/cuda_status.h"

namespace dstrain::kernels::gpu {
namespace {

TEST(DeviceTest, ProbeAnswersWithOrWithoutAGpu) {
  const absl::Status status = CudaDeviceStatus();
  EXPECT_EQ(HasCudaDevice(), status.ok());
  if (!status.ok()) {
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(std::string(status.message()).rfind("no CUDA device", 0), 0u) << status;
  }
}

absl::Status ReturnsThrough(cudaError_t e) {
  DT_CUDA_RETURN_IF_ERROR(e);
  return absl::OkStatus();
}

TEST(DeviceTest, CudaErrorsMapToStatusCodes) {
  EXPECT_TRUE(ReturnsThrough(cudaSuccess).ok());
  const absl::Status oom = ReturnsThrough(cudaErrorMemoryAllocation);
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(oom.message()).find("cudaErrorMemoryAllocation"), std::string::npos);
  EXPECT_NE(std::string(oom.message()).find("device_test.cc"), std::string::npos);
  EXPECT_EQ(ReturnsThrough(cudaErrorNoDevice).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReturnsThrough(cudaErrorLaunchFailure).code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
