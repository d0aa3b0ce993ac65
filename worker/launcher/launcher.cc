#include "worker/launcher/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "worker/store/tcp_store.h"

namespace dstrain::launcher {
namespace {

struct Rank {
  int rank = 0;
  pid_t pid = -1;
  int out_fd = -1;  // read ends of the rank's stdout and stderr pipes
  int err_fd = -1;
  std::string out_buf, err_buf;  // partial lines
  bool exited = false;
  int status = 0;
};

int CpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

// Writes whole lines of `buf` (after appending `data`) to `out` with the rank prefix.
void Relay(int rank, std::string& buf, const char* data, size_t n, std::FILE* out, bool flush) {
  buf.append(data, n);
  size_t start = 0;
  for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::fprintf(out, "[rank %d] %.*s\n", rank, static_cast<int>(nl - start), buf.data() + start);
  }
  buf.erase(0, start);
  if (flush && !buf.empty()) {
    std::fprintf(out, "[rank %d] %s\n", rank, buf.c_str());
    buf.clear();
  }
  std::fflush(out);
}

std::string DescribeExit(int rank, int status) {
  if (WIFEXITED(status))
    return absl::StrCat("rank ", rank, " exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return absl::StrCat("rank ", rank, " was killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  return absl::StrCat("rank ", rank, " ended with wait status ", status);
}

// This process's environment with `overrides` (NAME=VALUE) replacing or adding variables; built
// before fork, since the child of a threaded process may only make async-signal-safe calls.
std::vector<std::string> EnvironmentWith(const std::vector<std::string>& overrides) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const absl::string_view name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const std::string& o : overrides) {
      replaced |= absl::string_view(o).substr(0, o.find('=')) == name;
    }
    if (!replaced) out.emplace_back(entry);
  }
  out.insert(out.end(), overrides.begin(), overrides.end());
  return out;
}

// Starts argv with `env` as its environment (null: this process's).
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int out_w, int err_w,
                            const sigset_t& original_mask,
                            const std::vector<std::string>* env = nullptr) {
  std::vector<char*> cargv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<char*> cenv;
  if (env != nullptr) {
    for (const std::string& e : *env) cenv.push_back(const_cast<char*>(e.c_str()));
    cenv.push_back(nullptr);
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork failed: ", std::strerror(errno)));
  if (pid == 0) {
    // A rank must not outlive its launcher (no orphan keeps training or holds a port).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // Its own process group, so stopping a rank also stops whatever it started (a wrapper
    // script's children would otherwise keep running and hold the output pipes open).
    setpgid(0, 0);
    sigprocmask(SIG_SETMASK, &original_mask, nullptr);
    dup2(out_w, STDOUT_FILENO);
    dup2(err_w, STDERR_FILENO);
    if (env != nullptr) {
      execvpe(cargv[0], cargv.data(), cenv.data());
    } else {
      execv(cargv[0], cargv.data());
    }
    std::fprintf(stderr, "cannot execute %s: %s\n", cargv[0], std::strerror(errno));
    _exit(127);
  }
  return pid;
}

// SIGINT, SIGTERM and SIGCHLD arrive through a signalfd, so they are blocked before any thread
// exists (the store server's threads inherit the mask) and restored in each child before exec.
// The mask is restored, and the signalfd closed, when this goes out of scope.
class LaunchSignals {
 public:
  LaunchSignals() {
    sigemptyset(&mask_);
    sigaddset(&mask_, SIGINT);
    sigaddset(&mask_, SIGTERM);
    sigaddset(&mask_, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask_, &original_);
  }
  LaunchSignals(const LaunchSignals&) = delete;
  LaunchSignals& operator=(const LaunchSignals&) = delete;
  ~LaunchSignals() {
    if (fd_ >= 0) close(fd_);
    sigprocmask(SIG_SETMASK, &original_, nullptr);
  }

  absl::Status Open() {
    fd_ = signalfd(-1, &mask_, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd_ < 0) return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno)));
    return absl::OkStatus();
  }
  int fd() const { return fd_; }
  // The mask from before the launch, for the children.
  const sigset_t& original() const { return original_; }

 private:
  sigset_t mask_, original_;
  int fd_ = -1;
};

// Starts every rank with its own stdout and stderr pipes and the per-rank arguments.
absl::StatusOr<std::vector<Rank>> SpawnRanks(const LaunchOptions& options,
                                             const std::string& store_addr,
                                             const sigset_t& original_mask) {
  const int threads = std::max(1, CpuCount() / options.nproc);

  std::vector<Rank> ranks(options.nproc);
  for (int r = 0; r < options.nproc; ++r) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
    }
    // Gang::RelayOutput reads every pipe each round, so reads must never block.
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    std::vector<std::string> argv = options.trainer_argv;
    std::vector<std::string> env;
    if (options.rank_env) {
      env = EnvironmentWith(
          {absl::StrCat("RANK=", r), absl::StrCat("WORLD_SIZE=", options.nproc),
           absl::StrCat("LOCAL_RANK=", r), absl::StrCat("LOCAL_WORLD_SIZE=", options.nproc),
           absl::StrCat("DSTRAIN_STORE=", store_addr), absl::StrCat("DSTRAIN_THREADS=", threads),
           absl::StrCat("OMP_NUM_THREADS=", threads)});
    } else {
      for (const std::string& a : {std::string("--rank"), std::to_string(r), std::string("--world"),
                                   std::to_string(options.nproc), std::string("--store"),
                                   store_addr, std::string("--threads"), std::to_string(threads)}) {
        argv.push_back(a);
      }
    }
    if (r == 0)
      argv.insert(argv.end(), options.rank0_extra_args.begin(), options.rank0_extra_args.end());
    auto pid = Spawn(argv, out[1], err[1], original_mask, options.rank_env ? &env : nullptr);
    close(out[1]);
    close(err[1]);
    if (!pid.ok()) return pid.status();
    ranks[r].rank = r;
    ranks[r].pid = *pid;
    ranks[r].out_fd = out[0];
    ranks[r].err_fd = err[0];
  }
  return ranks;
}

