// ShmCommunicator with real processes: ranks are forked children that meet through a TcpStore
// served by the test process. Training-like all-reduces must come out exact; a rank killed with
// SIGKILL in the middle of a collective must make the survivors fail well within the timeout with
// an error naming the operation, the group and the dead rank; and /dev/shm must hold nothing of
// the group afterwards (the segment is unlinked as soon as every rank mapped it).
//
// Children are forked before the test process starts any thread (the store server starts after
// the forks; its port reaches the children through a pipe). They report one line each through a
// pipe and leave with _exit, never returning into gtest.
#include <dirent.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/comm/shm/shm_communicator.h"
#include "worker/store/tcp_store.h"

namespace dstrain::comm {
namespace {

using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;

constexpr int kSize = 3;
constexpr int kVictim = 2;

// What a surviving rank saw.
struct Outcome {
  bool reported = false;
  absl::StatusCode code = absl::StatusCode::kUnknown;
  absl::Duration elapsed;
  std::string message;
};

void WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += n;
  }
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, n);
  }
  return out;
}

// The body of rank `rank` in a child process: returns the line to report ("" for none).
using RankBody = std::function<std::string(int rank, Communicator& comm)>;

std::string Report(const absl::Status& s, absl::Duration elapsed) {
  std::string message(s.message());
  for (char& c : message) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  return absl::StrCat(static_cast<int>(s.code()), "\t", absl::ToInt64Milliseconds(elapsed), "\t",
                      message);
}

[[noreturn]] void RunChild(int rank, int port_fd, int result_fd, const RankBody& body) {
  int port = 0;
  if (read(port_fd, &port, sizeof(port)) != sizeof(port)) _exit(10);
  absl::StatusOr<std::unique_ptr<store::TcpStoreClient>> store =
      store::TcpStoreClient::Connect("127.0.0.1", port, absl::Seconds(10));
  if (!store.ok()) {
    WriteAll(result_fd, Report(store.status(), absl::ZeroDuration()));
    _exit(11);
  }
  ShmOptions options;
  options.timeout = absl::Seconds(10);
  absl::StatusOr<std::unique_ptr<ShmCommunicator>> comm =
      ShmCommunicator::Create(store->get(), rank, kSize, "world", options);
  if (!comm.ok()) {
    WriteAll(result_fd, Report(comm.status(), absl::ZeroDuration()));
    _exit(12);
  }
  WriteAll(result_fd, body(rank, **comm));
  _exit(0);
}

