#include "worker/agent/gpu_inventory.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

#if DSTRAIN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace dstrain::agent {
namespace {

// Most GPUs one agent offers (the coordinator's bound on a worker's slots).
constexpr int kMaxGpus = 4096;
// What the discovery child may send back; far more than kMaxGpus descriptions need.
constexpr size_t kMaxAnswerBytes = 4 << 20;

// Writes all of `data` to `fd`; false on a write error.
bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The child's side of DiscoverGpus: runs the probe and sends 'O' and the GPUs (a serialized
// RegisterWorkerRequest holding them), or 'E' and the error message. Never returns.
[[noreturn]] void RunProbeChild(const GpuProbe& probe, int fd) {
  // Dies with the agent rather than linger in a driver call nobody waits for.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  absl::StatusOr<std::vector<v1::GpuInfo>> gpus = probe();
  std::string answer;
  if (gpus.ok()) {
    v1::RegisterWorkerRequest holder;
    for (v1::GpuInfo& gpu : *gpus) *holder.add_gpus() = std::move(gpu);
    answer = "O" + holder.SerializeAsString();
  } else {
    answer = absl::StrCat("E", gpus.status().message());
  }
  _exit(WriteAll(fd, answer) ? 0 : 1);
}

#if DSTRAIN_HAVE_CUDA
// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi and DCGM write a device's UUID.
std::string FormatUuid(const cudaUUID_t& uuid) {
  std::string out = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    absl::StrAppendFormat(&out, "%02x", static_cast<unsigned char>(uuid.bytes[i]));
  }
  return out;
}
#endif

}  // namespace

absl::StatusOr<GpuSelection> ParseGpuSelection(absl::string_view flag) {
  GpuSelection selection;
  if (flag == "auto") return selection;
  int n = 0;
  if (flag == "none" || (absl::SimpleAtoi(flag, &n) && n == 0)) {
    selection.mode = GpuSelection::Mode::kNone;
    return selection;
  }
  if (!absl::SimpleAtoi(flag, &n) || n < 0 || n > kMaxGpus) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpus: expected auto, none or a number of GPUs in [0, ", kMaxGpus,
                     "], got '", flag, "'"));
  }
  selection.mode = GpuSelection::Mode::kAtMost;
  selection.at_most = n;
  return selection;
}

absl::StatusOr<std::vector<v1::GpuInfo>> ParseFakeGpus(absl::string_view flag) {
  std::vector<v1::GpuInfo> gpus;
  for (absl::string_view entry : absl::StrSplit(flag, ',')) {
    const size_t colon = entry.rfind(':');
    int64_t bytes = 0;
    if (colon == absl::string_view::npos || colon == 0 ||
        !absl::SimpleAtoi(entry.substr(colon + 1), &bytes) || bytes < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--fake-gpus: '", entry, "': expected NAME:BYTES (bytes an integer >= 0)"));
    }
    if (gpus.size() >= static_cast<size_t>(kMaxGpus)) {
      return absl::InvalidArgumentError(absl::StrCat("--fake-gpus: more than ", kMaxGpus, " GPUs"));
    }
    v1::GpuInfo& gpu = gpus.emplace_back();
    gpu.set_index(static_cast<int32_t>(gpus.size() - 1));
    gpu.set_name(std::string(entry.substr(0, colon)));
    gpu.set_memory_bytes(bytes);
    gpu.set_uuid(absl::StrCat("FAKE-GPU-", gpu.index()));
  }
  return gpus;
}

absl::StatusOr<std::vector<v1::GpuInfo>> ProbeCudaRuntime() {
#if DSTRAIN_HAVE_CUDA
  std::vector<v1::GpuInfo> gpus;
  int count = 0;
  const cudaError_t counted = cudaGetDeviceCount(&count);
  if (counted == cudaErrorNoDevice) return gpus;
  if (counted != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorString(counted)));
  }
  for (int i = 0; i < count && i < kMaxGpus; ++i) {
    cudaDeviceProp prop;
    const cudaError_t got = cudaGetDeviceProperties(&prop, i);
    if (got != cudaSuccess) {
      return absl::UnavailableError(
          absl::StrCat("cudaGetDeviceProperties(", i, "): ", cudaGetErrorString(got)));
    }
    v1::GpuInfo& gpu = gpus.emplace_back();
    gpu.set_index(i);
    gpu.set_name(std::string(prop.name, strnlen(prop.name, sizeof(prop.name))));
    gpu.set_memory_bytes(static_cast<int64_t>(prop.totalGlobalMem));
    gpu.set_uuid(FormatUuid(prop.uuid));
  }
  return gpus;
