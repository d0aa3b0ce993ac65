#include "client/cli/plot.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "worker/agent/metrics_tail.h"

namespace dstrain::cli {
namespace {

// The drawing, run by the interpreter as `python -c SCRIPT DATA OUT FORMAT`. Exit status 3: no
// matplotlib.
constexpr const char* kScript = R"PY(
import json, sys
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:
    sys.stderr.write("%s\n" % e)
    sys.exit(3)
data_path, out_path, fmt = sys.argv[1:4]
d = json.load(open(data_path))
panels = d["panels"]
fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels) + 0.8), sharex=True,
                         squeeze=False)
for ax, panel in zip(axes[:, 0], panels):
    for s in panel["series"]:
        ys = [float("nan") if v is None else v for v in s["values"]]
        if s["name"] == "val_loss":
            ax.plot(s["steps"], ys, label=s["name"], marker="o", markersize=4, linewidth=1)
        else:
            ax.plot(s["steps"], ys, label=s["name"], linewidth=1.2)
    ax.set_ylabel(panel["label"])
    ax.grid(True, alpha=0.3)
    if len(panel["series"]) > 1:
        ax.legend(loc="best", fontsize=8)
axes[-1, 0].set_xlabel("step")
fig.suptitle(d["title"])
fig.tight_layout()
fig.savefig(out_path, format=fmt, dpi=110)
)PY";

// The y-axis label of a panel.
std::string Label(const std::string& name) {
  if (name == "loss") return "loss";
  if (name == "tokens_per_s") return "tokens/s";
  if (name == "step_s") return "step (s)";
  if (name == "comm_wait_s") return "comm wait (s)";
  if (name == "checkpoint_s") return "checkpoint (s)";
  if (name == "comm_bytes") return "comm bytes";
  if (name == "lr") return "learning rate";
  if (name == "grad_norm") return "grad norm";
  if (name == "loss_scale") return "loss scale";
  return name;
}

// The value of `name` in one record; false when the record has none.
bool ValueOf(const v1::StepMetrics& m, const std::string& name, double* v) {
  if (name == "loss")
    *v = m.loss();
  else if (name == "val_loss") {
    if (!m.has_val_loss()) return false;
    *v = m.val_loss();
  } else if (name == "lr")
    *v = m.lr();
  else if (name == "grad_norm")
    *v = m.grad_norm();
  else if (name == "loss_scale")
    *v = m.loss_scale();
  else if (name == "tokens_per_s")
    *v = m.tokens_per_second();
  else if (name == "step_s")
    *v = m.step_seconds();
  else if (name == "comm_wait_s")
    *v = m.comm_wait_seconds();
  else if (name == "comm_bytes")
    *v = static_cast<double>(m.comm_bytes());
  else if (name == "checkpoint_s") {
    if (!m.has_checkpoint_seconds()) return false;
    *v = m.checkpoint_seconds();
  } else {
    return false;
  }
  return true;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

const std::vector<std::string>& PlotMetricNames() {
  static const auto* names = new std::vector<std::string>{
      "loss",         "val_loss", "lr",          "grad_norm",  "loss_scale",
      "tokens_per_s", "step_s",   "comm_wait_s", "comm_bytes", "checkpoint_s"};
  return *names;
}

absl::StatusOr<std::vector<std::string>> ParsePlotMetrics(const std::string& csv) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  const auto& valid = PlotMetricNames();
  for (absl::string_view piece : absl::StrSplit(csv, ',')) {
    const std::string name(absl::StripAsciiWhitespace(piece));
    if (std::find(valid.begin(), valid.end(), name) == valid.end()) {
      return absl::InvalidArgumentError(absl::StrCat("--metrics: unknown metric '", name,
                                                     "'; one of ", absl::StrJoin(valid, ", ")));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("--metrics: '", name, "' given twice"));
    }
    out.push_back(name);
  }
  return out;
}

PlotData CollectSeries(const std::vector<v1::StepMetrics>& records,
                       const std::vector<std::string>& names) {
  PlotData data;
  for (const std::string& name : names) data[name];
  int32_t attempt = -1;
  for (const v1::StepMetrics& m : records) {
    if (m.attempt() != attempt) {
      // A later attempt re-runs steps from its checkpoint: its points replace the earlier ones.
      attempt = m.attempt();
      for (auto& [name, points] : data) points.erase(points.lower_bound(m.step()), points.end());
    }
    for (auto& [name, points] : data) {
      double v;
      if (ValueOf(m, name, &v)) points[m.step()] = v;
    }
  }
  return data;
}

