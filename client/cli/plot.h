// `dstrain plot`: a run's curves as a picture (docs/service.md, "dstrain plot").
//
//   std::vector<v1::StepMetrics> steps = ...;  // WatchJob's replay, or a --metrics-out file
//   DT_ASSIGN_OR_RETURN(auto names, ParsePlotMetrics("loss,val_loss,tokens_per_s"));
//   const PlotData data = CollectSeries(steps, names);
//   DT_RETURN_IF_ERROR(RenderPlot(data, "job gpt-a", "gpt-a.png"));
//
// The drawing is matplotlib's (Debian's python3-matplotlib, run as a child process with the
// Agg backend), not pixels of ours: PNG, SVG or PDF by the output's extension.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/common.pb.h"

namespace dstrain::cli {

// The metric names `--metrics` takes, in the order panels are drawn: loss, val_loss, lr,
// grad_norm, loss_scale, tokens_per_s, step_s, comm_wait_s, comm_bytes, checkpoint_s.
const std::vector<std::string>& PlotMetricNames();
// What `--metrics` defaults to.
inline constexpr const char* kDefaultPlotMetrics = "loss,val_loss,lr,grad_norm,tokens_per_s";

// "a,b,c" -> names, each one of PlotMetricNames(), no repeats. INVALID_ARGUMENT naming the flag
// and listing the valid names otherwise.
absl::StatusOr<std::vector<std::string>> ParsePlotMetrics(const std::string& csv);

// Metric name -> step -> value.
using PlotData = std::map<std::string, std::map<int64_t, double>>;

// The points of `names` from records in (attempt, step) order, as WatchJob replays them: a later
// attempt (a restart resuming from a checkpoint) replaces every point from its first step on,
// so the curves show the run that counts. val_loss only from records with one; checkpoint_s only
// from steps that saved. Non-finite values are kept (matplotlib leaves a gap).
PlotData CollectSeries(const std::vector<v1::StepMetrics>& records,
                       const std::vector<std::string>& names);

// Reads a `--metrics-out` JSONL file (the trainer's metrics lines) into records, with the worker
// agent's parser. NOT_FOUND when it cannot be opened, INVALID_ARGUMENT naming the line number
// for a line that is not a metrics line.
absl::StatusOr<std::vector<v1::StepMetrics>> ReadMetricsFile(const std::string& path);

// Draws one panel per metric (loss and val_loss share one) against the step into `out_path`
// (.png, .svg or .pdf). INVALID_ARGUMENT for another extension or data with no point at all;
// FAILED_PRECONDITION when the interpreter or matplotlib is missing (saying which package to
// install); INTERNAL with the interpreter's message when drawing fails. `python` is the
// interpreter to run (default: /usr/bin/python3, where Debian's matplotlib is).
absl::Status RenderPlot(const PlotData& data, const std::string& title, const std::string& out_path,
                        const std::string& python = "/usr/bin/python3");

}  // namespace dstrain::cli
