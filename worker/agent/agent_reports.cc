// Agent: what the trainers say, relayed to the coordinator. Output lines and rank 0's metrics
// become ReportStatus requests (batched, one per step), a finished trainer its final report; the
// reporter thread sends them one at a time in order, retrying by common/retry's classes, and
// drops the oldest output-only ones when the queue is over max_queued_bytes.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/grpc/grpc_status.h"
#include "common/grpc/proto_time.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_internal.h"

namespace dstrain::agent {

using internal::BackoffFor;
using internal::Describe;
using internal::KeyName;
using internal::Log;
using internal::StateName;

namespace {

// Longest line quoted in a final report's message.
constexpr size_t kMaxQuotedLine = 512;
// How long the output of an exited trainer may still be read.
constexpr int kDrainMs = 200;

}  // namespace

v1::ReportStatusRequest Agent::NewReport(const Trainer& t) const {
  v1::ReportStatusRequest r;
  r.set_worker_id(options_.worker_id);
  r.set_job_id(t.assignment.job_id());
  r.set_attempt(t.assignment.attempt());
  r.set_rank(t.assignment.rank());
  r.set_state(t.state);
  return r;
}

void Agent::AddOutput(Trainer& t, const std::vector<std::string>& lines, absl::Time now) {
  if (lines.empty()) return;
  const google::protobuf::Timestamp time = ToTimestamp(now);
  for (const std::string& text : lines) {
    v1::LogLine& line = t.pending.emplace_back();
    line.set_rank(t.assignment.rank());
    *line.mutable_time() = time;
    line.set_text(text);
    t.last_lines.push_back(text.size() > kMaxQuotedLine ? text.substr(0, kMaxQuotedLine) : text);
    while (static_cast<int>(t.last_lines.size()) > options_.tail_lines) t.last_lines.pop_front();
  }
  if (t.state == v1::RANK_STATE_STARTING) {
    t.state = v1::RANK_STATE_RUNNING;
    t.transition_pending = true;
    SetTableState(t.key, t.assignment.slot(), t.state, &t.table_generation);
  }
}

void Agent::Flush(Trainer& t, absl::Time now) {
  t.last_flush = now;
  // Output first: a step's metrics line is written before the trainer prints the step.
  size_t sent = 0;
  while (sent < t.pending.size()) {
    const size_t n = std::min(t.pending.size() - sent,
                              static_cast<size_t>(std::max(1, options_.report_max_lines)));
    Report report;
    report.request = NewReport(t);
    for (size_t i = 0; i < n; ++i) *report.request.add_log_lines() = std::move(t.pending[sent + i]);
    report.droppable = !t.transition_pending;
    t.transition_pending = false;
    report.key = t.key;
    Enqueue(std::move(report));
    sent += n;
  }
  t.pending.clear();
  if (t.tail == nullptr) return;
  std::vector<std::string> lines;
  if (absl::Status s = t.tail->Poll(&lines); !s.ok() && !t.bad_metrics_logged) {
    Log(std::string(s.message()));
    t.bad_metrics_logged = true;
  }
  for (const std::string& line : lines) {
    auto parsed = t.parser->Parse(line, now);
    if (!parsed.ok()) {
      if (!t.bad_metrics_logged) Log(std::string(parsed.status().message()));
      t.bad_metrics_logged = true;
      continue;
    }
    if (t.state == v1::RANK_STATE_STARTING) {
      t.state = v1::RANK_STATE_RUNNING;
      t.transition_pending = true;
      SetTableState(t.key, t.assignment.slot(), t.state, &t.table_generation);
    }
    if (metrics_ != nullptr) {
      const TrainerLabels labels = {t.assignment.job_id(), t.assignment.rank()};
      metrics_->ObserveStep(labels, parsed->metrics, parsed->skipped_increment,
                            parsed->checkpoint_failed);
      metrics_->ObserveDeviceMemory(labels, parsed->device_mem_bytes,
                                    parsed->device_mem_peak_bytes);
      metrics_->ObserveOffload(labels, parsed->nvme_bytes, parsed->swap_wait_seconds);
    }
    Report report;
    report.request = NewReport(t);
    *report.request.mutable_metrics() = std::move(parsed->metrics);
    report.droppable = !t.transition_pending;
    t.transition_pending = false;
    report.key = t.key;
    Enqueue(std::move(report));
  }
}

void Agent::Finish(Trainer& t, absl::Time now) {
  const ExitInfo exit = *t.process->PollExit();
  std::vector<std::string> lines;
  t.process->DrainOutput(&lines, kDrainMs);
  AddOutput(t, lines, now);
  Flush(t, now);

  v1::RankState final_state;
  std::string message;
  if (t.stop_requested) {
    final_state = v1::RANK_STATE_KILLED;
    message = absl::StrCat("stopped by the worker agent: ", t.stop_reason, "; ", exit.Describe());
  } else if (exit.success()) {
    final_state = v1::RANK_STATE_SUCCEEDED;
    message = exit.Describe();
  } else {
    final_state = v1::RANK_STATE_FAILED;
    message = exit.Describe();
  }
  if (final_state != v1::RANK_STATE_SUCCEEDED && !t.last_lines.empty()) {
    absl::StrAppend(&message, "; last output:\n", absl::StrJoin(t.last_lines, "\n"));
  }
  t.state = final_state;
  Report report;
  report.request = NewReport(t);
  report.request.set_exit_code(exit.signal == 0 ? exit.exit_code : 0);
  report.request.set_signal(exit.signal);
  report.request.set_message(message);
  report.final = true;
  report.key = t.key;
  SetTableState(t.key, t.assignment.slot(), final_state, &report.table_generation);
  // Counted before the final report is queued: whoever sees the report sees the exit in /metrics.
  if (metrics_ != nullptr) {
    metrics_->TrainerExited(final_state);
    if (t.tail != nullptr) metrics_->TrainerEnded({t.assignment.job_id(), t.assignment.rank()});
  }
  Enqueue(std::move(report));

  Log(absl::StrCat(KeyName(t.assignment.job_id(), t.assignment.attempt(), t.assignment.rank()), " ",
                   StateName(final_state), ": ", exit.Describe()));
  slot_owner_[static_cast<size_t>(t.assignment.slot())] = nullptr;
  RememberFinished(t.key);
}

// ---------------------------------------------------------------------------------------------
// Reporter.

void Agent::Enqueue(Report report) {
  report.bytes = report.request.ByteSizeLong();
  absl::MutexLock lock(&report_mu_);
  queued_bytes_ += report.bytes;
  reports_.push_back(std::move(report));
  if (queued_bytes_ > options_.max_queued_bytes) EvictLocked();
  if (metrics_ != nullptr) metrics_->SetPendingReports(static_cast<int64_t>(reports_.size()));
}

void Agent::EvictLocked() {
  int64_t dropped_lines = 0;
  // Output-only reports first, then metrics-only ones; oldest first.
  for (bool with_metrics : {false, true}) {
    for (auto it = reports_.begin();
         it != reports_.end() && queued_bytes_ > options_.max_queued_bytes;) {
      if (it->droppable && it->request.has_metrics() == with_metrics) {
        dropped_lines += it->request.log_lines_size();
        queued_bytes_ -= it->bytes;
        it = reports_.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (dropped_lines > 0 && metrics_ != nullptr) metrics_->DroppedLogLines(dropped_lines);
}

void Agent::ForgetFinal(const Report& report) {
  if (!report.final) return;
  absl::MutexLock lock(&mu_);
  const auto it = table_.find(report.key);
  if (it != table_.end() && it->second.generation == report.table_generation) table_.erase(it);
}

void Agent::ReportLoop() {
  retry::Backoff backoff(BackoffFor(options_));
  for (;;) {
    Report report;
    absl::Time deadline;
    {
      absl::MutexLock lock(&report_mu_);
      report_mu_.Await(absl::Condition(this, &Agent::ReporterHasWork));
      if (reports_.empty()) return;  // stopping, all delivered
      if (reporter_stop_ && absl::Now() >= flush_deadline_) {
        Log(absl::StrCat(reports_.size(), " status report(s) not delivered before shutdown"));
        return;
      }
      report = std::move(reports_.front());
      reports_.pop_front();
      queued_bytes_ -= report.bytes;
      deadline = std::min(absl::Now() + options_.rpc_timeout, flush_deadline_);
    }
    report.request.set_session_token(SessionToken());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    v1::ReportStatusResponse response;
    const grpc::Status status = stub_->ReportStatus(&context, report.request, &response);
    if (status.ok()) {
      ForgetFinal(report);
      backoff.Reset();
      absl::MutexLock lock(&report_mu_);
      if (metrics_ != nullptr) metrics_->SetPendingReports(static_cast<int64_t>(reports_.size()));
      continue;
    }
    CoordinatorError("ReportStatus");
    ++report.attempts;
    const retry::ErrorClass error = retry::Classify(FromGrpcCode(status.error_code()));
    if (error == retry::ErrorClass::kPermanent ||
        (error == retry::ErrorClass::kStateful && report.attempts >= kMaxReportAttempts)) {
      Log(absl::StrCat(
          "dropping a ", StateName(report.request.state()), " report for ",
          KeyName(report.request.job_id(), report.request.attempt(), report.request.rank()), ": ",
          Describe(status)));
      ForgetFinal(report);
      continue;
    }
    const absl::Duration wait = backoff.Next();
    absl::Duration sleep = absl::ZeroDuration();
    {
      absl::MutexLock lock(&report_mu_);
      queued_bytes_ += report.bytes;
      reports_.push_front(std::move(report));
      if (!reporter_stop_) {
        // Wakes early when shutdown begins, to keep within the flush deadline.
        report_mu_.AwaitWithTimeout(absl::Condition(&reporter_stop_), wait);
      } else {
        sleep = std::min(wait, flush_deadline_ - absl::Now());
      }
    }
    if (sleep > absl::ZeroDuration()) absl::SleepFor(sleep);
  }
}

}  // namespace dstrain::agent
