// TrainerProcess: one trainer child of the worker agent (torchelastic's agent model;
// docs/service.md, "Worker agent").
//
// Spawn forks and execs the trainer in its own process group with stdin on /dev/null and stdout
// and stderr merged into one pipe, so the agent reads a single stream of lines and can stop
// everything the trainer started with one signal to the group. The child gets SIGKILL when the
// thread that spawned it ends (PR_SET_PDEATHSIG), so a crashed agent leaves no trainer behind:
// spawn from a thread that lives as long as the trainers it supervises.
//
// Nothing here blocks: output is read with non-blocking reads and exits are polled, so one thread
// can supervise many trainers from a poll loop. No process-wide signal handling is involved
// (no signalfd, no SIGCHLD handler): exits are found with waitid on the trainer's own pid.
//
// Not thread-safe: one supervising thread uses a TrainerProcess. The destructor kills and reaps a
// trainer that is still running.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/limits/limits.h"

namespace dstrain::agent {

struct SpawnSpec {
  // argv[0] is the executable's path; no PATH search happens.
  std::vector<std::string> argv;
  // Working directory of the child; empty keeps the agent's.
  std::string cwd;
  // Variables set in the child's environment, replacing the agent's values (an empty value is
  // set, not removed); the rest of the agent's environment is inherited.
  std::vector<std::pair<std::string, std::string>> env;
};

// How a trainer ended.
struct ExitInfo {
  // The exit status when the process exited (signal == 0).
  int exit_code = 0;
  // The signal that ended it, 0 when it exited.
  int signal = 0;

  bool success() const { return signal == 0 && exit_code == 0; }
  // "exited with status 3", "killed by signal 9 (Killed)".
  std::string Describe() const;
};

// Longest line relayed as one; longer output is cut into pieces of this size.
inline constexpr size_t kMaxLineBytes = limits::kMaxLogLineBytes;

// `text` with every invalid UTF-8 sequence replaced by U+FFFD, so it fits a proto3 string field
// (a receiver rejects a message whose string fields are not UTF-8).
std::string ToValidUtf8(absl::string_view text);

class TrainerProcess {
 public:
  // Starts the child. INVALID_ARGUMENT for an empty argv; INTERNAL when pipe or fork fail. An
  // executable that cannot be run is not an error here: the child prints why and exits 127.
  static absl::StatusOr<std::unique_ptr<TrainerProcess>> Spawn(const SpawnSpec& spec);

  TrainerProcess(const TrainerProcess&) = delete;
  TrainerProcess& operator=(const TrainerProcess&) = delete;
  ~TrainerProcess();

  pid_t pid() const { return pid_; }
  // Read end of the output pipe for poll(), or -1 once the output is closed.
  int output_fd() const { return fd_; }
  bool output_open() const { return fd_ >= 0; }

  // Appends the complete lines available now (without their newline, trailing '\r' removed,
  // made valid UTF-8) to *lines. At end of file the unterminated last line is appended too and
  // the output closes.
  void ReadOutput(std::vector<std::string>* lines);
  // Reads what remains until end of file or `timeout_ms` passes, then closes the output. Used once
  // the trainer has exited: its process group is dead, but something that left the group may
  // still hold the pipe.
  void DrainOutput(std::vector<std::string>* lines, int timeout_ms);

  // Sends `sig` to the trainer's process group; a no-op once the trainer has been reaped.
  void SignalGroup(int sig);

  // Returns how the trainer ended once it has; nullopt while it runs. When it first sees the exit
  // it SIGKILLs whatever is left in the trainer's process group (before reaping the leader, so
  // the group id cannot be reused meanwhile), then reaps it.
  std::optional<ExitInfo> PollExit();

 private:
  TrainerProcess(pid_t pid, int fd) : pid_(pid), fd_(fd) {}
  void Split(std::vector<std::string>* lines, bool eof);
  void Close();

  pid_t pid_;
  int fd_;
  std::string partial_;  // output after the last newline
  std::optional<ExitInfo> exit_;
};

}  // namespace dstrain::agent
