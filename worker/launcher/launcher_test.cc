#include "worker/launcher/launcher.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::launcher {
namespace {

using ::dstrain::testing::IsOk;
using ::testing::HasSubstr;

std::string FakeRank() {
  return std::string(getenv("TEST_SRCDIR")) + "/" + getenv("TEST_WORKSPACE") +
         "/worker/launcher/fake_rank.sh";
}

// Runs Launch with stdout/stderr captured into files; returns (result, stdout, stderr).
struct Captured {
  absl::StatusOr<LaunchResult> result;
  std::string out, err;
};

Captured RunCaptured(LaunchOptions options) {
  const std::string dir = getenv("TEST_TMPDIR");
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved_out = dup(1), saved_err = dup(2);
  std::FILE* o = std::freopen((dir + "/out.txt").c_str(), "w", stdout);
  std::FILE* e = std::freopen((dir + "/err.txt").c_str(), "w", stderr);
  Captured c{Launch(options), "", ""};
  std::fflush(o);
  std::fflush(e);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  std::ifstream fo(dir + "/out.txt"), fe(dir + "/err.txt");
  std::stringstream so, se;
  so << fo.rdbuf();
  se << fe.rdbuf();
  c.out = so.str();
  c.err = se.str();
  return c;
}

TEST(Launcher, RelaysPrefixedOutputAndSucceeds) {
  LaunchOptions options;
  options.nproc = 3;
  options.trainer_argv = {FakeRank(), "ok"};
  Captured c = RunCaptured(options);
  ASSERT_THAT(c.result, IsOk());
  EXPECT_EQ(c.result->exit_code, 0) << c.result->reason;
  for (int r = 0; r < 3; ++r) {
    EXPECT_THAT(c.out, HasSubstr("[rank " + std::to_string(r) + "] hello from " +
                                 std::to_string(r) + "\n"));
    EXPECT_THAT(c.out, HasSubstr("[rank " + std::to_string(r) + "] no newline"));
    EXPECT_THAT(c.err, HasSubstr("[rank " + std::to_string(r) + "] warning from"));
  }
}

// A user's program learns its place from the environment, and its arguments are its own.
TEST(Launcher, RankEnvGivesEachRankItsPlaceInTheEnvironment) {
  setenv("DSTRAIN_LAUNCHER_TEST_KEPT", "yes", 1);
  setenv("RANK", "stale", 1);  // replaced, not duplicated
  LaunchOptions options;
  options.nproc = 2;
  options.trainer_argv = {FakeRank(), "env", "--lr", "3"};
  options.rank_env = true;
  Captured c = RunCaptured(options);
  ASSERT_THAT(c.result, IsOk());
  EXPECT_EQ(c.result->exit_code, 0) << c.result->reason;
  for (int r = 0; r < 2; ++r) {
    const std::string line =
        absl::StrCat("[rank ", r, "] args=--lr 3 RANK=", r, " WORLD_SIZE=2 LOCAL_RANK=", r,
                     " LOCAL_WORLD_SIZE=2 STORE=127.0.0.1:");
    EXPECT_THAT(c.out, HasSubstr(line)) << c.out;
  }
  EXPECT_THAT(c.out, HasSubstr("KEPT=yes"));
  EXPECT_THAT(c.out, ::testing::Not(HasSubstr("--rank")));
  unsetenv("RANK");
}

TEST(Launcher, AFailingRankStopsTheOthersAndIsNamed) {
  LaunchOptions options;
  options.nproc = 3;
  options.trainer_argv = {FakeRank(), "fail1"};
  options.stop_grace = absl::Seconds(2);
  const absl::Time start = absl::Now();
  Captured c = RunCaptured(options);
  ASSERT_THAT(c.result, IsOk());
  EXPECT_EQ(c.result->exit_code, 1);
  EXPECT_EQ(c.result->failed_rank, 1);
  EXPECT_EQ(c.result->reason, "rank 1 exited with status 3");
  EXPECT_THAT(c.out, HasSubstr("[rank 1] rank 1 gives up"));
  // The sleeping ranks were stopped, not waited out (they sleep 60 s).
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(Launcher, ARankKilledByASignalIsReported) {
  LaunchOptions options;
  options.nproc = 2;
  options.trainer_argv = {FakeRank(), "kill0"};
  Captured c = RunCaptured(options);
  ASSERT_THAT(c.result, IsOk());
  EXPECT_EQ(c.result->failed_rank, 0);
  EXPECT_THAT(c.result->reason, HasSubstr("killed by signal 9"));
}

TEST(Launcher, SigtermToTheLauncherStopsEveryRank) {
  LaunchOptions options;
  options.nproc = 2;
  options.trainer_argv = {FakeRank(), "sleep"};
  // Launch receives signals through a signalfd, which sees a process-directed signal only when
  // every thread blocks it: block it before the interrupter thread exists (it inherits the mask).
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  const pid_t self = getpid();
  std::thread interrupter([self] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    kill(self, SIGTERM);
  });
  const absl::Time start = absl::Now();
  Captured c = RunCaptured(options);
  interrupter.join();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_THAT(c.result, IsOk());
  EXPECT_EQ(c.result->exit_code, 128 + SIGTERM);
  EXPECT_THAT(c.result->reason, HasSubstr("Terminated"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(Launcher, BadArgumentsAreErrors) {
  LaunchOptions options;
  options.nproc = 0;
  options.trainer_argv = {FakeRank()};
  EXPECT_FALSE(Launch(options).ok());
  options.nproc = 1;
  options.trainer_argv = {};
  EXPECT_FALSE(Launch(options).ok());
}

}  // namespace
}  // namespace dstrain::launcher
