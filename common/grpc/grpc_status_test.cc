#include "common/grpc/grpc_status.h"

#include <gtest/gtest.h>

namespace dstrain {
namespace {

TEST(GrpcStatusTest, CodesAndMessagesCrossBothWays) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "x").ok());
  for (int code = 1; code <= 16; ++code) {
    const absl::Status in(static_cast<absl::StatusCode>(code), "bad job.world_size");
    const grpc::Status wire = ToGrpcStatus(in);
    EXPECT_EQ(static_cast<int>(wire.error_code()), code);
    EXPECT_EQ(FromGrpcCode(wire.error_code()), in.code());
    EXPECT_EQ(wire.error_message(), "bad job.world_size");
    const absl::Status back = FromGrpcStatus(wire, "JobService.SubmitJob");
    EXPECT_EQ(back.code(), in.code());
    EXPECT_EQ(back.message(), "JobService.SubmitJob: bad job.world_size");
  }
}

}  // namespace
}  // namespace dstrain