#else
  return absl::UnavailableError("this dstrain-worker was built without CUDA (--config=nocuda)");
#endif
}

absl::StatusOr<std::vector<v1::GpuInfo>> DiscoverGpus(const GpuProbe& probe,
                                                      absl::Duration timeout) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("GPU discovery: pipe: ", std::strerror(errno)));
  }
  const pid_t pid = fork();
  if (pid < 0) {
    const int e = errno;
    close(fds[0]);
    close(fds[1]);
    return absl::UnavailableError(absl::StrCat("GPU discovery: fork: ", std::strerror(e)));
  }
  if (pid == 0) {
    close(fds[0]);
    RunProbeChild(probe, fds[1]);
  }
  close(fds[1]);
  std::string answer;
  bool timed_out = false;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buf[4096];
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of file: the child is done
    answer.append(buf, static_cast<size_t>(n));
    if (answer.size() > kMaxAnswerBytes) break;
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::UnavailableError(absl::StrCat("GPU discovery did not finish within ",
                                               absl::FormatDuration(timeout), " (stopped)"));
  }
  if (WIFSIGNALED(status)) {
    return absl::UnavailableError(absl::StrCat("GPU discovery died of signal ", WTERMSIG(status),
                                               " (", strsignal(WTERMSIG(status)), ")"));
  }
  if (!answer.empty() && answer[0] == 'E') {
    return absl::UnavailableError(answer.substr(1));
  }
  v1::RegisterWorkerRequest holder;
  if (answer.empty() || answer[0] != 'O' || answer.size() > kMaxAnswerBytes ||
      !holder.ParseFromString(answer.substr(1))) {
    return absl::UnavailableError(absl::StrCat("GPU discovery gave no answer (exit status ",
                                               WIFEXITED(status) ? WEXITSTATUS(status) : -1, ")"));
  }
  return std::vector<v1::GpuInfo>(holder.gpus().begin(), holder.gpus().end());
}

std::vector<GpuSlot> ToGpuSlots(std::vector<v1::GpuInfo> gpus, const char* agent_visible) {
  std::vector<std::string> listed;
  if (agent_visible != nullptr) {
    listed = absl::StrSplit(agent_visible, ',', absl::SkipWhitespace());
  }
  std::vector<GpuSlot> slots;
  slots.reserve(gpus.size());
  for (v1::GpuInfo& gpu : gpus) {
    GpuSlot& slot = slots.emplace_back();
    const int i = gpu.index();
    slot.visible_id = i >= 0 && i < static_cast<int>(listed.size())
                          ? std::string(absl::StripAsciiWhitespace(listed[i]))
                          : absl::StrCat(i);
    slot.info = std::move(gpu);
  }
  return slots;
}

std::vector<v1::GpuInfo> SelectGpus(const GpuSelection& selection,
                                    const std::optional<std::vector<v1::GpuInfo>>& fake,
                                    const GpuProbe& probe, absl::Duration timeout,
                                    std::string* note) {
  std::vector<v1::GpuInfo> gpus;
  std::string source;
  if (selection.mode == GpuSelection::Mode::kNone) {
    *note = "no GPU slots (--gpus none)";
    return gpus;
  }
  if (fake.has_value()) {
    gpus = *fake;
    source = "--fake-gpus (a test inventory)";
  } else {
    absl::StatusOr<std::vector<v1::GpuInfo>> found = DiscoverGpus(probe, timeout);
    if (!found.ok()) {
      *note = absl::StrCat("no GPU slots: ", found.status().message());
      return gpus;
    }
    gpus = *std::move(found);
    source = "the CUDA runtime";
  }
  const size_t found = gpus.size();
  if (selection.mode == GpuSelection::Mode::kAtMost &&
      gpus.size() > static_cast<size_t>(selection.at_most)) {
    gpus.resize(static_cast<size_t>(selection.at_most));
  }
  std::vector<std::string> names;
  for (const v1::GpuInfo& gpu : gpus) {
    names.push_back(absl::StrFormat("%d: %s, %.1f GiB", gpu.index(), gpu.name(),
                                    static_cast<double>(gpu.memory_bytes()) / (1 << 30)));
  }
  *note = absl::StrCat(gpus.size(), " GPU slot(s) of ", found, " GPU(s) from ", source,
                       gpus.empty() ? "" : ": ", absl::StrJoin(names, "; "));
  return gpus;
}

}  // namespace dstrain::agent
