// Run with DSTRAIN_NO_AMX=1 in the environment (BUILD): AMX is neither reported nor usable, and
// nothing asked Linux for the tile state, whatever the machine has.
#include <cstdlib>

#include "gtest/gtest.h"
#include "kernels/common/cpu_features.h"

namespace dstrain::kernels {
namespace {

TEST(NoAmxEnvironmentTest, RulesAmxOut) {
  ASSERT_STREQ(std::getenv("DSTRAIN_NO_AMX"), "1");
  EXPECT_FALSE(GetCpuFeatures().amx_bf16);
  EXPECT_FALSE(AmxUsable());
  ScopedAmxAllowed allowed(true);  // allowing it in code does not override the environment
  EXPECT_FALSE(AmxUsable());
}

}  // namespace
}  // namespace dstrain::kernels
