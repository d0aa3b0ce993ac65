#include "worker/agent/trainer_process.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::agent {
namespace {

using ::dstrain::testing::IsOk;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Reads output and waits for the exit, as the agent's loop does.
struct Outcome {
  std::vector<std::string> lines;
  ExitInfo exit;
};

Outcome Supervise(TrainerProcess& p, absl::Duration timeout = absl::Seconds(20)) {
  Outcome out;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    p.ReadOutput(&out.lines);
    if (auto e = p.PollExit(); e.has_value()) {
      p.DrainOutput(&out.lines, 200);
      out.exit = *e;
      return out;
    }
    if (absl::Now() > deadline) {
      ADD_FAILURE() << "the process did not exit";
      return out;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

// Whether `pid` runs (exists and is not a zombie).
bool Running(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  const char state = stat[paren + 2];
  return state != 'Z' && state != 'X';
}

bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

std::unique_ptr<TrainerProcess> Shell(const std::string& script, const std::string& cwd = "") {
  auto p = TrainerProcess::Spawn({{"/bin/sh", "-c", script}, cwd});
  EXPECT_THAT(p, IsOk());
  return p.ok() ? std::move(*p) : nullptr;
}

TEST(TrainerProcess, MergesStdoutAndStderrLineByLine) {
  auto p = Shell("echo one; echo two >&2; printf 'three\\r\\n'; printf 'no newline'");
  Outcome o = Supervise(*p);
  EXPECT_THAT(o.lines, ElementsAre("one", "two", "three", "no newline"));
  EXPECT_TRUE(o.exit.success());
  EXPECT_EQ(o.exit.Describe(), "exited with status 0");
}

TEST(TrainerProcess, ReportsExitCodeAndSignal) {
  auto p = Shell("exit 3");
  Outcome o = Supervise(*p);
  EXPECT_EQ(o.exit.exit_code, 3);
  EXPECT_EQ(o.exit.signal, 0);
  EXPECT_FALSE(o.exit.success());

  auto k = Shell("kill -9 $$");
  o = Supervise(*k);
  EXPECT_EQ(o.exit.signal, 9);
  EXPECT_EQ(o.exit.Describe(), "killed by signal 9 (Killed)");
}

TEST(TrainerProcess, RunsInItsDirectoryWithStdinFromDevNull) {
  const std::string dir = getenv("TEST_TMPDIR");
  auto p = Shell("pwd; cat; echo read-done", dir);
  Outcome o = Supervise(*p);
  ASSERT_EQ(o.lines.size(), 2u);
  EXPECT_EQ(o.lines[0], dir);
  EXPECT_EQ(o.lines[1], "read-done");
}

TEST(TrainerProcess, EnvironmentIsTheAgentsWithTheSpecsVariables) {
  setenv("DSTRAIN_TEST_INHERITED", "kept", 1);
  setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3", 1);
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c",
               "echo \"inherited=$DSTRAIN_TEST_INHERITED\"; "
               "echo \"cvd=${CUDA_VISIBLE_DEVICES-unset}\"; echo \"new=$DSTRAIN_TEST_NEW\"; "
               "env | grep -c '^CUDA_VISIBLE_DEVICES='"};
  spec.env = {{"CUDA_VISIBLE_DEVICES", "2"}, {"DSTRAIN_TEST_NEW", "added"}};
  auto p = TrainerProcess::Spawn(spec);
  ASSERT_THAT(p, IsOk());
  EXPECT_THAT(Supervise(**p).lines, ElementsAre("inherited=kept", "cvd=2", "new=added", "1"));
  // An empty value is set, not removed: CUDA then sees no device at all.
  spec.env = {{"CUDA_VISIBLE_DEVICES", ""}};
  p = TrainerProcess::Spawn(spec);
  ASSERT_THAT(p, IsOk());
  EXPECT_THAT(Supervise(**p).lines, ElementsAre("inherited=kept", "cvd=", "new=", "1"));
  unsetenv("DSTRAIN_TEST_INHERITED");
  unsetenv("CUDA_VISIBLE_DEVICES");
}

TEST(TrainerProcess, MissingExecutableExits127WithAMessage) {
  auto p = TrainerProcess::Spawn({{"/nonexistent/dstrain", "train"}, ""});
  ASSERT_THAT(p, IsOk());
  Outcome o = Supervise(**p);
  EXPECT_EQ(o.exit.exit_code, 127);
  ASSERT_EQ(o.lines.size(), 1u);
  EXPECT_THAT(o.lines[0], HasSubstr("cannot execute /nonexistent/dstrain"));
}

TEST(TrainerProcess, SignalGroupStopsChildrenToo) {
  const std::string marker = std::string(getenv("TEST_TMPDIR")) + "/grandchild.pid";
  // The grandchild would hold the pipe open (and keep running) if it survived.
  auto p = Shell("sleep 30 & echo $! > " + marker + "; echo started; wait");
  std::vector<std::string> lines;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (lines.empty() && absl::Now() < deadline) {
    p->ReadOutput(&lines);
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_THAT(lines, ElementsAre("started"));
  p->SignalGroup(SIGTERM);
  Outcome o = Supervise(*p);
  EXPECT_EQ(o.exit.signal, SIGTERM);
  std::ifstream in(marker);
  pid_t grandchild = 0;
  in >> grandchild;
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(Eventually([&] { return !Running(grandchild); }));
  EXPECT_FALSE(p->output_open());
}

TEST(TrainerProcess, ExitKillsWhatIsLeftOfTheGroup) {
  // The leader exits at once; its background child is killed with it and the output closes.
  const std::string marker = std::string(getenv("TEST_TMPDIR")) + "/left.pid";
  auto p = Shell("sleep 30 & echo $! > " + marker + "; echo leaving");
  const absl::Time start = absl::Now();
  Outcome o = Supervise(*p);
  EXPECT_TRUE(o.exit.success());
  EXPECT_THAT(o.lines, ElementsAre("leaving"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_FALSE(p->output_open());
  std::ifstream in(marker);
  pid_t left = 0;
  in >> left;
  ASSERT_GT(left, 0);
  EXPECT_TRUE(Eventually([&] { return !Running(left); }));
}

TEST(TrainerProcess, CutsOverlongLinesAndRepairsUtf8) {
  auto p =
      Shell("head -c 40000 /dev/zero | tr '\\0' x; echo; printf 'ok \\303\\251 bad \\377 end\\n'");
  Outcome o = Supervise(*p);
  ASSERT_EQ(o.lines.size(), 4u);
  EXPECT_EQ(o.lines[0].size(), kMaxLineBytes);
  EXPECT_EQ(o.lines[1].size(), kMaxLineBytes);
  EXPECT_EQ(o.lines[2].size(), 40000 - 2 * kMaxLineBytes);
  EXPECT_EQ(o.lines[3], "ok \xC3\xA9 bad \xEF\xBF\xBD end");
}

TEST(TrainerProcess, ToValidUtf8) {
  EXPECT_EQ(ToValidUtf8("plain"), "plain");
  EXPECT_EQ(ToValidUtf8("\xE2\x82\xAC"), "\xE2\x82\xAC");                          // euro sign
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");                  // emoji
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(ToValidUtf8("a\xE2\x82"), "a\xEF\xBF\xBD\xEF\xBF\xBD");                // truncated
}

TEST(TrainerProcess, DestructorKillsARunningTrainer) {
  pid_t pid;
  {
    auto p = Shell("sleep 30");
    pid = p->pid();
  }
  // Killed and reaped.
  EXPECT_FALSE(Running(pid));
}

}  // namespace
}  // namespace dstrain::agent
