#include "worker/agent/metrics_tail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/proto_time.h"
#include "nlohmann/json.hpp"

namespace dstrain::agent {
namespace {

// Most memory categories taken from one line (the allocator has seven).
constexpr size_t kMaxMemoryCategories = 32;
// Pipeline stages read from one line (a pipeline has at most as many stages as blocks; a line
// claiming more is cut here, bounding what one line costs).
constexpr size_t kMaxStages = 256;

// A JSON number as a double; null (a non-finite float) and anything else as NaN.
double AsDouble(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  return std::numeric_limits<double>::quiet_NaN();
}

// A JSON number as an integer (floats rounded), or `fallback`.
int64_t AsInt(const nlohmann::json& v, int64_t fallback) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && std::fabs(d) < 9e18) return static_cast<int64_t>(std::llround(d));
  }
  return fallback;
}

}  // namespace

absl::Status MetricsTail::Poll(std::vector<std::string>* lines) {
  const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("open ", path_, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("stat ", path_, ": ", std::strerror(e)));
  }
  // A new file under the same name, or a truncated one: start over.
  if ((inode_ != 0 && (st.st_ino != inode_ || st.st_dev != device_)) || st.st_size < offset_) {
    offset_ = 0;
    partial_.clear();
  }
  inode_ = st.st_ino;
  device_ = st.st_dev;
  size_t want = static_cast<size_t>(std::max<int64_t>(0, st.st_size - offset_));
  want = std::min(want, max_read_);
  std::string buf(want, '\0');
  size_t got = 0;
  while (got < want) {
    const ssize_t n = pread(fd, buf.data() + got, want - got, offset_ + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  offset_ += static_cast<int64_t>(got);
  partial_.append(buf.data(), got);
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    absl::string_view line(partial_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines->emplace_back(line);
  }
  partial_.erase(0, start);
  return absl::OkStatus();
}

absl::StatusOr<ParsedStep> StepMetricsParser::Parse(absl::string_view line, absl::Time read_time) {
  const nlohmann::json j =
      nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics line is not a JSON object: ", line.substr(0, 200)));
  }
  const auto step = j.find("step");
  if (step == j.end() || !step->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics line has no integer \"step\": ", line.substr(0, 200)));
  }
  ParsedStep out;
  v1::StepMetrics& m = out.metrics;
  m.set_step(step->get<int64_t>());
  m.set_attempt(attempt_);
  auto number = [&](const char* key, double* value) {
    const auto it = j.find(key);
    if (it == j.end()) return false;
    *value = AsDouble(*it);
    return true;
  };
  double v = 0;
  if (number("loss", &v)) m.set_loss(v);
  if (number("lr", &v)) m.set_lr(v);
  if (number("grad_norm", &v)) m.set_grad_norm(v);
  if (number("loss_scale", &v)) m.set_loss_scale(v);
  if (number("tokens_per_s", &v)) m.set_tokens_per_second(v);
  if (number("step_ms", &v)) m.set_step_seconds(v / 1000.0);
  if (number("val_loss", &v)) m.set_val_loss(v);
  if (const auto it = j.find("comm_bytes"); it != j.end()) m.set_comm_bytes(AsInt(*it, 0));
  if (number("comm_s", &v)) m.set_comm_wait_seconds(v);
  if (number("checkpoint_s", &v)) m.set_checkpoint_seconds(v);
  if (const auto it = j.find("checkpoint_bytes"); it != j.end()) {
    m.set_checkpoint_bytes(AsInt(*it, 0));
  }
  if (const auto it = j.find("mem_bytes"); it != j.end() && it->is_object()) {
    for (const auto& [category, bytes] : it->items()) {
      if (static_cast<size_t>(m.memory_bytes_size()) >= kMaxMemoryCategories) break;
      if (!bytes.is_number()) continue;
      (*m.mutable_memory_bytes())[category] = AsInt(bytes, 0);
    }
  }
  if (const auto it = j.find("stages"); it != j.end() && it->is_array()) {
    for (const nlohmann::json& s : *it) {
      if (static_cast<size_t>(m.stages_size()) >= kMaxStages) break;
      if (!s.is_object()) continue;
      v1::StageMetrics& stage = *m.add_stages();
      const auto get = [&s](const char* key) {
        const auto f = s.find(key);
        return f == s.end() ? 0.0 : AsDouble(*f);
      };
      const auto get_int = [&s](const char* key) {
        const auto f = s.find(key);
        return f == s.end() ? int64_t{0} : AsInt(*f, 0);
      };
      stage.set_stage(static_cast<int32_t>(get_int("stage")));
      stage.set_step_seconds(get("step_s"));
      stage.set_compute_seconds(get("compute_s"));
      stage.set_bubble_seconds(get("bubble_s"));
      stage.set_schedule_seconds(get("schedule_s"));
      stage.set_bubble_fraction(get("bubble_fraction"));
      stage.set_p2p_bytes_sent(get_int("p2p_bytes_sent"));
      stage.set_memory_peak_bytes(get_int("mem_peak_bytes"));
      stage.set_activations_bytes(get_int("activations_bytes"));
    }
  }
  for (auto [key, field] : {std::make_pair("device_mem_bytes", &out.device_mem_bytes),
                            std::make_pair("device_mem_peak_bytes", &out.device_mem_peak_bytes)}) {
    const auto it = j.find(key);
    if (it == j.end()) continue;
    const int64_t bytes = AsInt(*it, -1);
    if (bytes >= 0) *field = bytes;
  }
  if (const auto it = j.find("nvme_bytes"); it != j.end()) {
    const int64_t bytes = AsInt(*it, -1);
    if (bytes >= 0) out.nvme_bytes = bytes;
  }
  if (number("swap_wait_s", &v) && v >= 0) out.swap_wait_seconds = v;
  out.checkpoint_failed = j.contains("checkpoint_error");
  if (const auto it = j.find("skipped"); it != j.end()) {
    int64_t total = skipped_;
    if (it->is_boolean()) {
      total = skipped_ + (it->get<bool>() ? 1 : 0);
    } else if (it->is_number()) {
      total = std::max<int64_t>(AsInt(*it, skipped_), 0);
    }
    out.skipped_increment = std::max<int64_t>(0, total - skipped_);
    skipped_ = total;
  }
  m.set_skipped_steps(skipped_);
  absl::Time when = read_time;
  if (const auto it = j.find("time"); it != j.end() && it->is_number()) {
    const double t = it->get<double>();
    if (std::isfinite(t) && t > 0 && t < 1e11) when = absl::FromUnixNanos(std::llround(t * 1e9));
  }
  *m.mutable_time() = ToTimestamp(when);
  return out;
}

}  // namespace dstrain::agent