// The ranks as a gang: one round of the launcher's loop relays their output, takes the
// launcher's signals and reaps the ranks that exited; the first failure or signal stops them all
// (SIGTERM, then SIGKILL after stop_grace).
class Gang {
 public:
  Gang(std::vector<Rank> ranks, absl::Duration stop_grace)
      : ranks_(std::move(ranks)), stop_grace_(stop_grace) {}

  // Every rank exited and its output is read to the end.
  bool AllDone() const {
    for (const Rank& r : ranks_) {
      if (!r.exited || r.out_fd >= 0 || r.err_fd >= 0) return false;
    }
    return true;
  }

  // Waits for output or a signal on `sig_fd`, 200 ms at most.
  void Wait(int sig_fd) const {
    std::vector<pollfd> fds = {{sig_fd, POLLIN, 0}};
    for (const Rank& r : ranks_) {
      if (r.out_fd >= 0) fds.push_back({r.out_fd, POLLIN, 0});
      if (r.err_fd >= 0) fds.push_back({r.err_fd, POLLIN, 0});
    }
    int timeout_ms = 200;
    poll(fds.data(), fds.size(), timeout_ms);
  }

  void RelayOutput() {
    char buf[65536];
    for (Rank& r : ranks_) {
      for (int* fd : {&r.out_fd, &r.err_fd}) {
        if (*fd < 0) continue;
        const ssize_t n = read(*fd, buf, sizeof(buf));
        const bool is_out = fd == &r.out_fd;
        std::string& line = is_out ? r.out_buf : r.err_buf;
        std::FILE* sink = is_out ? stdout : stderr;
        if (n > 0) {
          Relay(r.rank, line, buf, n, sink, false);
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          Relay(r.rank, line, "", 0, sink, true);
          close(*fd);
          *fd = -1;
        }
      }
    }
  }

  // Ctrl-C / SIGTERM stop the gang; SIGCHLD is drained by ReapExits.
  void TakeSignals(int sig_fd) {
    signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof(si)) == sizeof(si)) {
      if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
        if (result_.exit_code == 0) {
          result_.exit_code = 128 + static_cast<int>(si.ssi_signo);
          result_.reason = absl::StrCat("launcher received ", strsignal(si.ssi_signo));
        }
        StopAll(result_.reason);
      }
    }
  }

  void ReapExits() {
    for (Rank& r : ranks_) {
      if (r.exited) continue;
      int status = 0;
      if (waitpid(r.pid, &status, WNOHANG) == r.pid) {
        r.exited = true;
        r.status = status;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && result_.failed_rank < 0 && result_.exit_code == 0) {
          result_.failed_rank = r.rank;
          result_.reason = DescribeExit(r.rank, status);
          result_.exit_code = 1;
          StopAll(result_.reason);
        }
      }
    }
  }

  // SIGKILL once stop_grace has passed since the SIGTERM; after another stop_grace, stops reading
  // pipes that something outside the ranks' process groups still holds.
  void EnforceStopGrace() {
    if (stopping_ && !killed_ && absl::Now() > stop_deadline_) {
      for (Rank& r : ranks_) kill(-r.pid, SIGKILL);
      killed_ = true;
    }
    if (killed_ && absl::Now() > stop_deadline_ + stop_grace_) {
      for (Rank& r : ranks_) {
        for (int* fd : {&r.out_fd, &r.err_fd}) {
          if (*fd >= 0) close(*fd);
          *fd = -1;
        }
      }
    }
  }

  const LaunchResult& result() const { return result_; }

 private:
  void StopAll(const std::string& why) {
    if (stopping_) return;
    stopping_ = true;
    std::fprintf(stderr, "dstrain launch: %s; stopping all ranks\n", why.c_str());
    for (Rank& r : ranks_) kill(-r.pid, SIGTERM);
    stop_deadline_ = absl::Now() + stop_grace_;
  }

  std::vector<Rank> ranks_;
  const absl::Duration stop_grace_;
  LaunchResult result_;
  absl::Time stop_deadline_ = absl::InfiniteFuture();
  bool stopping_ = false;
  bool killed_ = false;
};

}  // namespace

absl::StatusOr<LaunchResult> Launch(const LaunchOptions& options) {
  if (options.nproc < 1) return absl::InvalidArgumentError("--nproc must be >= 1");
  if (options.trainer_argv.empty()) return absl::InvalidArgumentError("no trainer command");

  LaunchSignals signals;
  DT_RETURN_IF_ERROR(signals.Open());
  DT_ASSIGN_OR_RETURN(std::unique_ptr<store::TcpStoreServer> store,
                      store::TcpStoreServer::Start(options.store_host, options.store_port));
  const std::string store_addr = absl::StrCat(options.store_host, ":", store->port());
  DT_ASSIGN_OR_RETURN(std::vector<Rank> ranks, SpawnRanks(options, store_addr, signals.original()));

  Gang gang(std::move(ranks), options.stop_grace);
  while (!gang.AllDone()) {
    gang.Wait(signals.fd());
    // Output first, so a failing rank's last words print before the launcher's verdict.
    gang.RelayOutput();
    gang.TakeSignals(signals.fd());
    gang.ReapExits();
    gang.EnforceStopGrace();
  }
  store->Shutdown();
  return gang.result();
}

}  // namespace dstrain::launcher