// Forks kSize ranks running `body`, serves their store, and collects the survivors' reports; the
// victim is SIGKILLed once they have reported (a hung victim would sleep on).
std::vector<Outcome> RunGroup(const RankBody& body, std::vector<pid_t>* children = nullptr) {
  std::vector<pid_t> pids(kSize);
  std::vector<int> port_w(kSize), result_r(kSize);
  for (int r = 0; r < kSize; ++r) {
    int port_pipe[2], result_pipe[2];
    EXPECT_EQ(pipe(port_pipe), 0);
    EXPECT_EQ(pipe(result_pipe), 0);
    const pid_t pid = fork();
    if (pid == 0) {
      close(port_pipe[1]);
      close(result_pipe[0]);
      RunChild(r, port_pipe[0], result_pipe[1], body);
    }
    close(port_pipe[0]);
    close(result_pipe[1]);
    pids[r] = pid;
    port_w[r] = port_pipe[1];
    result_r[r] = result_pipe[0];
  }

  absl::StatusOr<std::unique_ptr<store::TcpStoreServer>> server =
      store::TcpStoreServer::Start("127.0.0.1", 0);
  EXPECT_TRUE(server.ok()) << server.status();
  const int port = server.ok() ? (*server)->port() : 0;
  for (int r = 0; r < kSize; ++r) {
    EXPECT_EQ(write(port_w[r], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
    close(port_w[r]);
  }

  // Collect the survivors' reports (bounded), then make sure every child is gone.
  std::vector<Outcome> outcomes(kSize);
  const absl::Time hard_deadline = absl::Now() + absl::Seconds(40);
  for (int r = 0; r < kSize; ++r) {
    if (r == kVictim) continue;
    int status = 0;
    while (waitpid(pids[r], &status, WNOHANG) == 0 && absl::Now() < hard_deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    if (absl::Now() >= hard_deadline) {
      ADD_FAILURE() << "rank " << r << " did not finish";
      kill(pids[r], SIGKILL);
      waitpid(pids[r], &status, 0);
    }
    EXPECT_TRUE(WIFEXITED(status))
        << "rank " << r << " was killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    const std::string line = ReadAll(result_r[r]);
    std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits('\t', 2));
    int code = 0;
    int64_t ms = 0;
    if (fields.size() == 3 && absl::SimpleAtoi(fields[0], &code) &&
        absl::SimpleAtoi(fields[1], &ms)) {
      outcomes[r].reported = true;
      outcomes[r].code = static_cast<absl::StatusCode>(code);
      outcomes[r].elapsed = absl::Milliseconds(ms);
      outcomes[r].message = fields[2];
    } else {
      ADD_FAILURE() << "rank " << r << " reported '" << line << "'";
    }
  }
  kill(pids[kVictim], SIGKILL);
  int status = 0;
  waitpid(pids[kVictim], &status, 0);
  for (int r = 0; r < kSize; ++r) close(result_r[r]);
  if (children != nullptr) *children = pids;
  return outcomes;
}

absl::Status RunAndWait(absl::StatusOr<std::unique_ptr<Work>> w) {
  if (!w.ok()) return w.status();
  return (*w)->Wait();
}

CommOptions Timeout(absl::Duration d) {
  CommOptions o;
  o.timeout = d;
  return o;
}

// The entries of /dev/shm that a group created by one of `pids` would have left.
std::vector<std::string> Leftovers(const std::vector<pid_t>& pids) {
  std::vector<std::string> found;
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return found;
  while (struct dirent* e = readdir(dir)) {
    for (pid_t pid : pids) {
      if (absl::StartsWith(e->d_name, absl::StrCat("dstrain-shm-", pid, "-"))) {
        found.push_back(e->d_name);
      }
    }
  }
  closedir(dir);
  return found;
}

// Gradient-like all-reduces of f32 and bf16 buffers, every element checked exactly.
TEST(ShmProcessTest, TrainingLikeAllReducesAreExact) {
  std::vector<pid_t> pids;
  const std::vector<Outcome> outcomes = RunGroup(
      [&](int rank, Communicator& comm) -> std::string {
        // Rank kVictim takes part like the others; the harness only skips reading its report.
        for (int step = 0; step < 20; ++step) {
          const int64_t n = (int64_t{1} << 20) + 3 * step;  // not a multiple of the chunk
          std::vector<float> grad(n);
          for (int64_t i = 0; i < n; ++i)
            grad[i] = static_cast<float>((i % 1024) * (rank + 1) + step);
          const absl::Status s = RunAndWait(
              comm.AllReduce(CommBuffer{grad.data(), n}, step % 2 ? ReduceOp::kAvg : ReduceOp::kSum,
                             Timeout(absl::Seconds(30))));
          if (!s.ok()) return Report(s, absl::ZeroDuration());
          for (int64_t i = 0; i < n; ++i) {
            // sum over ranks r of (i % 1024) * (r + 1) + step = (i % 1024) * 6 + 3 * step.
            float want = static_cast<float>((i % 1024) * 6 + 3 * step);
            if (step % 2) want /= kSize;
            if (grad[i] != want) {
              return Report(absl::InternalError(absl::StrCat("step ", step, " element ", i, ": ",
                                                             grad[i], " != ", want)),
                            absl::ZeroDuration());
            }
          }
        }
        return Report(absl::OkStatus(), absl::ZeroDuration());
      },
      &pids);
  for (int r = 0; r < kSize; ++r) {
    if (r == kVictim) continue;
    ASSERT_TRUE(outcomes[r].reported) << r;
    EXPECT_EQ(outcomes[r].code, absl::StatusCode::kOk) << outcomes[r].message;
  }
  EXPECT_THAT(Leftovers(pids), ::testing::IsEmpty());
}

// A rank SIGKILLed in the middle of a 64 MiB all-reduce: the survivors notice the dead process
// long before the 30 s timeout, name it, and nothing is left in /dev/shm.
TEST(ShmProcessTest, RankKilledMidCollective) {
  const absl::Duration timeout = absl::Seconds(30);
  std::vector<pid_t> pids;
  const std::vector<Outcome> outcomes = RunGroup(
      [&](int rank, Communicator& comm) -> std::string {
        std::vector<float> x(1000, 1.0f);
        absl::Status s =
            RunAndWait(comm.AllReduce(CommBuffer{x.data(), 1000}, ReduceOp::kSum, CommOptions()));
        if (!s.ok()) return Report(s, absl::ZeroDuration());
        std::vector<float> big(16 << 20, 1.0f);
        const absl::Time start = absl::Now();
        absl::StatusOr<std::unique_ptr<Work>> w =
            comm.AllReduce(CommBuffer{big.data(), static_cast<int64_t>(big.size())}, ReduceOp::kSum,
                           Timeout(timeout));
        if (rank == kVictim) {
          absl::SleepFor(absl::Milliseconds(5));
          kill(getpid(), SIGKILL);
        }
        s = w.ok() ? (*w)->Wait() : w.status();
        return Report(s, absl::Now() - start);
      },
      &pids);
  for (int r = 0; r < kSize; ++r) {
    if (r == kVictim) continue;
    const Outcome& o = outcomes[r];
    ASSERT_TRUE(o.reported) << r;
    EXPECT_THAT(o.code, AnyOf(absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kAborted))
        << o.message;
    EXPECT_THAT(o.message, AllOf(HasSubstr("AllReduce"), HasSubstr("group 'world'"),
                                 ContainsRegex("\\[([0-9]+, )*2(, [0-9]+)*\\]")))
        << "rank " << r;
    EXPECT_LT(o.elapsed, absl::Seconds(5)) << "rank " << r << ": " << o.message;
    std::fprintf(stderr, "rank %d after %lld ms: %s\n", r,
                 static_cast<long long>(absl::ToInt64Milliseconds(o.elapsed)), o.message.c_str());
  }
  EXPECT_THAT(Leftovers(pids), ::testing::IsEmpty());
}

}  // namespace
}  // namespace dstrain::comm
