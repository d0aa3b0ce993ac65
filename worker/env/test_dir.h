// For tests of code that writes through an Env: one fresh directory per test.
#pragma once

#include <cstdlib>
#include <string>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/env/env.h"

namespace dstrain::env {

// <TEST_TMPDIR>/<name of the running test> (/tmp/... outside Bazel), emptied and created through
// `env`. A failure to make it fails the test.
inline std::string FreshTestDir(Env* env) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = JoinPath(tmp != nullptr ? tmp : "/tmp",
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  if (env->FileExists(dir)) {
    EXPECT_THAT(env->RemoveDirRecursively(dir), ::dstrain::testing::IsOk());
  }
  EXPECT_THAT(env->CreateDirs(dir), ::dstrain::testing::IsOk());
  return dir;
}

}  // namespace dstrain::env