absl::StatusOr<std::vector<v1::StepMetrics>> ReadMetricsFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  agent::StepMetricsParser parser(/*attempt=*/1);
  std::vector<v1::StepMetrics> out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<agent::ParsedStep> parsed = parser.Parse(line, absl::Now());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": ", parsed.status().message()));
    }
    out.push_back(std::move(parsed->metrics));
  }
  return out;
}

absl::Status RenderPlot(const PlotData& data, const std::string& title, const std::string& out_path,
                        const std::string& python) {
  const std::string ext = std::filesystem::path(out_path).extension().string();
  const std::string format = ext.empty() ? "" : absl::AsciiStrToLower(ext.substr(1));
  if (format != "png" && format != "svg" && format != "pdf") {
    return absl::InvalidArgumentError(
        absl::StrCat("--out: ", out_path, ": the file name must end in .png, .svg or .pdf"));
  }
  // Panels in PlotMetricNames() order; val_loss joins loss's panel when both are asked for.
  nlohmann::json panels = nlohmann::json::array();
  bool any = false;
  for (const std::string& name : PlotMetricNames()) {
    const auto it = data.find(name);
    if (it == data.end() || (name == "val_loss" && data.count("loss") > 0)) continue;
    std::vector<std::string> members = {name};
    if (name == "loss" && data.count("val_loss") > 0) members.push_back("val_loss");
    nlohmann::json panel = {{"label", Label(name)}, {"series", nlohmann::json::array()}};
    for (const std::string& member : members) {
      const auto series = data.find(member);
      if (series == data.end() || series->second.empty()) continue;
      nlohmann::json steps = nlohmann::json::array(), values = nlohmann::json::array();
      for (const auto& [step, value] : series->second) {
        steps.push_back(step);
        values.push_back(std::isfinite(value) ? nlohmann::json(value) : nlohmann::json());
      }
      panel["series"].push_back({{"name", member}, {"steps", steps}, {"values", values}});
    }
    if (panel["series"].empty()) continue;
    any = true;
    panels.push_back(std::move(panel));
  }
  if (!any) {
    return absl::InvalidArgumentError(
        "nothing to plot: the run has no points for the metrics asked for");
  }
  if (access(python.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("dstrain plot draws with matplotlib and needs ", python,
                     " (Debian packages python3 and python3-matplotlib): ", std::strerror(errno)));
  }

  std::string dir_template =
      absl::StrCat(std::filesystem::temp_directory_path().string(), "/dstrain-plot-XXXXXX");
  if (mkdtemp(dir_template.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot make a temporary directory: ", std::strerror(errno)));
  }
  const std::string dir = dir_template;
  const auto cleanup = [&dir] {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  };
  const std::string data_path = dir + "/data.json", err_path = dir + "/stderr";
  {
    std::ofstream out(data_path);
    out << nlohmann::json{{"title", title}, {"panels", panels}}.dump();
    if (!out) {
      cleanup();
      return absl::InternalError(absl::StrCat(data_path, ": cannot write"));
    }
  }
  // Drawn next to the output and renamed over it: a failure leaves no half-written picture.
  const std::string partial = out_path + ".partial";
  const pid_t pid = fork();
  if (pid < 0) {
    cleanup();
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (err >= 0) dup2(err, STDERR_FILENO);
    const int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, STDIN_FILENO);
      dup2(null, STDOUT_FILENO);
    }
    setenv("MPLCONFIGDIR", dir.c_str(), 1);  // matplotlib's cache, not the user's home
    const char* argv[] = {python.c_str(),  "-c",           kScript, data_path.c_str(),
                          partial.c_str(), format.c_str(), nullptr};
    execv(python.c_str(), const_cast<char* const*>(argv));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const std::string message(absl::StripTrailingAsciiWhitespace(ReadAll(err_path)));
  cleanup();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    if (std::rename(partial.c_str(), out_path.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      std::remove(partial.c_str());
      return absl::InternalError(absl::StrCat(out_path, ": ", why));
    }
    return absl::OkStatus();
  }
  std::remove(partial.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
    return absl::FailedPreconditionError(
        absl::StrCat("dstrain plot draws with matplotlib, which ", python,
                     " cannot import (Debian package python3-matplotlib): ", message));
  }
  return absl::InternalError(
      absl::StrCat("drawing ", out_path, " failed: ", message.empty() ? "no message" : message));
}

}  // namespace dstrain::cli
