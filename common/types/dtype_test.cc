#include "common/types/dtype.h"

#include <string>

#include "gtest/gtest.h"

namespace dstrain {
namespace {

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kI32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kU16), 2u);
  EXPECT_EQ(std::string(DTypeName(DType::kBF16)), "bf16");
  EXPECT_EQ(std::string(DTypeName(DType::kF16)), "f16");
  EXPECT_TRUE(IsHalf(DType::kBF16));
  EXPECT_TRUE(IsHalf(DType::kF16));
  EXPECT_FALSE(IsHalf(DType::kF32));
  EXPECT_FALSE(IsHalf(DType::kU16));
}

TEST(DeviceTest, Equality) {
  EXPECT_EQ(Device::Cpu(), Device{});
  EXPECT_EQ(Device::Cuda(1), Device::Cuda(1));
  EXPECT_NE(Device::Cuda(0), Device::Cuda(1));
  EXPECT_NE(Device::Cpu(), Device::Cuda(0));
  EXPECT_TRUE(Device::Cuda(3).is_cuda());
  EXPECT_TRUE(Device::Cpu().is_cpu());
}

}  // namespace
}  // namespace dstrain
