#include "worker/agent/trainer_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dstrain::agent {
namespace {

// Writes all of `s` to `fd`, async-signal-safe (used between fork and exec).
void WriteAll(int fd, const char* s, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    s += w;
    n -= static_cast<size_t>(w);
  }
}

// The child's side of Spawn: only async-signal-safe calls until exec.
[[noreturn]] void ExecChild(char* const* argv, char* const* envp, const char* cwd, int out_fd,
                            int null_fd, pid_t parent, const char* exec_error,
                            size_t exec_error_len) {
  setpgid(0, 0);
  // A trainer must not outlive the agent thread that supervises it.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);
  // Undo what the agent's threads may have set: blocked signals and ignored signals survive exec.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) {
    sigaction(sig, &dfl, nullptr);
  }
  dup2(null_fd, STDIN_FILENO);
  dup2(out_fd, STDOUT_FILENO);
  dup2(out_fd, STDERR_FILENO);
  if (cwd != nullptr && chdir(cwd) != 0) {
    static const char kMsg[] = "dstrain-worker: cannot enter the trainer's directory\n";
    WriteAll(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    _exit(127);
  }
  execve(argv[0], argv, envp);
  // errno as digits without snprintf.
  char digits[16];
  int n = 0, e = errno;
  do {
    digits[sizeof(digits) - 1 - n++] = static_cast<char>('0' + e % 10);
    e /= 10;
  } while (e > 0 && n < 15);
  WriteAll(STDERR_FILENO, exec_error, exec_error_len);
  WriteAll(STDERR_FILENO, digits + sizeof(digits) - n, static_cast<size_t>(n));
  WriteAll(STDERR_FILENO, ")\n", 2);
  _exit(127);
}

// Appends the UTF-8 encoding of U+FFFD.
void AppendReplacement(std::string* out) { out->append("\xEF\xBF\xBD"); }

}  // namespace

std::string ExitInfo::Describe() const {
  if (signal != 0) {
    return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
  }
  return absl::StrCat("exited with status ", exit_code);
}

std::string ToValidUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Length and the allowed range of the second byte (excludes overlongs and surrogates).
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      const unsigned char b = s[i + k];
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (ok) {
      out.append(text.data() + i, len);
      i += len;
    } else {
      AppendReplacement(&out);
      ++i;
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<TrainerProcess>> TrainerProcess::Spawn(const SpawnSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return absl::InvalidArgumentError("no trainer executable");
  }
  // Everything the child needs is prepared here: after fork it may not allocate.
  std::vector<char*> argv;
  argv.reserve(spec.argv.size() + 1);
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // The agent's environment with spec.env replacing (or adding) its variables.
  std::vector<std::string> env_entries;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const absl::string_view name = entry.substr(0, entry.find('='));
    const bool replaced = std::any_of(spec.env.begin(), spec.env.end(),
                                      [&](const auto& kv) { return kv.first == name; });
    if (!replaced) env_entries.emplace_back(entry);
  }
  for (const auto& [name, value] : spec.env) env_entries.push_back(absl::StrCat(name, "=", value));
  std::vector<char*> envp;
  envp.reserve(env_entries.size() + 1);
  for (std::string& e : env_entries) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string exec_error =
      absl::StrCat("dstrain-worker: cannot execute ", spec.argv[0], " (errno ");

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    const int e = errno;
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(absl::StrCat("open /dev/null: ", std::strerror(e)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int e = errno;
    close(fds[0]);
    close(fds[1]);
    close(null_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(e)));
  }
  if (pid == 0) {
    ExecChild(argv.data(), envp.data(), spec.cwd.empty() ? nullptr : spec.cwd.c_str(), fds[1],
              null_fd, parent, exec_error.data(), exec_error.size());
  }
  // Also from this side, so the group exists before anyone signals it (either call may win).
  setpgid(pid, pid);
  close(fds[1]);
  close(null_fd);
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  return std::unique_ptr<TrainerProcess>(new TrainerProcess(pid, fds[0]));
}

TrainerProcess::~TrainerProcess() {
  if (!exit_.has_value()) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  Close();
}

void TrainerProcess::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

void TrainerProcess::Split(std::vector<std::string>* lines, bool eof) {
  size_t start = 0;
  for (;;) {
    const size_t nl = partial_.find('\n', start);
    const size_t end = nl == std::string::npos ? partial_.size() : nl;
    if (nl == std::string::npos && end - start < kMaxLineBytes && !(eof && end > start)) break;
    // A complete line, an over-long piece, or the unterminated last line at EOF.
    const size_t take = std::min(end - start, kMaxLineBytes);
    absl::string_view line(partial_.data() + start, take);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines->push_back(ToValidUtf8(line));
    start += take;
    if (start == nl) ++start;  // consume the newline
    if (start >= partial_.size()) break;
  }
  partial_.erase(0, start);
}

void TrainerProcess::ReadOutput(std::vector<std::string>* lines) {
  if (fd_ < 0) return;
  char buf[65536];
  // Bounded per call so one chatty trainer cannot starve the others in a shared loop.
  for (int round = 0; round < 16; ++round) {
    const ssize_t n = read(fd_, buf, sizeof(buf));
    if (n > 0) {
      partial_.append(buf, static_cast<size_t>(n));
      Split(lines, false);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // EOF or a read error: the output is over.
    Split(lines, true);
    Close();
    return;
  }
}

void TrainerProcess::DrainOutput(std::vector<std::string>* lines, int timeout_ms) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  while (fd_ >= 0) {
    ReadOutput(lines);
    if (fd_ < 0) break;
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) break;
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(left));
  }
  if (fd_ >= 0) {
    Split(lines, true);
    Close();
  }
}

void TrainerProcess::SignalGroup(int sig) {
  if (exit_.has_value()) return;
  kill(-pid_, sig);
}

std::optional<ExitInfo> TrainerProcess::PollExit() {
  if (exit_.has_value()) return exit_;
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    if (errno == EINTR) return std::nullopt;
    // ECHILD: someone else reaped it; nothing more can be learned.
    exit_ = ExitInfo{127, 0};
    return exit_;
  }
  if (info.si_pid == 0) return std::nullopt;
  // The leader is a zombie now, so its pid (the group id) is still taken: safe to signal.
  kill(-pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  ExitInfo e;
  if (WIFEXITED(status)) {
    e.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    e.signal = WTERMSIG(status);
  }
  exit_ = e;
  return exit_;
}

}  // namespace dstrain::agent
